#!/usr/bin/env node
'use strict';
// Checks our codecs and framing against the wire vectors recorded from the
// original JavaScript implementation (by default the project's copy,
// tests/data/wire.json):
//
//   node check-vectors.js [path/to/wire.json]
//   node check-vectors.js --dialect 2016 [--library msgpack-lite-0.1] [path]
//
// With --dialect 2016 the default file is tests/data/wire-2016.json (the seed's
// release) and the library msgpack-lite-0.1, what that release wrote with. That
// release sends every message as a {"b": [...]} bulk, so a vector of one frame
// is checked byte for byte as the one frame of such a bulk.
//
// For every vector with both forms: the MsgPack payload and the JSON payload
// must decode to deep-equal values, and re-encoding that value with either of
// our codecs must decode back to the same value. Frames are also run through
// the Peer's frame parser (via a fake socket) to check they are accepted, and
// the same calls made through our Peer must write byte-identical payloads
// (MsgPack hex and JSON text). The stream vector goes through FrameReader. Prints PASS/FAIL lines and a summary.

const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const { EventEmitter } = require('node:events');
const { createCodec, FrameReader, Peer, DIALECTS, LIBRARIES } = require('./nmsg');

function usage(problem) {
  process.stderr.write(`${problem}\nusage: node check-vectors.js [--dialect later|nmsg-tcp|2016] [--library NAME] [path/to/vectors.json]\n`);
  process.exit(2);
}

const opts = { dialect: 'later', library: undefined, file: undefined };
for (let k = 2; k < process.argv.length; k++) {
  const arg = process.argv[k];
  if (arg === '--dialect' && k + 1 < process.argv.length) opts.dialect = process.argv[++k];
  else if (arg === '--library' && k + 1 < process.argv.length) opts.library = process.argv[++k];
  else if (!arg.startsWith('--') && opts.file === undefined) opts.file = arg;
  else usage(`unknown argument ${JSON.stringify(arg)}`);
}
if (!Object.hasOwn(DIALECTS, opts.dialect)) usage(`unknown dialect ${JSON.stringify(opts.dialect)}`);
const is2016 = opts.dialect === '2016';
const library = opts.library || (is2016 ? 'msgpack-lite-0.1' : '@msgpack/msgpack');
if (!LIBRARIES.includes(library)) usage(`unknown library ${JSON.stringify(library)}`);
const file = opts.file || path.join(__dirname, '..', 'data', is2016 ? 'wire-2016.json' : 'wire.json');
const { vectors } = JSON.parse(fs.readFileSync(file, 'utf8'));
if (!Array.isArray(vectors) || vectors.length === 0) {
  process.stderr.write(`${file} holds no vectors\n`);
  process.exit(2);
}

const bulkForm = DIALECTS[opts.dialect].bulkForm;
const msgpack = createCodec('msgpack', { library, bulkForm });
const json = createCodec('json', { bulkForm });
const inspect = (v) => util.inspect(v, { depth: 8, breakLength: Infinity });

/** A stand-in socket so Peer can parse frames without a network. */
class FakeSocket extends EventEmitter {
  constructor() {
    super();
    this.destroyed = false;
    this.written = [];
  }
  write(b) { this.written.push(b); return true; }
  destroy() { this.destroyed = true; }
  setNoDelay() {}
}

/** The frames of a message: a bulk's (array or {b: [...]}), or the message itself. */
function framesOf(message) {
  if (Array.isArray(message)) return message;
  if (message && Array.isArray(message.b) && message.i === undefined) return message.b;
  return [message];
}

function isBulk(message) {
  return framesOf(message).length !== 1 || framesOf(message)[0] !== message;
}

/** Feeds a decoded message to a Peer and returns what it reported. */
function parseWithPeer(message) {
  const logs = [];
  const peer = new Peer(new FakeSocket(), { codec: 'msgpack', dialect: opts.dialect, log: (m) => logs.push(m) });
  const seen = [];
  peer.on('*', (name, ...args) => seen.push({ name, args }));
  const frames = framesOf(message);
  const parsed = frames.map((f) => peer._parseFrame(f)); // throws ProtocolError if malformed
  return { parsed, logs, seen };
}

/**
 * Re-sends the same frames through our own Peer (same ids, same calls) and
 * returns the payload bytes it writes. Our frame builder writes keys in the
 * original's order, so the bytes should equal the recorded ones exactly.
 */
