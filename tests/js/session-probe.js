#!/usr/bin/env node
'use strict';
// A session client driven line by line on stdin, for the tests that break its
// connection at chosen moments (tests/session_interop.rs):
//
//   node session-probe.js --addr HOST:PORT [--codec msgpack|json]
//        [--heartbeat-interval MS] [--heartbeat-timeout MS] [--hello-timeout MS]
//
// It connects with the session extension and prints `READY` once the first
// welcome came. Then, for each line on stdin:
//
//   echo        calls the conformance server's `echo` and prints
//               `ECHO ms=<round trip> <session fields>` once answered
//   emit N      emits N `seq` events (k = 0, 1, ... on from the last), prints `EMITTED N`
//   pending N   emits N `no-such-event` with a callback (never answered), prints `PENDING N`
//   seq-check   prints `SEQ next=<n> errors=<n>` from the server's `seq-check`
//   report      prints the report line
//
// When the session is lost (the server does not have it any more), it prints
// `LOST callbacks=<void> resent=<plain events sent again> dropped=<n>`.
// It exits 0 when stdin ends. Diagnostics go to stderr.

const util = require('node:util');
const { Peer, formatReport } = require('./nmsg');
const { SessionClient, sessionReport } = require('./session');
const { parseAddr } = require('./conformance');

function parse(argv) {
  const opts = { addr: undefined, codec: 'msgpack', session: {} };
  for (let k = 0; k < argv.length; k++) {
    const flag = argv[k];
    const value = () => argv[++k];
    if (flag === '--addr') opts.addr = value();
    else if (flag === '--codec') opts.codec = value();
    else if (flag === '--heartbeat-interval') opts.session.heartbeatIntervalMs = Number(value());
    else if (flag === '--heartbeat-timeout') opts.session.heartbeatTimeoutMs = Number(value());
    else if (flag === '--hello-timeout') opts.session.helloTimeoutMs = Number(value());
    else {
      process.stderr.write(`unknown argument ${JSON.stringify(flag)}\n`);
      process.exit(2);
    }
  }
  if (!opts.addr) {
    process.stderr.write('--addr is required\n');
    process.exit(2);
  }
  return { ...opts, ...parseAddr(opts.addr) };
}

function fields(tally) {
  return Object.entries(sessionReport(tally)).map(([k, v]) => `${k}=${v}`).join(' ');
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const log = (msg) => process.stderr.write(`${msg}\n`);
  const peer = new Peer(null, { codec: opts.codec, label: 'probe', log });
  const client = new SessionClient(peer, { host: opts.host, port: opts.port, ...opts.session });
  peer.session.onLost(({ callbacks, resent, dropped }) => {
    process.stdout.write(`LOST callbacks=${callbacks} resent=${resent} dropped=${dropped}\n`);
  });
  await client.start();
  process.stdout.write('READY\n');
  let seq = 0;
  const call = (event, ...args) => new Promise((resolve) => peer.emit(event, ...args, (...got) => resolve(got)));
  const commands = {
    async echo() {
      const start = Date.now();
      const got = await call('echo', 'probe');
      if (!util.isDeepStrictEqual(got, ['probe'])) throw new Error(`echo answered ${util.inspect(got)}`);
      return `ECHO ms=${Date.now() - start} ${fields(peer.tally)}`;
    },
    async emit(n) {
      for (let k = 0; k < Number(n); k++) {
        if (!peer.session.drained()) await peer.session.whenDrained();
        peer.emit('seq', seq++);
      }
      return `EMITTED ${n}`;
    },
    async pending(n) {
      for (let k = 0; k < Number(n); k++) peer.emit('no-such-event', k, () => {});
      return `PENDING ${n}`;
    },
    async 'seq-check'() {
      const [next, errors] = await call('seq-check');
      return `SEQ next=${next} errors=${errors}`;
    },
    async report() {
      return formatReport(peer.tally, sessionReport(peer.tally));
    },
  };
  let chain = Promise.resolve();
  let buffered = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (text) => {
    buffered += text;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const [name, ...args] = buffered.slice(0, nl).trim().split(/\s+/);
      buffered = buffered.slice(nl + 1);
      if (!name) continue;
      const command = commands[name];
      chain = chain.then(async () => {
        if (!command) throw new Error(`unknown command ${JSON.stringify(name)}`);
        process.stdout.write(`${await command(...args)}\n`);
      });
    }
  });
  process.stdin.on('end', () => {
    chain.then(() => {
      client.stop();
      process.exit(0);
    });
  });
  chain.catch(() => {});
  process.on('unhandledRejection', (err) => {
    log(`probe failed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  });
}

main().catch((err) => {
  process.stderr.write(`probe crashed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
