'use strict';
// The nmsg session extension (wire format v1, nmsg::protocol's "Sessions"),
// for the JavaScript peer: a handshake, implicit numbering of data messages,
// cumulative acks, a replay buffer, resume after a broken connection, and
// heartbeats. Opt-in: a peer without it is exactly the plain peer of nmsg.js.
//
//   Session        one end of a session, attached to a Peer (peer.session):
//                  numbers what the peer writes, keeps it until acknowledged,
//                  counts what it receives, acknowledges, pings; the Peer
//                  outlives its connections.
//   SessionClient  connects, says hello, waits for the welcome, resumes after
//                  every break (at once; the backoff restarts after each
//                  completed handshake).
//   SessionServer  takes a server's new sockets: a hello makes a session
//                  connection (new, resumed, or expired), any other first
//                  message a plain one, served exactly as before.
//
// Extension frames are maps with the kind under `x` and no `i`, one message
// each, never in a bulk:
//   {x: 'hello', v: 1, s?, n?}   client -> server, first message of a connection
//   {x: 'welcome', v: 1, s, n, z} server -> client, z: new | resumed | expired
//   {x: 'ack', n}                 both: n data messages of the session received
//   {x: 'ping', n} / {x: 'pong', n}  heartbeat; n is an ack too
//
// Authentication (nmsg::protocol's "Authentication"): the hello carries the
// client's credentials under `k` (here a token string). A client without
// sessions says {x: 'hello', v: 1, p: 1, k} and the server answers
// {x: 'welcome', v: 1} (no session); a rejected hello is answered
// {x: 'deny', m: reason} and closed. `admit` is the server's side, `authHello`
// a plain client's.

const crypto = require('node:crypto');
const net = require('node:net');
const { FrameReader, lengthPrefix } = require('./nmsg');

const VERSION = 1;

/** Every bound and delay of a session, in milliseconds, bytes and frames. */
const SESSION_DEFAULTS = {
  helloTimeoutMs: 5000, // client: the welcome must come within this
  helloWaitMs: 1000, // server: a new connection is plain if no first message came within this (as the Rust server's hello_wait)
  ackDelayMs: 100, // an ack goes alone this long after an unacknowledged data message
  ackCount: 256, // ... or at once after this many
  heartbeatIntervalMs: 25000, // ping after this long without sending (or receiving)
  heartbeatTimeoutMs: 20000, // nothing received this long after a ping: the connection is dead
  replayFrames: 10000, // the replay buffer's bounds
  replayBytes: 64 * 1024 * 1024,
  replayAgeMs: 120000,
  windowMs: 120000, // server: how long a session waits for its client
  backoffInitialMs: 5, // client: the first retry after a failed connect or handshake
  backoffMaxMs: 1000,
};

/** A session tally's fields, added to a peer's report line. */
function sessionReport(tally) {
  return {
    sessions_new: tally.sessionsNew || 0,
    sessions_resumed: tally.sessionsResumed || 0,
    sessions_expired: tally.sessionsExpired || 0,
    sessions_lost: tally.sessionsLost || 0,
    lost_callbacks: tally.lostCallbacks || 0,
    lost_responses: tally.lostResponses || 0,
    resent: tally.resent || 0,
    dropped_on_loss: tally.droppedOnLoss || 0,
    replay_overflow: tally.replayOverflow || 0,
    session_duplicates: tally.sessionDuplicates || 0,
    heartbeat_timeouts: tally.heartbeatTimeouts || 0,
  };
}

