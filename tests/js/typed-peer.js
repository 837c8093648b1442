#!/usr/bin/env node
'use strict';
// A JavaScript server for the typed interop tests (tests/typed_interop.rs): it
// serves the events of the `Greeter` and `Lobby` traits of tests/typed_support
// the way a Node.js program would write them, error-first callbacks included.
//
//   node typed-peer.js --addr HOST:PORT [--codec msgpack|json]
//
// Prints `LISTENING HOST:PORT` (the real port, also for port 0) once it
// listens, then serves every connection until killed. Everything the protocol
// layer reports (protocol errors, stray or duplicate responses, events with no
// handler, handlers that threw) is written to stderr and kept per connection;
// the event `problems` answers with that list, so a test can require it empty.

const net = require('node:net');
const { Peer } = require('./nmsg');

function parseArgs(argv) {
  const opts = { addr: undefined, codec: 'msgpack' };
  for (let k = 0; k < argv.length; k++) {
    if (argv[k] === '--addr' && k + 1 < argv.length) opts.addr = argv[++k];
    else if (argv[k] === '--codec' && k + 1 < argv.length) opts.codec = argv[++k];
    else throw new Error(`unknown argument ${JSON.stringify(argv[k])}`);
  }
  const m = /^([^:]+):(\d{1,5})$/.exec(opts.addr || '');
  if (!m) throw new Error('--addr HOST:PORT is required');
  if (opts.codec !== 'msgpack' && opts.codec !== 'json') throw new Error(`unknown codec ${opts.codec}`);
  return { ...opts, host: m[1], port: Number(m[2]) };
}

function expectFn(fn, event, what) {
  if (typeof fn !== 'function') throw new TypeError(`${event}: ${what} is not a callback`);
}

/** The handlers of one connection. */
function serve(peer, problems) {
  const names = [];

  peer.on('hello', (name, ...rest) => {
    if (typeof name !== 'string' || rest.length !== 0) throw new TypeError(`hello: expected one string, got ${JSON.stringify([name, ...rest])}`);
    names.push(name);
  });

  peer.on('count', (cb) => {
    expectFn(cb, 'count', 'first argument');
    cb(names.length);
  });

  peer.on('ping', (cb) => {
    expectFn(cb, 'ping', 'first argument');
    setImmediate(() => cb('pong'));
  });

  // Error-first, as Node writes it: cb(null, value) or cb(error).
  peer.on('div', (a, b, cb) => {
    expectFn(cb, 'div', 'third argument');
    if (b === 0) cb('division by zero');
    else cb(null, a / b);
  });

  // Error-first without a value: cb(null) or cb(error).
  peer.on('check', (ok, cb) => {
    expectFn(cb, 'check', 'second argument');
    if (ok) cb(null);
    else cb('not ok');
  });

  peer.on('pick-hand', (hands) => {
    expectFn(hands, 'pick-hand', 'first argument');
    const hand = (colour) => (reply) => {
      expectFn(reply, 'pick-hand hand', 'first argument');
      reply(colour);
    };
    hands(hand('white'), hand('black'));
  });

  peer.on('multi', (first, value, last) => {
    expectFn(first, 'multi', 'first argument');
    expectFn(last, 'multi', 'third argument');
    last(`last ${value}`);
    first(`first ${value}`);
  });

  // Lobby: calls the client's own `welcome` (its Guest service) before answering.
  peer.on('join', (name, cb) => {
    expectFn(cb, 'join', 'second argument');
    peer.emit('welcome', `welcome, ${name}`, (answer) => {
      if (typeof answer === 'string') cb(null, answer);
      else cb(`welcome answered ${JSON.stringify(answer)}`);
    });
  });

  peer.on('problems', (cb) => {
    expectFn(cb, 'problems', 'first argument');
    cb(problems.slice());
  });
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  let connections = 0;
  const server = net.createServer((socket) => {
    const problems = [];
    const label = `typed-peer connection ${++connections}`;
    const log = (msg) => {
      problems.push(msg);
      process.stderr.write(`${msg}\n`);
    };
    const peer = new Peer(socket, { codec: opts.codec, label, log });
    serve(peer, problems);
  });
  server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address();
    process.stdout.write(`LISTENING ${address}:${port}\n`);
  });
}

main();
