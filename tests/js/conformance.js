#!/usr/bin/env node
'use strict';
// nmsg conformance peer in JavaScript: serves and exercises the conformance
// events (echo, add, ping, pick-hand, countdown, multi, notify, stats,
// integers, echo-text), like examples/conformance.rs in Rust.
//
//   node conformance.js serve   --addr HOST:PORT [--codec msgpack|json] [--buffered] [--until-eof]
//                               [--library NAME] [--dialect later|nmsg-tcp|2016] [--echo-bug]
//   node conformance.js connect --addr HOST:PORT [--codec msgpack|json] [--buffered]
//                               [--library NAME] [--dialect later|nmsg-tcp|2016] [--peer-echoes]
//
// Over TLS (Node's `tls` module), as the Rust peer: serve --tls-cert PEM --tls-key PEM
// (the server's certificate chain and key); connect --tls-ca PEM [--server-name NAME]
// (the CA that signed the server's certificate; the name it must hold, default localhost).
//
// --library: the MsgPack library that writes: @msgpack/msgpack (default),
//            msgpack-lite-0.1 (0.1.17) or msgpack-lite-0.2 (0.2.2), which write
//            numbers as the original did (float64 beyond 32-bit integers).
// --dialect: what the peer writes: `later` (default), `nmsg-tcp` (the
//            original's later TCP stack: `e: ""` on responses) or `2016`, the
//            seed's release (`e: ""` on responses, {"b": [...]} bulks, always
//            buffered with a 5 ms cycle, 5 s callback timeout). It reads all.
// --echo-bug: serve only: the 2016 release's TCP server bug, every message
//            received is written back to its sender.
// --peer-echoes: connect only: the server has that bug. A response this client
//            sends comes back as a response to its own frame of the same id,
//            and client and server ids move in step, so the scenarios in which
//            the client answers the server's callbacks (ping, pick-hand,
//            countdown) are skipped (not counted); the echoed events are
//            counted as unhandled.
//
// serve:   prints `LISTENING HOST:PORT` (the real port, also for port 0) once it
//          listens, then serves the conformance events on every connection until
//          killed (SIGINT/SIGTERM) or, with --until-eof, until its stdin ends; it
//          then waits (up to 10 s) for the open connections to close and prints
//          its report line (below) before it exits.
// connect: runs the scenarios in order, prints `PASS name` / `FAIL name: why` for
//          each, then `N passed, M failed`, then its report line; exits 1 if any
//          failed, else 0.
//
// The report line counts what the peer saw go wrong on its connections, and the
// bulk messages it received (see createTally in nmsg.js):
//
//   REPORT protocol_errors=0 stray=0 duplicates=0 handler_failures=0 unhandled=0 bulks=N bulk_frames=M
//          map_bulks=K echoed=E sent_events=S sent_responses=R [unclosed=0]

const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const util = require('node:util');
const { Peer, createCodec, createTally, formatReport, DIALECTS, LIBRARIES } = require('./nmsg');
const { SessionClient, SessionServer, sessionReport, admit, authHello, welcomePlain } = require('./session');

const SCENARIO_TIMEOUT_MS = 10000;
const CLOSE_TIMEOUT_MS = 10000; // serve: how long the open connections may take to close at the end

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

const USAGE = 'usage: node conformance.js serve|connect --addr HOST:PORT [--codec msgpack|json] [--buffered] [--until-eof]\n'
  + `       [--library ${LIBRARIES.join('|')}] [--dialect later|nmsg-tcp|2016] [--echo-bug] [--peer-echoes]\n`
  + '       [--session [--heartbeat-interval MS] [--heartbeat-timeout MS] [--window MS]] [--token TOKEN]\n'
  + '       [--events N] [--requests N] [--big N] (connect: the load scenarios)\n'
  + '       [--tls-cert PEM --tls-key PEM] [--tls-ca PEM [--server-name NAME]]';

