'use strict';
// A small, self-contained implementation of the nmsg wire protocol, used by
// conformance.js and the Rust interop tests.
//
// Layers, bottom up:
//   FrameReader   - 4-byte big-endian length-prefixed stream framing
//   codecs        - MsgPack and JSON payload codecs; MsgPack written with
//                   @msgpack/msgpack or with msgpack-lite 0.1.17 / 0.2.2, as
//                   the original's releases wrote it
//   Peer          - the nmsg router on one connection: frame ids, callbacks,
//                   pending table, event routing, bulk (buffered) sending,
//                   in the dialect of one release of the original.

const { Encoder, Decoder } = require('@msgpack/msgpack');

const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024; // 16 MiB
const DEFAULT_TIMEOUT_SECONDS = 15; // a frame's callbacks live this long when `t` is absent (later dialect)

/**
 * The dialects of the original this peer speaks (PROTOCOL.md of the crate docs,
 * "Dialects"). Whatever it writes, a peer reads every dialect: a frame with `r`
 * and an empty or absent `e` is a response, and both the array and the
 * `{"b": [...]}` map are bulks.
 *
 *   later     nmsg-rpc from mid-April 2016 on (tests/data/wire.json): responses
 *             without `e`, array bulks, buffering only when asked, 15 s timeout.
 *   nmsg-tcp  the original's later complete TCP stack: as `later`, but every
 *             response carries `e: ""`.
 *   2016      the seed's release, nmsg 1.0.2 with nmsg-rpc 1.0.6
 *             (tests/data/wire-2016.json): `e` on every frame, `""` on responses;
 *             bulks as the map {"b": [frames]}; always buffered, flushed every
 *             5 ms, so every message is such a bulk; 5 s timeout.
 */
const DIALECTS = {
  later: { timeoutSeconds: 15, eOnResponses: false, bulkForm: 'array', alwaysBuffered: false, cycleMs: 0 },
  'nmsg-tcp': { timeoutSeconds: 15, eOnResponses: true, bulkForm: 'array', alwaysBuffered: false, cycleMs: 0 },
  2016: { timeoutSeconds: 5, eOnResponses: true, bulkForm: 'map', alwaysBuffered: true, cycleMs: 5 },
};

/** The dialects' names, for usage lines. */
const DIALECT_NAMES = ['later', 'nmsg-tcp', '2016'];

/** The MsgPack libraries a peer can write with (`library` option). */
const LIBRARIES = ['@msgpack/msgpack', 'msgpack-lite-0.1', 'msgpack-lite-0.2'];
const LATENCY_ALLOWANCE_MS = 500; // added to `t`, as in the original
const MAX_FRAME_ID = 1000000000; // ids run 1..1e9 and wrap back to 1 (never 0)

/** A violation of the wire contract by the remote side. */
class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// ---------------------------------------------------------------------------
// Stream framing
// ---------------------------------------------------------------------------

/**
 * Splits a byte stream into messages of `u32 BE length` + `length` bytes.
 *
 * Unlike the original JS decoder (which checked `buffered > length`), this one
 * waits until all 4 + length bytes have arrived. Chunks are kept in a list and
 * only concatenated once a whole message is there, so a 1 MiB message arriving
 * in 64 KiB pieces costs one copy, not one per piece.
 */
class FrameReader {
  constructor(maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE) {
    this.maxMessageSize = maxMessageSize;
    this.chunks = [];
    this.buffered = 0;
  }

  /** Flattens the first `n` buffered bytes into chunks[0] (n <= buffered). */
  _gather(n) {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [all];
    return all;
  }

  /**
   * Feeds a chunk; returns the complete message payloads it finished (possibly
   * none). Throws ProtocolError for a zero or oversized length prefix: the
   * caller must then close the connection (the stream cannot be resynchronised).
   */
  push(chunk) {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out = [];
    while (this.buffered >= 4) {
      const head = this._gather(4);
      const length = head.readUInt32BE(0);
      if (length === 0) throw new ProtocolError('zero-length message');
      if (length > this.maxMessageSize) {
        throw new ProtocolError(`message length ${length} exceeds the maximum ${this.maxMessageSize}`);
      }
      if (this.buffered < 4 + length) break; // wait for the rest
      const buf = this._gather(4 + length);
      out.push(buf.subarray(4, 4 + length));
      const rest = buf.subarray(4 + length);
      this.chunks = rest.length ? [rest, ...this.chunks.slice(1)] : this.chunks.slice(1);
      this.buffered -= 4 + length;
    }
    return out;
  }
}