function isPlainMap(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** An extension frame: a map with a string `x` and no `i`. */
function isExtension(message) {
  return isPlainMap(message) && typeof message.x === 'string' && message.i === undefined;
}

function isCount(v) {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function newSessionId() {
  return crypto.randomBytes(16).toString('hex');
}

class Session {
  /**
   * `role`: 'client' or 'server'; `options`: SESSION_DEFAULTS overridden.
   * Sets itself as `peer.session`.
   */
  constructor(peer, role, options = {}) {
    this.peer = peer;
    this.role = role;
    this.opts = { ...SESSION_DEFAULTS, ...options };
    this.id = null;
    this.sent = 0; // data messages written (numbered) in this session
    this.replay = []; // [{ n, bytes, plain, at }] not yet acknowledged, oldest first
    this.replayHead = 0; // replay[replayHead] is the oldest kept
    this.replayBytes = 0;
    this.droppedUpTo = 0; // every message numbered up to this is gone from the buffer
    this.received = 0; // data messages received and handed on
    this.ackedSent = 0; // the last n this side acknowledged
    this.nextIncoming = 1; // the number the next data message on this connection has
    this.ackTimer = null;
    this.socket = null; // the connection, once its handshake is done
    this.lastSentAt = 0;
    this.lastRecvAt = 0;
    this.pingSentAt = null;
    this.trafficAtPing = 0;
    this.traffic = 0; // chunks received, to tell whether anything came since a ping
    this.hbTimer = null;
    this.ended = false;
    this.drainWaiters = [];
    this.breakListeners = [];
    this.lossListeners = [];
    peer.session = this;
  }

  // --- the replay buffer -----------------------------------------------------

  get kept() {
    return this.replay.length - this.replayHead;
  }

  /** The peer wrote data message `payload`: number it, keep it, write it if connected. */
  writeData(payload, plain) {
    const bytes = Buffer.concat([lengthPrefix(payload.length), payload]);
    this.sent += 1;
    this.replay.push({ n: this.sent, bytes, plain, at: Date.now() });
    this.replayBytes += bytes.length;
    this._bound();
    if (this.socket) this._write(bytes);
  }

  /**
   * Drops the oldest kept messages beyond the bounds. Dropped unacknowledged,
   * they are counted: a resume that needs them is impossible (expired).
   */
  _bound() {
    const { replayFrames, replayBytes, replayAgeMs } = this.opts;
    const oldestAllowed = Date.now() - replayAgeMs;
    while (this.kept > 0) {
      const oldest = this.replay[this.replayHead];
      if (this.kept <= replayFrames && this.replayBytes <= replayBytes && oldest.at >= oldestAllowed) break;
      this._dropOldest();
      this.peer.tally.replayOverflow = (this.peer.tally.replayOverflow || 0) + 1;
    }
  }

  _dropOldest() {
    const oldest = this.replay[this.replayHead];
    this.replay[this.replayHead] = undefined;
    this.replayHead += 1;
    this.replayBytes -= oldest.bytes.length;
    this.droppedUpTo = oldest.n;
    if (this.replayHead > 1024 && this.replayHead * 2 > this.replay.length) {
      this.replay = this.replay.slice(this.replayHead);
      this.replayHead = 0;
    }
  }

  /** The other side has received `n` of our data messages. */
  _acknowledged(n, what) {
    if (!isCount(n) || n > this.sent) {
      this.peer.tally.protocolErrors += 1;
      this.peer.log(`${this.peer.label}: ${what} acknowledges ${JSON.stringify(n)} data messages, but ${this.sent} were sent; closing the connection`);
      this.dropSocket('bad ack');
      return;
    }
    while (this.kept > 0 && this.replay[this.replayHead].n <= n) this._dropOldest();
    if (this.drainWaiters.length > 0 && this.drained()) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const fn of waiters) fn();
    }
  }

  /** Whether the replay buffer is at most half full (room to write more). */
  drained() {
    return this.kept * 2 <= this.opts.replayFrames && this.replayBytes * 2 <= this.opts.replayBytes;
  }

  /** Resolves once the replay buffer is at most half full: backpressure for a writer. */
  whenDrained() {
    if (this.drained() || this.ended) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  // --- writing ---------------------------------------------------------------

  _encodeExtension(frame) {
    const payload = this.peer.codec.encode(frame);
    return Buffer.concat([lengthPrefix(payload.length), payload]);
  }

  /** Writes `bytes` (whole messages), an ack for what came unacknowledged riding in front. */
  _write(bytes) {
    let out = bytes;
    if (this.received > this.ackedSent) {
      out = Buffer.concat([this._ackBytes('ack'), bytes]);
    }
    this.lastSentAt = Date.now();
    this.socket.write(out);
  }

  _ackBytes(kind) {
    this.ackedSent = this.received;
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    return this._encodeExtension({ x: kind, n: this.received });
  }

  _sendAlone(kind) {
    if (!this.socket) return;
    this.lastSentAt = Date.now();
    this.socket.write(this._ackBytes(kind));
  }

  // --- reading ---------------------------------------------------------------

  /** Bytes arrived on the connection. */
  onTraffic() {
    this.lastRecvAt = Date.now();
    this.traffic += 1;
  }

  /**
   * A decoded message arrived: true if it is a data message for the router
   * (counted), false if it was an extension frame or a duplicate.
   */
  onMessage(message) {
    if (isExtension(message)) {
      this._onExtension(message);
      return false;
    }
    const number = this.nextIncoming;
    this.nextIncoming += 1;
    if (number <= this.received) {
      this.peer.tally.sessionDuplicates = (this.peer.tally.sessionDuplicates || 0) + 1;
      return false;
    }
    this.received += 1;
    const unacked = this.received - this.ackedSent;
    if (unacked >= this.opts.ackCount) this._sendAlone('ack');
    else if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        if (this.received > this.ackedSent) this._sendAlone('ack');
      }, this.opts.ackDelayMs);
    }
    return true;
  }

  _onExtension(frame) {
    switch (frame.x) {
      case 'ack':
        this._acknowledged(frame.n, 'an ack');
        break;
      case 'ping':
        this._acknowledged(frame.n, 'a ping');
        this._sendAlone('pong');
        break;
      case 'pong':
        this._acknowledged(frame.n, 'a pong');
        break;
      case 'hello':
      case 'welcome':
        this.peer.tally.protocolErrors += 1;
        this.peer.log(`${this.peer.label}: a ${frame.x} in the middle of a session connection; closing it`);
        this.dropSocket('handshake out of place');
        break;
      default:
        break; // unknown kinds: room to grow
    }
  }

  // --- connections -------------------------------------------------------------

  /**
   * Takes a connection whose handshake is done: `theirN` is what the other
   * side has received of ours, `reader` what was read past the handshake.
   * Resends what the other side has not, then goes on.
   */
  attach(socket, reader, theirN) {
    this._acknowledged(theirN, 'the handshake');
    this.nextIncoming = this.received + 1;
    this.ackedSent = this.received; // the handshake said so
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    this.socket = socket;
    const now = Date.now();
    this.lastSentAt = now;
    this.lastRecvAt = now;
    this.pingSentAt = null;
    // The resend, as one write.
    const resend = [];
    for (let k = this.replayHead; k < this.replay.length; k++) {
      if (this.replay[k].n > theirN) resend.push(this.replay[k].bytes);
    }
    if (resend.length > 0) socket.write(Buffer.concat(resend));
    this._armHeartbeat(this.opts.heartbeatIntervalMs);
    this.peer._attach(socket, reader);
  }

  /** Whether the other side's count `n` lets this side resume. */
  canResume(n) {
    return isCount(n) && n >= this.droppedUpTo && n <= this.sent;
  }

  /** Closes the current connection; a session resumes on another. */
  dropSocket(why) {
    const socket = this.socket;
    if (!socket) return;
    this.peer.log(`${this.peer.label}: closing the session's connection: ${why}`);
    socket.destroy();
    this.onSocketClose(socket);
  }

  /** The current connection closed (or was dropped). */
  onSocketClose(socket) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.peer.socket = null;
    clearTimeout(this.hbTimer);
    this.hbTimer = null;
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    const listeners = this.breakListeners.slice();
    for (const fn of listeners) fn();
  }

  /** Calls `fn` at each break of a connection. */
  onBreak(fn) {
    this.breakListeners.push(fn);
  }

  /** Calls `fn({ callbacks, resent, dropped })` when the session is lost (resume impossible). */
  onLost(fn) {
    this.lossListeners.push(fn);
  }

  /**
   * The session could not be resumed: it starts anew as `newId`. Our
   * callbacks waiting for an answer are void (counted); held callbacks of the
   * other side are void (invoking one sends nothing, counted); unacknowledged
   * plain events are sent again on the new session (at least once: counted
   * as resent), everything else unacknowledged is dropped (counted).
   */
  lose(newId) {
    const peer = this.peer;
    const tally = peer.tally;
    tally.sessionsLost = (tally.sessionsLost || 0) + 1;
    let callbacks = 0;
    for (const { fns, timer } of peer.pending.values()) {
      callbacks += fns.size;
      clearTimeout(timer);
    }
    peer.pending.clear();
    peer.answered.clear();
    peer.epoch += 1;
    tally.lostCallbacks = (tally.lostCallbacks || 0) + callbacks;
    const again = [];
    let dropped = 0;
    for (let k = this.replayHead; k < this.replay.length; k++) {
      const entry = this.replay[k];
      again.push(...entry.plain);
      // A message holding anything but plain events loses that part.
      if (entry.plain.length === 0) dropped += 1;
    }
    tally.droppedOnLoss = (tally.droppedOnLoss || 0) + dropped;
    tally.resent = (tally.resent || 0) + again.length;
    this.id = newId;
    this.sent = 0;
    this.replay = [];
    this.replayHead = 0;
    this.replayBytes = 0;
    this.droppedUpTo = 0;
    this.received = 0;
    this.ackedSent = 0;
    this.nextIncoming = 1;
    for (const payload of again) this.writeData(payload, [payload]);
    peer.log(`${peer.label}: session lost: ${callbacks} callbacks void, ${again.length} plain events sent again, ${dropped} messages dropped`);
    for (const fn of this.lossListeners.slice()) fn({ callbacks, resent: again.length, dropped });
  }

  /** Ends the session for good (the peer closes). */
  end() {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.hbTimer);
    clearTimeout(this.ackTimer);
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const fn of waiters) fn();
  }

  // --- heartbeat -----------------------------------------------------------------

  _armHeartbeat(ms) {
    clearTimeout(this.hbTimer);
    this.hbTimer = setTimeout(() => this._heartbeat(), Math.max(1, ms));
    this.hbTimer.unref();
  }

  /**
   * Pings after heartbeatIntervalMs without sending anything, or without
   * receiving anything (a side that writes into a dead connection would
   * otherwise never ask); with nothing received heartbeatTimeoutMs after a
   * ping, closes the connection (a client then resumes).
   */
  _heartbeat() {
    this.hbTimer = null;
    if (!this.socket) return;
    const { heartbeatIntervalMs: interval, heartbeatTimeoutMs: timeout } = this.opts;
    const now = Date.now();
    if (this.pingSentAt !== null) {
      if (this.traffic > this.trafficAtPing) this.pingSentAt = null;
      else if (now - this.pingSentAt >= timeout) {
        this.peer.tally.heartbeatTimeouts = (this.peer.tally.heartbeatTimeouts || 0) + 1;
        this.dropSocket(`nothing received within ${timeout} ms of a ping`);
        return;
      } else {
        this._armHeartbeat(this.pingSentAt + timeout - now);
        return;
      }
    }
    const due = Math.min(this.lastSentAt, this.lastRecvAt) + interval;
    if (now >= due) {
      this._sendAlone('ping');
      this.pingSentAt = Date.now();
      this.trafficAtPing = this.traffic;
      this._armHeartbeat(timeout);
    } else this._armHeartbeat(due - now);
  }
}