function usageError(msg) {
  process.stderr.write(`${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    mode: argv[0],
    addr: undefined,
    codec: 'msgpack',
    buffered: false,
    untilEof: false,
    library: '@msgpack/msgpack',
    dialect: 'later',
    echoBug: false,
    peerEchoes: false,
    session: false,
    sessionOptions: {},
    events: 0,
    requests: 0,
    big: 0,
    tlsCert: undefined,
    tlsKey: undefined,
    tlsCa: undefined,
    serverName: undefined,
  };
  if (opts.mode !== 'serve' && opts.mode !== 'connect') usageError(`unknown mode ${JSON.stringify(opts.mode)}`);
  for (let k = 1; k < argv.length; k++) {
    const arg = argv[k];
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (k + 1 >= argv.length) usageError(`${flag} needs a value`);
      return argv[++k];
    };
    if (flag === '--addr') opts.addr = value();
    else if (flag === '--codec') opts.codec = value();
    else if (flag === '--buffered') opts.buffered = true;
    else if (flag === '--until-eof') opts.untilEof = true;
    else if (flag === '--library') opts.library = value();
    else if (flag === '--dialect') opts.dialect = value();
    else if (flag === '--echo-bug') opts.echoBug = true;
    else if (flag === '--peer-echoes') opts.peerEchoes = true;
    else if (flag === '--session') opts.session = true;
    else if (flag === '--token') opts.token = value();
    else if (flag === '--heartbeat-interval') opts.sessionOptions.heartbeatIntervalMs = count(flag, value());
    else if (flag === '--heartbeat-timeout') opts.sessionOptions.heartbeatTimeoutMs = count(flag, value());
    else if (flag === '--window') opts.sessionOptions.windowMs = count(flag, value());
    else if (flag === '--events') opts.events = count(flag, value());
    else if (flag === '--requests') opts.requests = count(flag, value());
    else if (flag === '--big') opts.big = count(flag, value());
    else if (flag === '--tls-cert') opts.tlsCert = value();
    else if (flag === '--tls-key') opts.tlsKey = value();
    else if (flag === '--tls-ca') opts.tlsCa = value();
    else if (flag === '--server-name') opts.serverName = value();
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else usageError(`unknown argument ${JSON.stringify(arg)}`);
  }
  if (!opts.addr) usageError('--addr is required');
  if (opts.codec !== 'msgpack' && opts.codec !== 'json') usageError(`unknown codec ${JSON.stringify(opts.codec)}`);
  if (!LIBRARIES.includes(opts.library)) usageError(`unknown library ${JSON.stringify(opts.library)}`);
  if (!Object.hasOwn(DIALECTS, opts.dialect)) usageError(`unknown dialect ${JSON.stringify(opts.dialect)}`);
  if (opts.echoBug && opts.mode !== 'serve') usageError('--echo-bug is a server bug: serve only');
  if (opts.peerEchoes && opts.mode !== 'connect') usageError('--peer-echoes: connect only');
  if (opts.session && opts.echoBug) usageError('--session and --echo-bug do not go together');
  if (Object.keys(opts.sessionOptions).length > 0 && !opts.session) usageError('the heartbeat and window options need --session');
  if ((opts.events || opts.requests || opts.big) && opts.mode !== 'connect') usageError('--events, --requests and --big: connect only');
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) usageError('--tls-cert and --tls-key go together');
  if (opts.serverName !== undefined && opts.tlsCa === undefined) usageError('--server-name needs --tls-ca');
  if (opts.session && (opts.tlsCert !== undefined || opts.tlsCa !== undefined)) usageError('--session does not go with TLS in this peer');
  const { host, port } = parseAddr(opts.addr);
  return { ...opts, host, port };
}

function count(flag, text) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) usageError(`${flag} needs a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

/** "127.0.0.1:0", "localhost:9000", "[::1]:9000" -> { host, port } */
function parseAddr(addr) {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(addr);
  if (!m) usageError(`bad --addr ${JSON.stringify(addr)}, expected HOST:PORT`);
  const port = Number(m[3]);
  if (port > 65535) usageError(`bad port in --addr ${JSON.stringify(addr)}`);
  return { host: m[1] || m[2], port };
}

function formatAddr({ address, port }) {
  return net.isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}

function log(msg) {
  process.stderr.write(`${msg}\n`);
}

// ---------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------

/** Registers every conformance event (CONFORMANCE.md, beside this file) on one connection. */
function installConformanceHandlers(peer) {
  // Per-connection wildcard counter for `stats`. The wildcard runs after the
  // named handler, so a `stats` call does not count itself yet.
  const stats = { events: 0, last: null };
  peer.on('*', (name) => {
    stats.events += 1;
    stats.last = name;
  });

  const requireFn = (fn, event, what) => {
    if (typeof fn !== 'function') throw new TypeError(`${event}: ${what} is not a callback`);
  };

  peer.on('echo', (value, cb) => {
    requireFn(cb, 'echo', 'second argument');
    cb(value);
  });

  peer.on('add', (a, b, cb) => {
    requireFn(cb, 'add', 'third argument');
    if (typeof a === 'number' && typeof b === 'number') cb(a + b);
    else if ((typeof a === 'number' || typeof a === 'bigint') && (typeof b === 'number' || typeof b === 'bigint')) {
      // Only reached with integers beyond 2^53 (decoded as BigInt).
      const sum = BigInt(a) + BigInt(b);
      cb(Number.isSafeInteger(Number(sum)) ? Number(sum) : sum);
    } else throw new TypeError(`add: arguments must be numbers, got ${typeof a} and ${typeof b}`);
  });

  peer.on('ping', (data, err, done) => {
    requireFn(err, 'ping', 'second argument');
    requireFn(done, 'ping', 'third argument');
    err('This is error message');
    done('pong', (cb2) => {
      requireFn(cb2, 'ping inner', 'first argument');
      cb2('You can have as many levels as you want...');
    });
  });

  peer.on('pick-hand', (cb) => {
    requireFn(cb, 'pick-hand', 'first argument');
    cb(
      (c) => {
        requireFn(c, 'pick-hand left', 'first argument');
        c('white');
      },
      (c) => {
        requireFn(c, 'pick-hand right', 'first argument');
        c('black');
      },
    );
  });

  const countdown = (n, cb) => {
    requireFn(cb, 'countdown', 'second argument');
    if (n === 0) cb('done');
    else cb(n, (cb2) => countdown(n - 1, cb2));
  };
  peer.on('countdown', (n, cb) => {
    if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`countdown: n must be a non-negative integer, got ${util.inspect(n)}`);
    countdown(n, cb);
  });

  peer.on('multi', (cb0, value, cb2) => {
    requireFn(cb0, 'multi', 'first argument');
    requireFn(cb2, 'multi', 'third argument');
    cb2(value);
    cb0(value);
  });

  peer.on('notify', (event, payload, cb) => {
    requireFn(cb, 'notify', 'third argument');
    if (typeof event !== 'string' || event === '') throw new TypeError('notify: event must be a non-empty string');
    peer.emit(event, payload);
    cb(true);
  });

  // JavaScript numbers: integers each way, exactly (the Rust server takes them
  // as u64, u64, i64, u64).
  peer.on('integers', (now, big, negative, maxSafe, cb) => {
    requireFn(cb, 'integers', 'fifth argument');
    for (const n of [now, big, negative, maxSafe]) {
      if (!Number.isSafeInteger(n)) throw new TypeError(`integers: expected safe integers, got ${util.inspect([now, big, negative, maxSafe])}`);
    }
    cb(now, big, negative, maxSafe);
  });

  peer.on('echo-text', (text, cb) => {
    requireFn(cb, 'echo-text', 'second argument');
    if (typeof text !== 'string') throw new TypeError(`echo-text: expected a string, got ${util.inspect(text)}`);
    cb(text);
  });

  peer.on('stats', (cb) => {
    requireFn(cb, 'stats', 'first argument');
    cb({ events: stats.events, last: stats.last });
  });

  // Order and exactly-once, each way (the session tests' load): `seq(k)`
  // events must come with k = 0, 1, 2, ...; `seq-check` answers how many came
  // in order and how many did not; `flood(n, cb)` emits n `seq` events to the
  // client, numbered on from the last flood, then answers cb(n).
  const seq = { next: 0, errors: 0, sent: 0 };
  peer.on('seq', (k) => {
    if (k === seq.next) seq.next += 1;
    else {
      seq.errors += 1;
      log(`seq: expected ${seq.next}, got ${inspectValue(k)}`);
      if (Number.isSafeInteger(k)) seq.next = k + 1;
    }
  });
  peer.on('seq-check', (cb) => {
    requireFn(cb, 'seq-check', 'first argument');
    cb(seq.next, seq.errors);
  });
  peer.on('flood', (n, cb) => {
    requireFn(cb, 'flood', 'second argument');
    if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`flood: n must be a non-negative integer, got ${util.inspect(n)}`);
    (async () => {
      for (let k = 0; k < n; k++) {
        // In a session, wait for acks rather than outgrow the replay buffer.
        if (peer.session && !peer.session.drained()) await peer.session.whenDrained();
        if (peer.closed) return;
        peer.emit('seq', seq.sent++);
      }
      cb(n);
    })().catch((err) => {
      peer.tally.handlerFailures += 1;
      log(`flood failed: ${err && err.stack ? err.stack : err}`);
    });
  });
}