/**
 * What a peer observed on its connections, for the report a conformance peer
 * prints when it ends. Several peers can share one tally.
 *
 *   protocolErrors   framing errors, undecodable messages, malformed frames
 *   stray            responses to a frame or position with no live callback
 *                    (never seen before: not a callback, or expired)
 *   duplicates       responses to a callback that an earlier response already answered
 *   handlerFailures  handlers, wildcards and callbacks that threw
 *   unhandled        events with neither a handler nor a wildcard
 *   bulks            bulk messages received, of either form
 *   bulkFrames       frames received inside bulk messages
 *   mapBulks         those of the bulks that were `{"b": [...]}` maps (2016 dialect)
 *   echoed           messages written back to their sender (the 2016 server's echo bug)
 *   sentEvents       events this peer emitted (a peer whose messages are echoed
 *                    gets each back as an event it has no handler for)
 *   sentResponses    responses this peer sent (echoed, each is a response to a
 *                    frame of the peer's own numbering: stray, a duplicate, or
 *                    worse)
 */
function createTally() {
  return {
    protocolErrors: 0,
    stray: 0,
    duplicates: 0,
    handlerFailures: 0,
    unhandled: 0,
    bulks: 0,
    bulkFrames: 0,
    mapBulks: 0,
    echoed: 0,
    sentEvents: 0,
    sentResponses: 0,
  };
}

/** The tally as one machine-readable line: `REPORT key=value ...`. */
function formatReport(tally, extra = {}) {
  const fields = {
    protocol_errors: tally.protocolErrors,
    stray: tally.stray,
    duplicates: tally.duplicates,
    handler_failures: tally.handlerFailures,
    unhandled: tally.unhandled,
    bulks: tally.bulks,
    bulk_frames: tally.bulkFrames,
    map_bulks: tally.mapBulks,
    echoed: tally.echoed,
    sent_events: tally.sentEvents,
    sent_responses: tally.sentResponses,
    ...extra,
  };
  return `REPORT ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' ')}`;
}

/** Returns the 4-byte big-endian length prefix for a payload. */
function lengthPrefix(length) {
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(length, 0);
  return head;
}

// ---------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------
//
// A codec has:
//   name
//   encode(value) -> Buffer          (throws a clear Error for data it cannot represent)
//   encodeBulk(encodedFrames) -> Buffer   (an array message built from already encoded frames)
//   decode(Buffer) -> value          (throws when the payload is not exactly one value)

const INT64_MIN = -(2n ** 63n);
const UINT64_MAX = 2n ** 64n - 1n;

/**
 * Integer handling in @msgpack/msgpack 3.x:
 *  - with `useBigInt64: false` the encoder writes every safe integer with the
 *    smallest int format (uint64/int64 beyond 32 bits), which is what we want
 *    for numbers, but it cannot write a BigInt at all;
 *  - with `useBigInt64: true` it writes BigInts as int64/uint64 but safe
 *    integers beyond 32 bits as float64, which would break integer round-trip.
 * So we keep `useBigInt64: false` and route BigInt values (only produced by
 * decoding 64-bit integers outside the safe range) to encodeBigInt64 ourselves.
 */
class NmsgMsgPackEncoder extends Encoder {
  constructor() {
    super({ useBigInt64: false, maxDepth: 1000 });
  }

  clone() {
    return new NmsgMsgPackEncoder();
  }

  doEncode(object, depth) {
    if (typeof object === 'bigint') {
      if (object < INT64_MIN || object > UINT64_MAX) {
        // DataView.setBig(U)Int64 would silently wrap, so refuse here.
        throw new RangeError(`MsgPack cannot represent the integer ${object} (outside int64/uint64)`);
      }
      this.encodeBigInt64(object);
      return;
    }
    super.doEncode(object, depth);
  }
}

/**
 * Post-processes a decoded MsgPack value in place:
 *  - int64/uint64 values arrive as BigInt (useBigInt64: true); they become
 *    plain numbers when Number.isSafeInteger, and stay BigInt otherwise so that
 *    no precision is lost silently;
 *  - bin values arrive as Uint8Array views; they become Buffer views (no copy).
 */