/** The default bound on a connection's authentication (as the Rust side's auth_timeout). */
const AUTH_TIMEOUT_MS = 5000;

/**
 * A server's authentication of a new connection: its first message must be
 * a hello whose `k` is `token`, within `timeoutMs`. Resolves to
 * { hello, reader } when admitted; to null when refused (a deny written to a
 * hello, then the socket closed; the reason logged and counted as
 * tally.authRejected).
 */
async function admit(socket, { codec, maxMessageSize, token, timeoutMs = AUTH_TIMEOUT_MS, log, tally, label }) {
  const refuse = (reason, deny) => {
    tally.authRejected = (tally.authRejected || 0) + 1;
    log(`${label}: authentication refused: ${reason}`);
    if (deny) {
      const payload = codec.encode({ x: 'deny', m: reason });
      socket.end(Buffer.concat([lengthPrefix(payload.length), payload]));
    } else socket.destroy();
    return null;
  };
  let first;
  try {
    first = await readFirstMessage(socket, codec, maxMessageSize, timeoutMs);
  } catch (err) {
    if (err.timeout) return refuse(`no hello with credentials within ${timeoutMs} ms, and this server requires authentication`, false);
    if (!socket.destroyed) socket.destroy();
    return null;
  }
  const hello = first.message;
  if (!isExtension(hello) || hello.x !== 'hello') {
    return refuse('its first message was not a hello with credentials (a client without authentication), and this server requires authentication', false);
  }
  if (hello.k === undefined || hello.k === null) return refuse('the hello has no credentials, and this server requires authentication (give the client credentials)', true);
  if (hello.k !== token) return refuse('wrong token', true);
  return { hello, reader: first.reader };
}