function inspectValue(v) {
  return util.inspect(v, { depth: 2, maxStringLength: 40, breakLength: Infinity });
}

function serve(opts) {
  let connections = 0;
  const tally = createTally(); // shared by every connection
  const open = new Set(); // peers (plain) or sockets (with --session) still open
  const makePeer = (socket, label) => {
    const peer = new Peer(socket, {
      codec: opts.codec,
      library: opts.library,
      dialect: opts.dialect,
      echo: opts.echoBug,
      buffered: opts.buffered,
      label,
      log,
      tally,
    });
    installConformanceHandlers(peer);
    return peer;
  };
  // --session: a hello makes a session connection (its peer, handlers and
  // state outlive the connection for the window), any other first message a
  // plain one, served as without the flag.
  const sessions = opts.session
    ? new SessionServer({
      codec: createCodec(opts.codec, { library: opts.library, bulkForm: DIALECTS[opts.dialect].bulkForm }),
      makePeer,
      log,
      tally,
      ...opts.sessionOptions,
      token: opts.token,
    })
    : null;
  const onSocket = (socket) => {
    const label = `conn#${++connections} ${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    log(`${label}: connected`);
    if (sessions) {
      open.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        open.delete(socket);
        log(`${label}: closed`);
      });
      sessions.accept(socket, label);
      return;
    }
    const served = (peer) => {
      open.add(peer);
      peer.onClose(() => {
        open.delete(peer);
        log(`${label}: closed`);
      });
    };
    if (opts.token !== undefined) {
      // --token: a hello with the token first, answered by a welcome
      // without a session; anything else is refused.
      socket.on('error', () => {});
      const codec = createCodec(opts.codec, { library: opts.library, bulkForm: DIALECTS[opts.dialect].bulkForm });
      admit(socket, { codec, token: opts.token, log, tally, label }).then((admitted) => {
        if (!admitted) return;
        welcomePlain(socket, codec);
        const peer = makePeer(null, label);
        peer._attach(socket, admitted.reader);
        served(peer);
      });
      return;
    }
    served(makePeer(socket, label));
  };
  // Over TLS, a connection is served once its handshake is done ('secureConnection').
  const server = opts.tlsCert !== undefined
    ? tls.createServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) }, onSocket)
    : net.createServer(onSocket);
  server.on('tlsClientError', (err) => log(`TLS handshake failed: ${err.message}`));
  server.on('error', (err) => {
    log(`server error: ${err.message}`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    // The one line on stdout: a harness reads the real address from it.
    process.stdout.write(`LISTENING ${formatAddr(server.address())}\n`);
    log(`serving codec=${opts.codec} library=${opts.library} dialect=${opts.dialect} buffered=${opts.buffered || DIALECTS[opts.dialect].alwaysBuffered} echo-bug=${opts.echoBug} session=${opts.session}`);
  });
  let finishing = false;
  const finish = async () => {
    if (finishing) return;
    finishing = true;
    server.close(); // no new connections
    // What the clients sent before they closed is handled by the time their
    // connections close: wait for that, so that the report counts all of it.
    const deadline = Date.now() + CLOSE_TIMEOUT_MS;
    while (open.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    const unclosed = open.size;
    for (const peerOrSocket of open) (peerOrSocket.close ? peerOrSocket.close() : peerOrSocket.destroy());
    if (sessions) sessions.closeAll();
    const extra = sessions ? { unclosed, ...sessionReport(tally) } : { unclosed };
    process.stdout.write(`${formatReport(tally, extra)}\n`, () => process.exit(0));
  };
  if (opts.untilEof) {
    process.stdin.on('end', finish);
    process.stdin.resume();
  }
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, finish);
}

// ---------------------------------------------------------------------------
// connect
// ---------------------------------------------------------------------------

const inspect = (v) => util.inspect(v, { depth: 6, maxStringLength: 60, maxArrayLength: 10, breakLength: Infinity });

function check(cond, why) {
  if (!cond) throw new Error(why);
}

/** Deep, type-strict equality (util.isDeepStrictEqual) with a readable failure. */
function checkEqual(actual, expected, what) {
  if (!util.isDeepStrictEqual(actual, expected)) {
    throw new Error(`${what}: expected ${inspect(expected)}, got ${inspect(actual)}`);
  }
}

/**
 * Scenario context: `emit` counts the events this client sent (for `stats`);
 * `call` emits with a trailing callback and resolves with that callback's args;
 * `invoke` calls a received (remote) callback with a fresh callback of ours.
 */
function makeContext(peer, opts) {
  const ctx = {
    peer,
    codec: opts.codec,
    emitted: 0,
    lastEmitted: null,
    emit(event, ...args) {
      ctx.emitted += 1;
      ctx.lastEmitted = event;
      return peer.emit(event, ...args);
    },
    call(event, ...args) {
      return new Promise((resolve) => ctx.emit(event, ...args, (...got) => resolve(got)));
    },
    invoke(remoteFn, ...args) {
      check(typeof remoteFn === 'function', `expected a callback, got ${inspect(remoteFn)}`);
      return new Promise((resolve) => remoteFn(...args, (...got) => resolve(got)));
    },
    async echo(value, what = `echo(${inspect(value)})`) {
      const got = await ctx.call('echo', value);
      check(got.length === 1, `${what}: callback got ${got.length} arguments, expected 1: ${inspect(got)}`);
      return got[0];
    },
  };
  return ctx;
}

const SCENARIOS = [
  {
    name: 'echo-string',
    async run(ctx) {
      checkEqual(await ctx.echo('hello'), 'hello', 'echo("hello")');
    },
  },
  {
    name: 'echo-unicode',
    async run(ctx) {
      const s = 'héllo wörld ✓ 日本語 🚀';
      checkEqual(await ctx.echo(s), s, 'echo(unicode)');
    },
  },
  {
    name: 'echo-nested-map',
    async run(ctx) {
      const v = { name: 'nmsg', list: [1, 'two', { three: [3] }], nested: { deep: { deeper: true } }, none: null };
      checkEqual(await ctx.echo(v), v, 'echo(nested map)');
    },
  },
  {
    name: 'echo-big-int',
    async run(ctx) {
      // Both beyond 32 bits; they must come back as the same JS numbers.
      checkEqual(await ctx.echo(1099511627776), 1099511627776, 'echo(2^40)');
      checkEqual(await ctx.echo(-5000000000), -5000000000, 'echo(-5000000000)');
    },
  },
  {
    name: 'echo-float',
    async run(ctx) {
      checkEqual(await ctx.echo(3.5), 3.5, 'echo(3.5)');
      checkEqual(await ctx.echo(-0.125), -0.125, 'echo(-0.125)');
    },
  },
  {
    name: 'js-numbers',
    async run(ctx) {
      // What JavaScript programs send: with msgpack-lite all of them are
      // float64 on the wire. They must come back as the same numbers.
      const values = [Date.now(), 2 ** 40, -5e9, 2 ** 53 - 1];
      for (const v of values) checkEqual(await ctx.echo(v), v, `echo(${v})`);
      checkEqual(await ctx.call('integers', ...values), values, `integers(${values.join(', ')})`);
    },
  },
  {
    name: 'non-bmp',
    async run(ctx) {
      // msgpack-lite 0.1.17 writes U+1F30D as CESU-8.
      const s = 'a\u{1F30D}';
      checkEqual(await ctx.echo(s), s, 'echo("a🌍")');
      checkEqual(await ctx.call('echo-text', s), [s], 'echo-text("a🌍")');
    },
  },
  {
    name: 'echo-binary',
    msgpackOnly: true, // JSON has no binary form: skipped and not counted
    async run(ctx) {
      const bytes = Buffer.from(Array.from({ length: 256 }, (_, k) => k));
      const got = await ctx.echo(bytes, 'echo(bytes 0..255)');
      check(got instanceof Uint8Array, `echo(bytes 0..255): expected binary, got ${inspect(got)}`);
      check(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), bytes) === 0, `echo(bytes 0..255): bytes differ: ${inspect(got)}`);
    },
  },
  {
    name: 'echo-1mib',
    async run(ctx) {
      const s = 'x'.repeat(1048576);
      const got = await ctx.echo(s, 'echo(1 MiB)');
      check(typeof got === 'string', `echo(1 MiB): expected a string, got ${inspect(got)}`);
      check(got.length === s.length, `echo(1 MiB): length ${got.length}, expected ${s.length}`);
      check(got === s, 'echo(1 MiB): content differs');
    },
  },
  {
    name: 'add',
    async run(ctx) {
      checkEqual(await ctx.call('add', 2, 40), [42], 'add(2, 40)');
      checkEqual(await ctx.call('add', 1.5, 2.25), [3.75], 'add(1.5, 2.25)');
    },
  },
  {
    name: 'ping',
    answersServerCallbacks: true, // skipped against an echoing server
    async run(ctx) {
      const order = [];
      let gotErr;
      let gotDone;
      const errP = new Promise((resolve) => { gotErr = resolve; });
      const doneP = new Promise((resolve) => { gotDone = resolve; });
      ctx.emit(
        'ping',
        { key: 'value' },
        (...args) => { order.push('err'); gotErr(args); },
        (...args) => { order.push('done'); gotDone(args); },
      );
      const [errArgs, doneArgs] = await Promise.all([errP, doneP]);
      checkEqual(errArgs, ['This is error message'], 'err callback');
      check(doneArgs.length === 2 && doneArgs[0] === 'pong' && typeof doneArgs[1] === 'function',
        `done callback: expected ("pong", callback), got ${inspect(doneArgs)}`);
      checkEqual(order, ['err', 'done'], 'callback order (err, then done)');
      checkEqual(await ctx.invoke(doneArgs[1]), ['You can have as many levels as you want...'], 'inner(cb2)');
    },
  },
  {
    name: 'pick-hand',
    answersServerCallbacks: true, // skipped against an echoing server
    async run(ctx) {
      const got = await ctx.call('pick-hand');
      check(got.length === 2 && typeof got[0] === 'function' && typeof got[1] === 'function',
        `expected cb(left, right) with two callbacks, got ${inspect(got)}`);
      const [left, right] = await Promise.all([ctx.invoke(got[0]), ctx.invoke(got[1])]);
      checkEqual(left, ['white'], 'left(c)');
      checkEqual(right, ['black'], 'right(c)');
    },
  },
  {
    name: 'countdown',
    answersServerCallbacks: true, // skipped against an echoing server
    async run(ctx) {
      const N = 50;
      let got = await ctx.call('countdown', N);
      for (let n = N; n >= 1; n--) {
        check(got.length === 2 && got[0] === n && typeof got[1] === 'function',
          `level ${N - n}: expected cb(${n}, next), got ${inspect(got)}`);
        got = await ctx.invoke(got[1]);
      }
      checkEqual(got, ['done'], 'last level');
    },
  },
  {
    name: 'multi',
    async run(ctx) {
      const order = [];
      let res0;
      let res2;
      const p0 = new Promise((resolve) => { res0 = resolve; });
      const p2 = new Promise((resolve) => { res2 = resolve; });
      ctx.emit(
        'multi',
        (...args) => { order.push('cb0'); res0(args); },
        'v',
        (...args) => { order.push('cb2'); res2(args); },
      );
      const [a0, a2] = await Promise.all([p0, p2]);
      checkEqual(a2, ['v'], 'cb2');
      checkEqual(a0, ['v'], 'cb0');
      checkEqual(order, ['cb2', 'cb0'], 'callback order (cb2 first, then cb0)');
    },
  },
  {
    name: 'notify',
    async run(ctx) {
      const payload = { hello: 'from server' };
      let gotEvent;
      const eventP = new Promise((resolve) => { gotEvent = resolve; });
      ctx.peer.on('notified', (...args) => gotEvent(args));
      try {
        const cbArgs = await ctx.call('notify', 'notified', payload);
        checkEqual(cbArgs, [true], 'notify callback');
        checkEqual(await eventP, [payload], '"notified" handler arguments');
      } finally {
        ctx.peer.off('notified');
      }
    },
  },
  {
    name: 'inflight-2000',
    async run(ctx) {
      const N = 2000;
      const calls = [];
      for (let k = 0; k < N; k++) calls.push(ctx.call('echo', k)); // all issued before any answer
      const answers = await Promise.all(calls);
      answers.forEach((got, k) => checkEqual(got, [k], `echo(${k})`));
    },
  },
  {
    name: 'unknown-event',
    async run(ctx) {
      ctx.emit('no-such-event', 'some argument', () => {}); // never called: that's fine
      checkEqual(await ctx.echo('after'), 'after', 'echo("after") following an unknown event');
    },
  },
  {
    name: 'stats',
    async run(ctx) {
      const before = ctx.emitted;
      const lastBefore = ctx.lastEmitted;
      const got = await ctx.call('stats');
      check(got.length === 1, `expected cb(stats), got ${inspect(got)}`);
      const s = got[0];
      check(s !== null && typeof s === 'object' && !Array.isArray(s), `expected a map, got ${inspect(s)}`);
      // The server's wildcard has seen every event this client emitted before
      // `stats`, the last of them last; or, if it runs before the handler,
      // those and `stats` itself. Nothing else is right.
      const exact = [{ events: before, last: lastBefore }, { events: before + 1, last: 'stats' }];
      check(exact.some((e) => util.isDeepStrictEqual({ events: s.events, last: s.last }, e)),
        `expected ${inspect(exact[0])} (or ${inspect(exact[1])}), got ${inspect(s)}`);
    },
  },
];

const LOAD_TIMEOUT_MS = 120000; // a load scenario's timeout: it may run through many breaks

/**
 * The load scenarios (`--events N`, `--requests N`, `--big N`), run before
 * `stats`: order and exactly-once each way, nested callbacks three deep, and
 * 1 MiB messages. In a session they wait for acks rather than outgrow the
 * replay buffer.
 */
function loadScenarios(opts) {
  const list = [];
  const paced = async (ctx) => {
    const session = ctx.peer.session;
    if (session && !session.drained()) await session.whenDrained();
  };
  if (opts.events > 0) {
    const n = opts.events;
    list.push({
      name: `events-out-${n}`,
      timeoutMs: LOAD_TIMEOUT_MS,
      async run(ctx) {
        for (let k = 0; k < n; k++) {
          await paced(ctx);
          ctx.emit('seq', k);
        }
        checkEqual(await ctx.call('seq-check'), [n, 0], 'seq-check (events in order, events out of order)');
      },
    });
    list.push({
      name: `events-in-${n}`,
      timeoutMs: LOAD_TIMEOUT_MS,
      async run(ctx) {
        const got = { next: 0, errors: 0 };
        ctx.peer.on('seq', (k) => {
          if (k === got.next) got.next += 1;
          else {
            got.errors += 1;
            log(`seq from the server: expected ${got.next}, got ${inspect(k)}`);
            if (Number.isSafeInteger(k)) got.next = k + 1;
          }
        });
        try {
          checkEqual(await ctx.call('flood', n), [n], 'flood callback');
          checkEqual(got, { next: n, errors: 0 }, 'seq events from the server (in order, out of order)');
        } finally {
          ctx.peer.off('seq');
        }
      },
    });
  }
  if (opts.requests > 0) {
    const n = opts.requests;
    list.push({
      name: `nested-${n}`,
      timeoutMs: LOAD_TIMEOUT_MS,
      async run(ctx) {
        // countdown(1): the server calls cb(1, next), we call next(cb2), it
        // calls cb2("done"): callbacks three deep. 200 requests in flight.
        let next = 0;
        let done = 0;
        const worker = async () => {
          while (next < n) {
            const k = next++;
            await paced(ctx);
            const got = await ctx.call('countdown', 1);
            check(got.length === 2 && got[0] === 1 && typeof got[1] === 'function', `request ${k}: expected cb(1, next), got ${inspect(got)}`);
            checkEqual(await ctx.invoke(got[1]), ['done'], `request ${k}: next(cb2)`);
            done += 1;
          }
        };
        await Promise.all(Array.from({ length: 200 }, worker));
        checkEqual(done, n, 'requests answered');
      },
    });
  }
  if (opts.big > 0) {
    const n = opts.big;
    list.push({
      name: `big-${n}`,
      timeoutMs: LOAD_TIMEOUT_MS,
      async run(ctx) {
        for (let k = 0; k < n; k++) {
          const prefix = `${k}:`;
          const s = prefix + String.fromCharCode(97 + (k % 26)).repeat(1048576 - prefix.length);
          const got = await ctx.echo(s, `echo(1 MiB #${k})`);
          check(got === s, `echo(1 MiB #${k}): ${typeof got === 'string' ? `length ${got.length}, content differs` : inspect(got)}`);
        }
      },
    });
  }
  return list;
}