function normalizeDecoded(value) {
  if (typeof value === 'bigint') {
    const n = Number(value);
    return Number.isSafeInteger(n) && BigInt(n) === value ? n : value;
  }
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Uint8Array) {
    return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = normalizeDecoded(value[i]);
    return value;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const key of Object.keys(value)) value[key] = normalizeDecoded(value[key]);
  }
  return value; // e.g. ExtData / Date from extension types: left as the library made them
}

function msgpackArrayHeader(n) {
  if (n < 16) return Buffer.from([0x90 | n]);
  if (n < 0x10000) {
    const b = Buffer.allocUnsafe(3);
    b[0] = 0xdc;
    b.writeUInt16BE(n, 1);
    return b;
  }
  const b = Buffer.allocUnsafe(5);
  b[0] = 0xdd;
  b.writeUInt32BE(n, 1);
  return b;
}

/** `{"b": ` in MsgPack: a map of one entry, its key the string "b". */
const MSGPACK_MAP_BULK_HEAD = Buffer.from([0x81, 0xa1, 0x62]);

/**
 * msgpack-lite's numbers: a BigInt (which only our decoder makes, for integers
 * beyond 2^53) becomes the JS number msgpack-lite's own decoder would have
 * given, rounded; msgpack-lite cannot write BigInt.
 */
function liteValue(value) {
  if (typeof value === 'bigint') return Number(value);
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map(liteValue);
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const out = {};
  for (const key of Object.keys(value)) out[key] = liteValue(value[key]);
  return out;
}

/**
 * MsgPack, written with `library`: @msgpack/msgpack (int64/uint64 for integers
 * beyond 32 bits), or msgpack-lite 0.1.17 / 0.2.2 as the original wrote it:
 * float64 for every number outside the 32-bit integer range (Date.now()
 * included), and with 0.1.17 characters outside the Basic Multilingual Plane
 * as CESU-8. Every library is read with @msgpack/msgpack: msgpack-lite's own
 * decoders (both releases) turn 4-byte UTF-8 and CESU-8 alike into U+FFFD, which
 * would fail the checks of this peer, not those of the other side; numbers
 * decode the same.
 */
function createMsgPackCodec(library, bulkForm) {
  let write;
  if (library === '@msgpack/msgpack') {
    const encoder = new NmsgMsgPackEncoder();
    write = (value) => {
      const u8 = encoder.encode(value); // a fresh copy, safe to keep
      return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
    };
  } else if (library === 'msgpack-lite-0.1' || library === 'msgpack-lite-0.2') {
    const lite = require(library);
    write = (value) => lite.encode(liteValue(value));
  } else {
    throw new Error(`unknown MsgPack library "${library}" (expected one of ${LIBRARIES.join(', ')})`);
  }
  const decoder = new Decoder({ useBigInt64: true });
  return {
    name: 'msgpack',
    library,
    bulkForm,
    encode: write,
    // A MsgPack array is its header followed by its elements' encodings, so a
    // bulk is built by concatenation, without re-encoding the frames; the map
    // form only puts `{"b": ` in front.
    encodeBulk(encodedFrames) {
      const head = msgpackArrayHeader(encodedFrames.length);
      const parts = bulkForm === 'map' ? [MSGPACK_MAP_BULK_HEAD, head] : [head];
      return Buffer.concat([...parts, ...encodedFrames]);
    },
    decode(buf) {
      return normalizeDecoded(decoder.decode(buf)); // throws on trailing bytes too
    },
  };
}

function createJsonCodec(bulkForm) {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  // JSON.stringify calls toJSON (Buffer has one) before the replacer, so the
  // replacer looks at the original value, holder[key], to spot binary data.
  function replacer(key, value) {
    const original = this[key];
    if (ArrayBuffer.isView(original) || original instanceof ArrayBuffer) {
      throw new TypeError('the JSON codec cannot encode binary data (Buffer/Uint8Array); use the MsgPack codec');
    }
    if (typeof value === 'bigint') {
      throw new TypeError(`the JSON codec cannot encode the BigInt ${value} exactly`);
    }
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new TypeError(`the JSON codec cannot encode the number ${value}`);
    }
    return value;
  }
  const OPEN = Buffer.from(bulkForm === 'map' ? '{"b":[' : '[');
  const COMMA = Buffer.from(',');
  const CLOSE = Buffer.from(bulkForm === 'map' ? ']}' : ']');
  return {
    name: 'json',
    library: 'JSON',
    bulkForm,
    encode(value) {
      return Buffer.from(JSON.stringify(value, replacer), 'utf8');
    },
    encodeBulk(encodedFrames) {
      const parts = [OPEN];
      encodedFrames.forEach((f, idx) => {
        if (idx > 0) parts.push(COMMA);
        parts.push(f);
      });
      parts.push(CLOSE);
      return Buffer.concat(parts);
    },
    decode(buf) {
      return JSON.parse(utf8.decode(buf)); // invalid UTF-8 is a decode error
    },
  };
}