/** Writes the welcome without a session that admits a plain connection. */
function welcomePlain(socket, codec) {
  const payload = codec.encode({ x: 'welcome', v: VERSION });
  socket.write(Buffer.concat([lengthPrefix(payload.length), payload]));
}

/**
 * A plain client's authentication on a connected socket: says hello with
 * `token`, reads the answer. Resolves to the reader (what followed the
 * welcome stays in it); rejects with err.denied = reason when denied.
 */
async function authHello(socket, codec, maxMessageSize, token, timeoutMs = AUTH_TIMEOUT_MS) {
  const payload = codec.encode({ x: 'hello', v: VERSION, p: 1, k: token });
  socket.write(Buffer.concat([lengthPrefix(payload.length), payload]));
  let first;
  try {
    first = await readFirstMessage(socket, codec, maxMessageSize, timeoutMs);
  } catch (err) {
    if (err.timeout) throw new Error(`the server did not answer the authentication hello within ${timeoutMs} ms: it does not ask for authentication`);
    throw err;
  }
  const w = first.message;
  if (isExtension(w) && w.x === 'deny') throw Object.assign(new Error(`the server rejected the authentication: ${w.m}`), { denied: String(w.m) });
  if (!isExtension(w) || w.x !== 'welcome') throw new Error(`the server answered the authentication hello with ${JSON.stringify(w).slice(0, 100)}`);
  return first.reader;
}