/** Connects, retrying with a doubling delay (1 s, 2 s, 4 s) before giving up.
 *  With `secure` (tls.connect's options), over TLS: connected once the handshake is done. */
async function connectWithRetry(host, port, secure, attempts = 4) {
  let delay = 1000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await new Promise((resolve, reject) => {
        const socket = secure ? tls.connect({ host, port, ...secure }) : net.connect({ host, port });
        socket.once(secure ? 'secureConnect' : 'connect', () => {
          socket.removeListener('error', reject);
          resolve(socket);
        });
        socket.once('error', reject);
      });
    } catch (err) {
      if (attempt >= attempts) throw err;
      log(`connect to ${host}:${port} failed (${err.message}); retrying in ${delay} ms`);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay *= 2;
    }
  }
}

/**
 * Runs one scenario against its timeout (10 s unless it says), the
 * connection closing and, in a session, the session being lost.
 */
function runScenario(scenario, ctx, closedP) {
  let timer;
  const ms = scenario.timeoutMs || SCENARIO_TIMEOUT_MS;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s`)), ms);
  });
  const racers = [Promise.resolve().then(() => scenario.run(ctx)), timeout, closedP];
  if (ctx.lost) racers.push(ctx.lost.promise);
  return Promise.race(racers).finally(() => clearTimeout(timer));
}

/** A promise that rejects when the session is lost: its callbacks will never come. */
function lostPromise() {
  const d = {};
  d.promise = new Promise((_, reject) => { d.reject = reject; });
  d.promise.catch(() => {});
  return d;
}

async function connect(opts) {
  const load = loadScenarios(opts);
  const all = [...SCENARIOS.slice(0, -1), ...load, SCENARIOS[SCENARIOS.length - 1]]; // stats last
  const scenarios = all.filter((s) => {
    if (s.answersServerCallbacks && opts.peerEchoes) {
      log(`skipping ${s.name}: the server echoes (--peer-echoes), so the responses this client sends come back as responses to its own frames of the same ids`);
      return false;
    }
    if (s.msgpackOnly && opts.codec !== 'msgpack') {
      log(`skipping ${s.name}: needs binary data, which the ${opts.codec} codec cannot carry`);
      return false;
    }
    return true;
  });

  let passed = 0;
  let failed = 0;
  const report = (name, err) => {
    if (err) {
      failed += 1;
      const why = String(err && err.message ? err.message : err).replace(/\s*\n\s*/g, ' ');
      process.stdout.write(`FAIL ${name}: ${why}\n`);
    } else {
      passed += 1;
      process.stdout.write(`PASS ${name}\n`);
    }
  };

  const denied = (reason) => {
    process.stdout.write(`AUTH REJECTED the server rejected the authentication: ${reason}\n`);
    process.exit(3);
  };
  let socket = null;
  let reader = null;
  if (!opts.session) {
    try {
      const secure = opts.tlsCa === undefined ? undefined
        : { ca: fs.readFileSync(opts.tlsCa), servername: opts.serverName || 'localhost' };
      socket = await connectWithRetry(opts.host, opts.port, secure);
      if (opts.token !== undefined) {
        const codec = createCodec(opts.codec, { library: opts.library, bulkForm: DIALECTS[opts.dialect].bulkForm });
        socket.on('error', () => {});
        reader = await authHello(socket, codec, undefined, opts.token).catch((err) => {
          if (err.denied !== undefined) denied(err.denied);
          throw err;
        });
      }
    } catch (err) {
      for (const s of scenarios) report(s.name, new Error(`cannot connect to ${opts.addr}: ${err.message}`));
      process.stdout.write(`${passed} passed, ${failed} failed\n`);
      process.stdout.write(`${formatReport(createTally())}\n`);
      process.exit(1);
    }
    socket.setNoDelay(true);
  }
  const peer = new Peer(reader ? null : socket, {
    codec: opts.codec,
    library: opts.library,
    dialect: opts.dialect,
    buffered: opts.buffered,
    quietUnhandled: opts.peerEchoes, // each event it sent comes back
    label: 'client',
    log,
  });
  if (reader) peer._attach(socket, reader);
  const ctx = makeContext(peer, opts);
  if (opts.session) {
    // The session resumes after every break; only when it is lost (the
    // server forgot it) does the scenario under way fail.
    const client = new SessionClient(peer, { host: opts.host, port: opts.port, ...opts.sessionOptions, token: opts.token });
    client.onDenied = denied;
    ctx.lost = lostPromise();
    peer.session.onLost((info) => {
      const lost = ctx.lost;
      ctx.lost = lostPromise();
      lost.reject(new Error(`session lost: ${info.callbacks} callbacks void, ${info.resent} plain events sent again`));
    });
    await client.start();
  }
  const closedP = new Promise((_, reject) => peer.onClose(() => reject(new Error('connection closed'))));
  closedP.catch(() => {}); // observed by each race; never an unhandled rejection

  for (const s of scenarios) {
    if (peer.closed) {
      report(s.name, new Error('connection closed'));
      continue;
    }
    try {
      await runScenario(s, ctx, closedP);
      report(s.name);
    } catch (err) {
      report(s.name, err);
    }
  }
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  // A last round trip: a response the server sent twice, before this one's
  // answer, has arrived (and been counted) once it is answered.
  let finalOk = !peer.closed;
  if (finalOk) {
    try {
      await runScenario({ run: async (c) => checkEqual(await c.echo('last'), 'last', 'echo("last")') }, ctx, closedP);
    } catch (err) {
      finalOk = false;
      log(`the last round trip failed: ${err.message}`);
    }
  }
  process.stdout.write(`${formatReport(peer.tally, opts.session ? sessionReport(peer.tally) : {})}\n`);
  peer.close();
  process.exit(failed > 0 || !finalOk ? 1 : 0);
}

// ---------------------------------------------------------------------------

if (require.main === module) {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.mode === 'serve') serve(opts);
  else connect(opts).catch((err) => {
    log(`conformance client crashed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  });
}

module.exports = { SCENARIOS, installConformanceHandlers, parseAddr };
