#!/usr/bin/env node
'use strict';
// A Node.js client for the typed interop tests (tests/typed_interop.rs): it
// sends what JavaScript programs send, `Date.now()`, 2^40, -5e9, 2^53 - 1 and a
// character outside the Basic Multilingual Plane, to the typed Rust `Clock`
// server of that test, and checks that every answer is exact.
//
//   node clock-client.js --addr HOST:PORT [--library NAME] [--dialect later|nmsg-tcp|2016]
//
// With --library msgpack-lite-0.1 or msgpack-lite-0.2 every number beyond the
// 32-bit integers travels as a float64 (CESU-8 too with 0.1), as the original's
// releases wrote them. Prints `PASS name` / `FAIL name: why` per check, then
// `N passed, M failed`; exits 1 if any failed.

const net = require('node:net');
const util = require('node:util');
const { Peer, DIALECTS, LIBRARIES } = require('./nmsg');

const CALL_TIMEOUT_MS = 5000; // each unanswered call costs this much

function parseArgs(argv) {
  const opts = { addr: undefined, library: '@msgpack/msgpack', dialect: 'later' };
  for (let k = 0; k < argv.length; k++) {
    const value = () => {
      if (k + 1 >= argv.length) throw new Error(`${argv[k]} needs a value`);
      return argv[++k];
    };
    if (argv[k] === '--addr') opts.addr = value();
    else if (argv[k] === '--library') opts.library = value();
    else if (argv[k] === '--dialect') opts.dialect = value();
    else throw new Error(`unknown argument ${JSON.stringify(argv[k])}`);
  }
  const m = /^([^:]+):(\d{1,5})$/.exec(opts.addr || '');
  if (!m) throw new Error('--addr HOST:PORT is required');
  if (!LIBRARIES.includes(opts.library)) throw new Error(`unknown library ${opts.library}`);
  if (!Object.hasOwn(DIALECTS, opts.dialect)) throw new Error(`unknown dialect ${opts.dialect}`);
  return { ...opts, host: m[1], port: Number(m[2]) };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const socket = await new Promise((resolve, reject) => {
    const s = net.connect({ host: opts.host, port: opts.port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  socket.setNoDelay(true);
  const problems = [];
  const peer = new Peer(socket, {
    codec: 'msgpack',
    library: opts.library,
    dialect: opts.dialect,
    label: 'clock-client',
    log: (msg) => {
      problems.push(msg);
      process.stderr.write(`${msg}\n`);
    },
  });
  const call = (event, ...args) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to ${event} within ${CALL_TIMEOUT_MS} ms`)), CALL_TIMEOUT_MS);
    peer.emit(event, ...args, (...got) => {
      clearTimeout(timer);
      resolve(got);
    });
  });

  const now = Date.now();
  const checks = [
    // An event, then a call on the same connection: frames keep their order.
    ['tick Date.now()', async () => { peer.emit('tick', now); return [await call('last-tick'), [now]]; }],
    ['tick 2^53 - 1', async () => { peer.emit('tick', 2 ** 53 - 1); return [await call('last-tick'), [2 ** 53 - 1]]; }],
    ['add 2^40 + 1', async () => [await call('add', 2 ** 40, 1), [2 ** 40 + 1]]],
    ['add -5e9 + Date.now()', async () => [await call('add', -5e9, now), [now - 5e9]]],
    ['add 2^53 - 2 + 1', async () => [await call('add', 2 ** 53 - 2, 1), [2 ** 53 - 1]]],
    ['echo-text a🌍', async () => [await call('echo-text', 'a\u{1F30D}'), ['a\u{1F30D}']]],
  ];
  let passed = 0;
  let failed = 0;
  for (const [name, run] of checks) {
    try {
      const [got, want] = await run();
      if (!util.isDeepStrictEqual(got, want)) throw new Error(`expected ${util.inspect(want)}, got ${util.inspect(got)}`);
      passed += 1;
      process.stdout.write(`PASS ${name}\n`);
    } catch (err) {
      failed += 1;
      process.stdout.write(`FAIL ${name}: ${err.message}\n`);
    }
  }
  if (problems.length > 0) {
    failed += 1;
    process.stdout.write(`FAIL protocol: ${problems.join('; ')}\n`);
  }
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  peer.close();
  process.exit(failed > 0 ? 1 : 0);
}

main().catch((err) => {
  process.stderr.write(`clock-client crashed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