/** Reads a connection's handshake message: resolves to { message, reader } or rejects. */
function readFirstMessage(socket, codec, maxMessageSize, timeoutMs) {
  return new Promise((resolve, reject) => {
    const reader = new FrameReader(maxMessageSize);
    let timer = null;
    let settled = false;
    const done = (err, value) => {
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk) => {
      let payloads;
      try {
        payloads = reader.push(chunk);
      } catch (err) {
        done(err);
        return;
      }
      if (payloads.length === 0) return;
      // The first payload is the handshake; what follows stays in the reader.
      const rest = payloads.slice(1);
      if (rest.length > 0) {
        const tail = Buffer.concat(rest.map((p) => Buffer.concat([lengthPrefix(p.length), p])));
        reader.chunks.unshift(tail);
        reader.buffered += tail.length;
      }
      let message;
      try {
        message = codec.decode(payloads[0]);
      } catch (err) {
        done(err);
        return;
      }
      done(null, { message, payload: payloads[0], reader });
    };
    const onClose = () => done(new Error('the connection closed before the handshake'));
    socket.on('data', onData);
    socket.on('close', onClose);
    if (timeoutMs !== undefined) {
      // A busy event loop runs its due timers before it reads what came
      // meanwhile: the wait ends only after one more turn of reading, and
      // not while a message is half there.
      const expire = () => {
        timer = null;
        setImmediate(() => {
          if (settled) return;
          if (reader.buffered > 0) timer = setTimeout(expire, timeoutMs);
          else done(Object.assign(new Error('timeout'), { timeout: true, reader }));
        });
      };
      timer = setTimeout(expire, timeoutMs);
    }
  });
}

/**
 * A session client: owns `peer` (created without a socket) and keeps it
 * connected to host:port. `start()` resolves once the first handshake is done.
 */
class SessionClient {
  constructor(peer, { host, port, ...options }) {
    this.peer = peer;
    this.host = host;
    this.port = port;
    this.session = new Session(peer, 'client', options);
    this.backoff = this.session.opts.backoffInitialMs;
    this.stopped = false;
    this.connects = 0;
    this.session.onBreak(() => this._reconnect());
    this.firstWelcome = null;
  }

  start() {
    return new Promise((resolve) => {
      this.firstWelcome = resolve;
      this._connect();
    });
  }

  stop() {
    this.stopped = true;
    this.peer.close();
  }