/**
 * A codec by name, `msgpack` or `json`. Options: `library`, the MsgPack
 * library that writes (LIBRARIES; JSON ignores it), and `bulkForm`, `array`
 * (the later dialect) or `map` (`{"b": [...]}`, the 2016 dialect).
 */
function createCodec(name, { library = '@msgpack/msgpack', bulkForm = 'array' } = {}) {
  if (bulkForm !== 'array' && bulkForm !== 'map') throw new Error(`unknown bulk form "${bulkForm}" (expected array or map)`);
  if (name === 'msgpack') return createMsgPackCodec(library, bulkForm);
  if (name === 'json') return createJsonCodec(bulkForm);
  throw new Error(`unknown codec "${name}" (expected msgpack or json)`);
}

// ---------------------------------------------------------------------------
// Frame validation helpers
// ---------------------------------------------------------------------------

function isPlainMap(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function isUint(v) {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Reads an optional key. Like the original (`data.a && ...`), a nil/null value
 * counts as absent, so an encoder that writes `"a": nil` for "no args" is accepted.
 */
function optional(frame, key) {
  const v = frame[key];
  return v === null || v === undefined ? undefined : v;
}

function describe(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (Buffer.isBuffer(v)) return 'binary';
  return typeof v;
}

// ---------------------------------------------------------------------------
// Peer: the nmsg router on one connection
// ---------------------------------------------------------------------------

/**
 * One end of an nmsg connection.
 *
 *   const peer = new Peer(socket, { codec: 'msgpack', buffered: false });
 *   new Peer(socket, { codec: 'msgpack', library: 'msgpack-lite-0.1', dialect: '2016', echo: true });
 *   peer.on('echo', (value, cb) => cb(value));
 *   peer.on('*', (name, ...args) => {});      // wildcard, runs after the named handler
 *   peer.emit('echo', 'hi', (v) => {});       // functions anywhere in the args are callbacks
 *
 * Options: `codec` (msgpack, json, or a codec object), `library` (the MsgPack
 * library that writes, LIBRARIES), `dialect` (DIALECTS: what it writes; it
 * reads every dialect), `buffered` (bulks; always on in the 2016 dialect),
 * `timeoutSeconds` (default: the dialect's), `echo` (the 2016 release's TCP
 * server bug: every message received is written back to its sender, before it
 * is handled), `quietUnhandled` (events without a handler are counted, not
 * logged: for a client of an echoing server), `maxMessageSize`, `log`, `label`,
 * `tally`.
 *
 * Local errors (unencodable data, a callback invoked twice, sending on a
 * closed connection) throw. Remote errors (malformed frames, responses to
 * unknown frames) are reported through `log` and skipped. Framing and decoding
 * errors close this connection only.
 */
class Peer {
  constructor(socket, options = {}) {
    this.socket = null;
    const dialectName = options.dialect || 'later';
    this.dialect = DIALECTS[dialectName];
    if (!this.dialect) throw new Error(`unknown dialect "${dialectName}" (expected ${DIALECT_NAMES.join(', ')})`);
    this.dialectName = dialectName;
    this.codec = typeof options.codec === 'object'
      ? options.codec
      : createCodec(options.codec || 'msgpack', { library: options.library, bulkForm: this.dialect.bulkForm });
    this.buffered = this.dialect.alwaysBuffered || !!options.buffered;
    this.echo = !!options.echo;
    this.quietUnhandled = !!options.quietUnhandled; // counted, not logged
    this.maxMessageSize = options.maxMessageSize || DEFAULT_MAX_MESSAGE_SIZE;
    this.defaultTimeoutSeconds = this.dialect.timeoutSeconds;
    this.timeoutSeconds = options.timeoutSeconds ?? this.defaultTimeoutSeconds;
    this.log = options.log || ((msg) => process.stderr.write(`nmsg: ${msg}\n`));
    this.label = options.label || 'peer';
    this.tally = options.tally || createTally();

    this.lastId = 0; // outgoing id counter; the other direction has its own
    this.pending = new Map(); // our frame id -> { fns: Map(position -> function), timer }
    this.answered = new Set(); // "id:position" of our callbacks already answered (to tell duplicates)
    this.handlers = new Map(); // event name -> handler (one per name, as in the original)
    this.queue = []; // buffered mode: encoded frames waiting for the next flush
    this.flushScheduled = false;
    this.closed = false;
    this.closeListeners = [];
    // The session extension (session.js), when this peer is one end of a
    // session: it numbers, keeps and acknowledges data messages, and the peer
    // outlives its connections. Null on a plain connection.
    this.session = null;
    this.epoch = 0; // bumped when a session is lost: callbacks of before are void

    if (socket) this._attach(socket, new FrameReader(this.maxMessageSize));
  }

  /**
   * Reads and writes `socket` from now on, `reader` holding what was already
   * read from it. A plain peer has one socket for its life; a session's peer
   * gets a new one on each resume (events of an earlier socket are ignored).
   */
  _attach(socket, reader) {
    this.socket = socket;
    this.reader = reader;
    socket.on('data', (chunk) => {
      if (this.socket === socket) this._onData(chunk);
    });
    socket.on('error', (err) => this.log(`${this.label}: socket error: ${err.message}`));
    socket.on('close', () => {
      if (this.socket !== socket) return;
      if (this.session) this.session.onSocketClose(socket);
      else this._onClose();
    });
    if (reader.buffered > 0) this._onData(Buffer.alloc(0)); // what came with the handshake
  }

  // --- public API ----------------------------------------------------------

  /** Registers the handler for `event` (replacing any previous one). '*' is the wildcard. */
  on(event, fn) {
    this.handlers.set(event, fn);
    return this;
  }

  /** Removes the handler for `event`. */
  off(event) {
    this.handlers.delete(event);
    return this;
  }

  /** Sends an event. Functions among `args` become callbacks the peer can invoke. */
  emit(event, ...args) {
    if (typeof event !== 'string' || event === '') {
      throw new TypeError('event name must be a non-empty string');
    }
    const id = this._nextId();
    const { frame, fns } = this._buildFrame(args);
    // Key order as the original writes it: i, e, a, (t), c.
    const ordered = { i: id, e: event, ...frame };
    this._send(ordered, fns);
    this.tally.sentEvents += 1;
    return this;
  }

  /** Calls `fn` once the connection has closed. */
  onClose(fn) {
    if (this.closed) fn();
    else this.closeListeners.push(fn);
  }

  close() {
    if (this.session) this.session.end();
    if (this.socket) this.socket.destroy();
    this._onClose();
  }

  // --- outgoing ------------------------------------------------------------

  /** Next frame id: 1, 2, ... 1e9, 1, ...; ids still pending are skipped so they stay unique. */
  _nextId() {
    for (;;) {
      this.lastId = (this.lastId % MAX_FRAME_ID) + 1;
      if (!this.pending.has(this.lastId)) return this.lastId;
    }
  }

  /**
   * Splits a full argument list into data (`a`) and callback positions (`c`).
   * As in the original, `a` is written whenever there are arguments at all
   * (so `f(cb)` sends `a: []`, `c: [0]`) and left out when there are none.
   */
  _buildFrame(args) {
    const frame = {};
    const fns = new Map();
    if (args.length > 0) {
      const a = [];
      const c = [];
      args.forEach((arg, pos) => {
        if (typeof arg === 'function') {
          c.push(pos);
          fns.set(pos, arg);
        } else {
          a.push(arg);
        }
      });
      frame.a = a;
      if (fns.size > 0 && this.timeoutSeconds !== this.defaultTimeoutSeconds) frame.t = this.timeoutSeconds;
      if (c.length > 0) frame.c = c;
    }
    return { frame, fns };
  }

  /** Sends the response frame for callback `pos` of the peer's frame `requestId`. */
  _respond(requestId, pos, args) {
    const id = this._nextId();
    const { frame, fns } = this._buildFrame(args);
    // Key order as in the original: i, a, (t), c, r, f; the 2016 release
    // writes `e: ""` after i.
    const head = this.dialect.eOnResponses ? { i: id, e: '' } : { i: id };
    this._send({ ...head, ...frame, r: requestId, f: pos }, fns);
    this.tally.sentResponses += 1;
  }

  /**
   * Encodes and sends (or queues) one frame. Encoding happens first, so data
   * the codec cannot represent throws here and nothing is registered or sent;
   * sending on a closed connection throws as well.
   */
  _send(frame, fns) {
    const payload = this.codec.encode(frame);
    if (payload.length > this.maxMessageSize) {
      throw new RangeError(`frame of ${payload.length} bytes exceeds the maximum message size ${this.maxMessageSize}`);
    }
    if (this.closed) throw new Error('the connection is closed; nothing was sent');
    if (fns.size > 0) this._keepPending(frame.i, fns);
    // A plain event (no callbacks) is what a lost session sends again on the
    // next one (session.js); responses and calls are void there.
    const plain = fns.size === 0 && frame.e !== undefined && frame.e !== '';
    if (this.buffered) {
      this.queue.push({ payload, plain });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // Everything queued during this event-loop turn (later dialect) or
        // this 5 ms cycle (2016) leaves as one bulk.
        if (this.dialect.cycleMs > 0) setTimeout(() => this._flush(), this.dialect.cycleMs);
        else setImmediate(() => this._flush());
      }
    } else {
      this._writeMessage(payload, plain ? [payload] : []);
    }
  }

  /** Remembers the callbacks of our frame `id` until all are invoked or `t` + 500 ms passes. */
  _keepPending(id, fns) {
    const timer = setTimeout(() => {
      this.pending.delete(id);
    }, this.timeoutSeconds * 1000 + LATENCY_ALLOWANCE_MS);
    timer.unref(); // a forgotten callback must not keep the process alive
    for (const pos of fns.keys()) this.answered.delete(`${id}:${pos}`); // an id used again after wrapping
    this.pending.set(id, { fns, timer });
  }

  /**
   * Buffered mode: sends the queued frames as bulk (array) messages. Normally
   * that is exactly one message; frames are split over several bulks only if
   * one bulk would exceed the maximum message size.
   */
  _flush() {
    this.flushScheduled = false;
    const frames = this.queue;
    this.queue = [];
    if (this.closed || frames.length === 0) return;
    const BULK_OVERHEAD = 16; // array header / brackets, and the map form's `{"b": }`
    let batch = [];
    let plain = [];
    let size = BULK_OVERHEAD;
    for (const f of frames) {
      if (batch.length > 0 && size + f.payload.length + 1 > this.maxMessageSize) {
        this._writeMessage(this.codec.encodeBulk(batch), plain);
        batch = [];
        plain = [];
        size = BULK_OVERHEAD;
      }
      batch.push(f.payload);
      if (f.plain) plain.push(f.payload);
      size += f.payload.length + 1; // +1 for a JSON comma
    }
    this._writeMessage(this.codec.encodeBulk(batch), plain);
  }

  /**
   * Writes one data message (a frame or a bulk). In a session it is numbered
   * and kept until acknowledged; `plain` lists the encoded plain events in it,
   * which a lost session sends again.
   */
  _writeMessage(payload, plain = []) {
    if (this.session) {
      if (!this.closed) this.session.writeData(payload, plain);
      return;
    }
    if (this.closed || this.socket.destroyed) return;
    this.socket.write(lengthPrefix(payload.length));
    this.socket.write(payload);
  }

  // --- incoming ------------------------------------------------------------

  _onData(chunk) {
    if (this.closed) return;
    const socket = this.socket;
    let payloads;
    try {
      payloads = this.reader.push(chunk);
    } catch (err) {
      this.tally.protocolErrors += 1;
      this.log(`${this.label}: framing error, closing connection: ${err.message}`);
      this._closeConnection();
      return;
    }
    if (this.session) this.session.onTraffic();
    for (const payload of payloads) {
      if (this.closed || this.socket !== socket) return;
      if (this.echo) {
        // The bug of nmsg 1.0.2's TCP server, reproduced: the message goes
        // back to its sender as it came, before it is handled.
        this.tally.echoed += 1;
        this._writeMessage(payload);
      }
      let message;
      try {
        message = this.codec.decode(payload);
      } catch (err) {
        this.tally.protocolErrors += 1;
        this.log(`${this.label}: cannot decode a ${payload.length}-byte ${this.codec.name} message, closing connection: ${err.message}`);
        this._closeConnection();
        return;
      }
      // The session takes its extension frames and counts data messages
      // (dropping duplicates); false: not for the router.
      if (this.session && !this.session.onMessage(message)) continue;
      this._onMessage(message);
    }
  }

  /**
   * A message is one frame (map) or a bulk of frames handled in order: an
   * array (later dialect) or the map `{"b": [...]}` (2016), whatever this
   * peer's own dialect. A map with an array `b` and no `i` is such a bulk.
   */
  _onMessage(message) {
    let frames;
    if (Array.isArray(message)) frames = message;
    else if (isPlainMap(message) && Array.isArray(message.b) && message.i === undefined) {
      frames = message.b;
      this.tally.mapBulks += 1;
    }
    if (frames) {
      this.tally.bulks += 1;
      this.tally.bulkFrames += frames.length;
      frames.forEach((frame, idx) => {
        if (this.closed) return;
        this._onFrame(frame, `bulk element ${idx}`);
      });
    } else if (isPlainMap(message)) {
      this._onFrame(message, 'frame');
    } else {
      this.tally.protocolErrors += 1;
      this.log(`${this.label}: protocol error: message is neither a frame (map) nor a bulk (array or {b: array}), got ${describe(message)}; skipped`);
    }
  }

  /** Validates and dispatches one frame; a malformed one is reported and skipped. */
  _onFrame(raw, where) {
    let parsed;
    try {
      parsed = this._parseFrame(raw);
    } catch (err) {
      // Only ProtocolError is expected here; anything else is reported the same way.
      this.tally.protocolErrors += 1;
      this.log(`${this.label}: malformed ${where} skipped: ${err.message}: ${safeInspect(raw)}`);
      return;
    }
    try {
      if (parsed.event !== undefined) this._route(parsed.event, parsed.args);
      else this._onResponse(parsed);
    } catch (err) {
      // A throwing handler or callback must not take the connection down.
      this.tally.handlerFailures += 1;
      this.log(`${this.label}: error in handler for ${parsed.event !== undefined ? `event "${parsed.event}"` : `response to frame ${parsed.r}`}: ${err && err.stack ? err.stack : err}`);
    }
  }

  /**
   * Checks a frame against the contract and rebuilds its full argument list.
   * Throws ProtocolError when it is malformed.
   */
  _parseFrame(raw) {
    if (!isPlainMap(raw)) throw new ProtocolError(`frame must be a map, got ${describe(raw)}`);
    const i = raw.i;
    if (!isUint(i) || i === 0) throw new ProtocolError(`"i" must be a positive integer, got ${safeInspect(i)}`);

    const a = optional(raw, 'a') ?? [];
    if (!Array.isArray(a)) throw new ProtocolError(`"a" must be an array, got ${describe(a)}`);
    const c = optional(raw, 'c') ?? [];
    if (!Array.isArray(c)) throw new ProtocolError(`"c" must be an array, got ${describe(c)}`);
    const total = a.length + c.length;
    for (let k = 0; k < c.length; k++) {
      if (!isUint(c[k])) throw new ProtocolError(`"c" must hold unsigned integers, got ${safeInspect(c[k])}`);
      if (k > 0 && c[k] <= c[k - 1]) throw new ProtocolError(`"c" is not strictly ascending: ${safeInspect(c)}`);
      if (c[k] >= total) throw new ProtocolError(`"c" position ${c[k]} is past the end of ${total} arguments`);
    }
    const t = optional(raw, 't');
    if (t !== undefined && !(typeof t === 'number' && Number.isFinite(t) && t >= 0)) {
      throw new ProtocolError(`"t" must be a non-negative number of seconds, got ${safeInspect(t)}`);
    }

    const e = optional(raw, 'e');
    let r;
    let f;
    if (e !== undefined && typeof e !== 'string') throw new ProtocolError(`"e" must be a string, got ${describe(e)}`);
    // A frame with an empty or absent `e` is a response (the 2016 release
    // writes `e: ""` on responses).
    const event = e === '' ? undefined : e;
    if (event === undefined) {
      r = raw.r;
      f = raw.f;
      const no = e === '' ? 'an empty "e"' : 'no "e"';
      if (!isUint(r) || r === 0) throw new ProtocolError(`frame has ${no}, so it is a response and needs a positive integer "r", got ${safeInspect(r)}`);
      if (!isUint(f)) throw new ProtocolError(`response needs an unsigned integer "f", got ${safeInspect(f)}`);
    }

    // Rebuild: walk positions 0..total-1; a position listed in `c` gets a
    // callback handle, every other position the next element of `a`.
    const args = new Array(total);
    let ia = 0;
    let ic = 0;
    for (let pos = 0; pos < total; pos++) {
      if (ic < c.length && c[ic] === pos) {
        args[pos] = this._remoteCallback(i, pos);
        ic++;
      } else {
        args[pos] = a[ia++];
      }
    }
    return { i, event, args, r, f };
  }

  /**
   * A function standing for callback `pos` of the peer's frame `frameId`.
   * Invoking it sends a response frame; it may be invoked at most once.
   */
  _remoteCallback(frameId, pos) {
    let invoked = false;
    const epoch = this.epoch;
    return (...args) => {
      if (invoked) throw new Error(`callback at position ${pos} of frame ${frameId} was already invoked`);
      if (epoch !== this.epoch) {
        // Its session was lost: the frame it answers is gone with it.
        invoked = true;
        this.tally.lostResponses = (this.tally.lostResponses || 0) + 1;
        this.log(`${this.label}: callback ${pos} of frame ${frameId} invoked after its session was lost; nothing sent`);
        return;
      }
      // Marked only after _respond returns: if the arguments cannot be encoded,
      // nothing was sent and the callback is still usable.
      this._respond(frameId, pos, args);
      invoked = true;
    };
  }

  /** Routing: the named handler, then the wildcard with the name prepended. */
  _route(event, args) {
    const handler = this.handlers.get(event);
    const wildcard = this.handlers.get('*');
    if (!handler && !wildcard) {
      this.tally.unhandled += 1;
      if (!this.quietUnhandled) this.log(`${this.label}: no handler for event "${event}"; dropped`);
      return;
    }
    if (handler) {
      try {
        handler(...args);
      } catch (err) {
        this.tally.handlerFailures += 1;
        this.log(`${this.label}: handler for "${event}" threw: ${err && err.stack ? err.stack : err}`);
      }
    }
    if (wildcard) wildcard(event, ...args);
  }

  /** A response invokes one of our pending callbacks (each at most once). */
  _onResponse({ r, f, args }) {
    const key = `${r}:${f}`;
    const entry = this.pending.get(r);
    const fn = entry && entry.fns.get(f);
    if (!fn) {
      if (this.answered.has(key)) {
        this.tally.duplicates += 1;
        this.log(`${this.label}: second response to frame ${r} position ${f}, which was already answered; ignored`);
      } else {
        this.tally.stray += 1;
        this.log(`${this.label}: response to frame ${r} position ${f}, which is unknown, expired or not a callback; ignored`);
      }
      return;
    }
    this.answered.add(key);
    entry.fns.delete(f);
    if (entry.fns.size === 0) {
      clearTimeout(entry.timer);
      this.pending.delete(r);
    }
    fn(...args);
  }

  /** Closes the current connection: the peer too, unless a session resumes it. */
  _closeConnection() {
    if (this.session) this.session.dropSocket('protocol error');
    else this.close();
  }

  _onClose() {
    if (this.closed) return;
    this.closed = true;
    for (const { timer } of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
    this.queue = [];
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const fn of listeners) fn();
  }
}

function safeInspect(v) {
  return require('node:util').inspect(v, { depth: 4, maxStringLength: 80, maxArrayLength: 20, breakLength: Infinity });
}

module.exports = {
  Peer,
  FrameReader,
  ProtocolError,
  createCodec,
  createTally,
  DIALECTS,
  DIALECT_NAMES,
  LIBRARIES,
  formatReport,
  lengthPrefix,
  DEFAULT_MAX_MESSAGE_SIZE,
  DEFAULT_TIMEOUT_SECONDS,
  MAX_FRAME_ID,
};