function reproduce(message, codecName) {
  const socket = new FakeSocket();
  const bulk = isBulk(message);
  const peer = new Peer(socket, { codec: codecName, library, dialect: opts.dialect, buffered: bulk, log: () => {} });
  for (const frame of framesOf(message)) {
    // Rebuild the full argument list with placeholder functions at the `c` positions.
    const a = frame.a || [];
    const c = frame.c || [];
    const args = [];
    for (let pos = 0, ia = 0; pos < a.length + c.length; pos++) args.push(c.includes(pos) ? () => {} : a[ia++]);
    peer.lastId = frame.i - 1; // the next id is the recorded one
    if (frame.e !== undefined && frame.e !== '') peer.emit(frame.e, ...args);
    else peer._respond(frame.r, frame.f, args);
  }
  if (peer.buffered) peer._flush(); // normally run by setImmediate or the 5 ms cycle
  const written = Buffer.concat(socket.written);
  const length = written.readUInt32BE(0);
  if (written.length !== 4 + length) throw new Error(`${codecName}: wrote ${written.length} bytes for one message of ${length}`);
  for (const p of peer.pending.values()) clearTimeout(p.timer);
  return written.subarray(4);
}

let passed = 0;
let failed = 0;
function result(name, err) {
  if (err) {
    failed += 1;
    process.stdout.write(`FAIL ${name}: ${err.message}\n`);
  } else {
    passed += 1;
    process.stdout.write(`PASS ${name}\n`);
  }
}

for (const v of vectors) {
  try {
    if (v.stream_hex !== undefined) {
      const reader = new FrameReader();
      const bytes = Buffer.from(v.stream_hex, 'hex');
      // Feed byte by byte: nothing may come out before the last byte arrives.
      let out = [];
      for (let k = 0; k < bytes.length; k++) {
        const got = reader.push(bytes.subarray(k, k + 1));
        if (got.length && k !== bytes.length - 1) throw new Error(`message emitted early, after ${k + 1} bytes`);
        out = out.concat(got);
      }
      if (out.length !== 1 || out[0].toString('hex') !== '616263') throw new Error(`framing gave ${inspect(out)}`);
    } else {
      const fromMsgpack = msgpack.decode(Buffer.from(v.msgpack_hex, 'hex'));
      const fromJson = json.decode(Buffer.from(v.json, 'utf8'));
      if (!util.isDeepStrictEqual(fromMsgpack, fromJson)) {
        throw new Error(`msgpack decodes to ${inspect(fromMsgpack)}, json to ${inspect(fromJson)}`);
      }
      // Our encoders' output must decode to the same meaning.
      for (const codec of [msgpack, json]) {
        const again = codec.decode(codec.encode(fromMsgpack));
        if (!util.isDeepStrictEqual(again, fromMsgpack)) throw new Error(`${codec.name} round-trip gave ${inspect(again)}`);
      }
      // And the frames must pass our frame validation, as what they are: a
      // frame with `r` and an empty or absent `e` is a response.
      const { parsed } = parseWithPeer(fromMsgpack);
      framesOf(fromMsgpack).forEach((frame, k) => {
        const want = frame.e ? `event ${frame.e}` : `response to ${frame.r}:${frame.f}`;
        const got = parsed[k].event !== undefined ? `event ${parsed[k].event}` : `response to ${parsed[k].r}:${parsed[k].f}`;
        if (got !== want) throw new Error(`frame ${k} read as ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
      });
      // Byte-exact: the same calls through our Peer produce the recorded
      // payloads; a peer that always buffers (2016) sends a single frame as
      // the one frame of a bulk.
      const wrap = !isBulk(fromMsgpack) && DIALECTS[opts.dialect].alwaysBuffered;
      const wantMsgpack = wrap ? msgpack.encodeBulk([Buffer.from(v.msgpack_hex, 'hex')]).toString('hex') : v.msgpack_hex;
      const ourMsgpack = reproduce(fromMsgpack, 'msgpack').toString('hex');
      if (ourMsgpack !== wantMsgpack) throw new Error(`our msgpack bytes ${ourMsgpack} (${library}) differ from ${wantMsgpack}`);
      const wantJson = wrap ? json.encodeBulk([Buffer.from(v.json, 'utf8')]).toString('utf8') : v.json;
      const ourJson = reproduce(fromMsgpack, 'json').toString('utf8');
      if (ourJson !== wantJson) throw new Error(`our json ${ourJson} differs from ${wantJson}`);
    }
    result(v.name);
  } catch (err) {
    result(v.name, err);
  }
}

process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed > 0 ? 1 : 0);