  _reconnect() {
    if (this.stopped || this.peer.closed) return;
    this._connect(); // at once after a break; the backoff is for failures
  }

  _retry(why) {
    if (this.stopped || this.peer.closed) return;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.session.opts.backoffMaxMs);
    this.peer.log(`${this.peer.label}: ${why}; retrying in ${delay} ms`);
    setTimeout(() => this._connect(), delay);
  }

  async _connect() {
    if (this.stopped || this.peer.closed) return;
    this.connects += 1;
    const session = this.session;
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    socket.on('error', () => {}); // reported as a close
    const hello = { x: 'hello', v: VERSION };
    if (session.id !== null) {
      hello.s = session.id;
      hello.n = session.received;
    }
    if (session.opts.token !== undefined) hello.k = session.opts.token;
    socket.write(session._encodeExtension(hello));
    let first;
    try {
      first = await readFirstMessage(socket, this.peer.codec, this.peer.maxMessageSize, session.opts.helloTimeoutMs);
    } catch (err) {
      socket.destroy();
      if (err.timeout) {
        this._retry(`the server did not answer the session hello within ${session.opts.helloTimeoutMs} ms: it does not support sessions (start it with sessions on)`);
      } else this._retry(`session handshake failed: ${err.message}`);
      return;
    }
    const w = first.message;
    if (isExtension(w) && w.x === 'deny') {
      socket.destroy();
      if (this.onDenied) this.onDenied(String(w.m));
      else this._retry(`the server rejected the authentication: ${w.m}`);
      return;
    }
    if (!isExtension(w) || w.x !== 'welcome' || typeof w.s !== 'string' || !isCount(w.n)) {
      socket.destroy();
      this.peer.tally.protocolErrors += 1;
      this._retry(`the server answered the session hello with something other than a welcome (${JSON.stringify(w).slice(0, 100)}): it does not support sessions`);
      return;
    }
    if (this.stopped || this.peer.closed) {
      socket.destroy();
      return;
    }
    this.backoff = session.opts.backoffInitialMs; // a completed handshake
    this.peer.log(`${this.peer.label}: hello n=${hello.n ?? 0}, welcome ${w.z} n=${w.n} (sent ${session.sent}, kept from ${session.droppedUpTo + 1})`);
    const tally = this.peer.tally;
    let theirN = w.n;
    if (session.id === null) {
      tally.sessionsNew = (tally.sessionsNew || 0) + 1;
      session.id = w.s;
    } else if (w.z === 'resumed' && w.s === session.id && session.canResume(w.n)) {
      tally.sessionsResumed = (tally.sessionsResumed || 0) + 1;
    } else {
      // Expired on the server, or counts that cannot resume: a new session.
      tally.sessionsExpired = (tally.sessionsExpired || 0) + 1;
      session.lose(w.s);
      theirN = 0;
    }
    session.attach(socket, first.reader, theirN);
    if (this.firstWelcome) {
      const resolve = this.firstWelcome;
      this.firstWelcome = null;
      resolve();
    }
  }
}

/**
 * A server's sessions: `accept(socket)` for each new connection.
 * `makePeer(socket | null)` builds a Peer (handlers installed) for a plain
 * connection (socket given) or a new session (null); `onPlain(peer)` and
 * `onSession(peer, kind)` tell the server about them.
 */
class SessionServer {
  constructor({ codec, maxMessageSize, makePeer, log, tally, ...options }) {
    this.codec = codec;
    this.maxMessageSize = maxMessageSize;
    this.makePeer = makePeer;
    this.log = log;
    this.tally = tally;
    this.opts = { ...SESSION_DEFAULTS, ...options };
    this.sessions = new Map(); // id -> { peer, expiry, order }
    this.accepted = 0;
  }

  async accept(socket, label) {
    // The connection's place in the order of acceptance (taken before any
    // wait): a session resumes only on a connection newer than its last.
    const order = ++this.accepted;
    if (this.opts.token !== undefined) {
      const admitted = await admit(socket, {
        codec: this.codec,
        maxMessageSize: this.maxMessageSize,
        token: this.opts.token,
        timeoutMs: this.opts.authTimeoutMs,
        log: this.log,
        tally: this.tally,
        label,
      });
      if (!admitted) return null;
      if (admitted.hello.p) {
        welcomePlain(socket, this.codec);
        return this._plain(socket, admitted.reader, null, label);
      }
      return this._hello(socket, admitted.reader, admitted.hello, label, order);
    }
    let first;
    try {
      first = await readFirstMessage(socket, this.codec, this.maxMessageSize, this.opts.helloWaitMs);
    } catch (err) {
      // No message within helloWaitMs: a plain client that listens first
      // (what it sent so far stays in the reader).
      if (err.timeout) return this._plain(socket, err.reader, null, label);
      if (!socket.destroyed) {
        // Not even a frame: what a plain peer would have done.
        this.tally.protocolErrors += 1;
        this.log(`${label}: framing error before the first message, closing connection: ${err.message}`);
        socket.destroy();
      }
      return null;
    }
    if (!isExtension(first.message) || first.message.x !== 'hello') {
      return this._plain(socket, first.reader, first.payload, label);
    }
    return this._hello(socket, first.reader, first.message, label, order);
  }

  _plain(socket, reader, payload, label) {
    if (payload) {
      reader.chunks.unshift(Buffer.concat([lengthPrefix(payload.length), payload]));
      reader.buffered += 4 + payload.length;
    }
    const peer = this.makePeer(null, label);
    peer._attach(socket, reader);
    return { peer, kind: 'plain' };
  }

  _hello(socket, reader, hello, label, order) {
    const tally = this.tally;
    let kind;
    let entry = typeof hello.s === 'string' ? this.sessions.get(hello.s) : undefined;
    const theirN = isCount(hello.n) ? hello.n : 0;
    if (entry && order < entry.order) {
      // A connection the client gave up on, whose hello was read after
      // that of a newer one: stale, dropped (resumed, it would take the
      // session from the live connection, with an old count).
      this.log(`${label}: session ${hello.s}: a stale connection's hello (n=${theirN}), read after a newer one's: dropped`);
      socket.destroy();
      return null;
    }
    if (entry && !entry.peer.session.canResume(theirN)) {
      this.log(`${label}: session ${hello.s} cannot resume from ${theirN} (kept ${entry.peer.session.droppedUpTo}..${entry.peer.session.sent}): expired`);
      this._expire(hello.s);
      entry = undefined;
    }
    if (entry) {
      kind = 'resumed';
      clearTimeout(entry.expiry);
      entry.expiry = null;
      const session = entry.peer.session;
      if (session.socket) session.dropSocket('the client resumed on another connection');
      tally.sessionsResumed = (tally.sessionsResumed || 0) + 1;
    } else {
      kind = typeof hello.s === 'string' ? 'expired' : 'new';
      if (kind === 'new') tally.sessionsNew = (tally.sessionsNew || 0) + 1;
      else tally.sessionsExpired = (tally.sessionsExpired || 0) + 1;
      const peer = this.makePeer(null, label);
      const session = new Session(peer, 'server', this.opts);
      session.id = newSessionId();
      entry = { peer, expiry: null };
      this.sessions.set(session.id, entry);
      session.onBreak(() => {
        if (entry.peer.closed) return;
        entry.expiry = setTimeout(() => this._expire(session.id), this.opts.windowMs);
        entry.expiry.unref();
      });
    }
    const session = entry.peer.session;
    entry.order = order;
    entry.peer.label = label;
    socket.write(session._encodeExtension({ x: 'welcome', v: VERSION, s: session.id, n: session.received, z: kind }));
    session.attach(socket, reader, kind === 'resumed' ? theirN : 0);
    this.log(`${label}: session ${session.id} ${kind}`);
    return { peer: entry.peer, kind };
  }

  _expire(id) {
    const entry = this.sessions.get(id);
    if (!entry) return;
    this.sessions.delete(id);
    clearTimeout(entry.expiry);
    this.log(`session ${id} expired`);
    entry.peer.close();
  }

  /** Ends every session (the server stops). */
  closeAll() {
    for (const id of [...this.sessions.keys()]) this._expire(id);
  }
}

module.exports = {
  AUTH_TIMEOUT_MS,
  admit,
  authHello,
  welcomePlain,
  Session,
  SessionClient,
  SessionServer,
  SESSION_DEFAULTS,
  isExtension,
  sessionReport,
};
