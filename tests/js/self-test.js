#!/usr/bin/env node
'use strict';
// Runs our JS conformance client against our JS conformance server in the
// combinations of COMBINATIONS (codec, buffering, MsgPack library, dialect,
// the 2016 server's echo bug, sessions), then the wire-vector checks (the project's
// copies, tests/data/wire.json and, in the 2016 dialect, wire-2016.json):
//
//   node self-test.js
//
// A combination passes when the client passed every scenario and both peers'
// report lines are clean: no protocol error, stray or duplicate response,
// handler failure or unhandled event (against an echoing server: exactly one
// unhandled event per event the client sent, and nothing else), and bulk
// messages received exactly when the other side buffered, all of them
// {"b": [...]} maps when it spoke the 2016 dialect. Prints one line per
// combination and a last line `N passed, M failed`; exits 1 if any failed.

const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const SCRIPT = path.join(__dirname, 'conformance.js');
const START_TIMEOUT_MS = 10000;
const RUN_TIMEOUT_MS = 180000;
const ERROR_FIELDS = ['protocol_errors', 'stray', 'duplicates', 'handler_failures', 'unhandled'];
const SESSION_ERROR_FIELDS = ['sessions_expired', 'sessions_lost', 'lost_callbacks', 'lost_responses', 'dropped_on_loss', 'replay_overflow', 'session_duplicates', 'heartbeat_timeouts'];

/** Starts `serve` on an ephemeral port; resolves with { child, addr, lines } once it prints LISTENING. */
function startServer(flags) {
  return new Promise((resolve, reject) => {
    // The server ends when its stdin closes, so it never outlives this script.
    const child = spawn(process.execPath, [SCRIPT, 'serve', '--addr', '127.0.0.1:0', '--until-eof', ...flags], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = [];
    let listening = false;
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('server did not print LISTENING in time'));
    }, START_TIMEOUT_MS);
    // 'close', not 'exit': by then every line of its stdout has been read.
    const exited = new Promise((done) => child.on('close', (code) => {
      clearTimeout(timer);
      if (!listening) reject(new Error(`server exited early with code ${code}`));
      done(code);
    }));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^LISTENING (\S+)$/.exec(line);
      if (!listening && m) {
        listening = true;
        clearTimeout(timer);
        resolve({ child, addr: m[1], lines, exited });
      } else lines.push(line);
    });
  });
}

/** Closes the server's stdin and resolves with the lines it printed at the end. */
async function finishServer(server) {
  server.child.stdin.end();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('server did not finish in time')), RUN_TIMEOUT_MS);
  });
  try {
    const code = await Promise.race([server.exited, timeout]);
    if (code !== 0) throw new Error(`server exited with code ${code}`);
    return server.lines;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `connect` to completion; resolves with its exit code and stdout. */
function runClient(addr, flags) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SCRIPT, 'connect', '--addr', addr, ...flags], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** `REPORT key=value ...` -> { key: number }, or null. */
function parseReport(line) {
  if (!line || !line.startsWith('REPORT ')) return null;
  const report = {};
  for (const field of line.slice('REPORT '.length).trim().split(/\s+/)) {
    const [key, value] = field.split('=');
    report[key] = Number(value);
  }
  return report;
}

/**
 * Throws unless a report is clean, with bulks received exactly when the other
 * side buffered, maps when it wrote the 2016 dialect; `echoed`: the other side
 * wrote this one's messages back, so each event it sent came back unhandled.
 */
function checkReport(side, report, { buffered, mapBulks = false, echoed = false, session = false }) {
  if (!report) throw new Error(`the ${side} printed no report line`);
  if (session) {
    for (const key of SESSION_ERROR_FIELDS) {
      if (report[key] !== 0) throw new Error(`the ${side} reported ${key}=${report[key]}, expected 0`);
    }
    if (report.sessions_new !== 1) throw new Error(`the ${side} reported sessions_new=${report.sessions_new}, expected 1`);
  }
  for (const key of ERROR_FIELDS) {
    const want = key === 'unhandled' && echoed ? report.sent_events : 0;
    if (report[key] !== want) throw new Error(`the ${side} reported ${key}=${report[key]}, expected ${want}`);
  }
  const wantMaps = mapBulks ? report.bulks : 0;
  if (report.map_bulks !== wantMaps) throw new Error(`the ${side} received ${report.map_bulks} {b: ...} bulks of ${report.bulks}, expected ${wantMaps}`);
  if (report.unclosed !== undefined && report.unclosed !== 0) throw new Error(`the ${side} had ${report.unclosed} connections left open`);
  const ok = buffered ? report.bulks > 0 && report.bulk_frames > report.bulks : report.bulks === 0 && report.bulk_frames === 0;
  if (!ok) throw new Error(`the ${side} received ${report.bulks} bulks with ${report.bulk_frames} frames (buffered: ${buffered})`);
}

/**
 * name, flags of each side, and what each side must see: whether the other
 * buffered, wrote map bulks (2016), echoed (the server's bug).
 */
const COMBINATIONS = [];
for (const codec of ['msgpack', 'json']) {
  for (const buffered of [false, true]) {
    const flags = ['--codec', codec, ...(buffered ? ['--buffered'] : [])];
    COMBINATIONS.push({ name: `${codec}${buffered ? ' buffered' : ''}`, server: flags, client: flags, serverSees: { buffered }, clientSees: { buffered } });
  }
}
COMBINATIONS.push(
  {
    name: 'msgpack msgpack-lite-0.1',
    server: ['--library', 'msgpack-lite-0.1'],
    client: ['--library', 'msgpack-lite-0.1'],
    serverSees: { buffered: false },
    clientSees: { buffered: false },
  },
  {
    name: 'msgpack msgpack-lite-0.2 buffered',
    server: ['--library', 'msgpack-lite-0.2', '--buffered'],
    client: ['--library', 'msgpack-lite-0.2', '--buffered'],
    serverSees: { buffered: true },
    clientSees: { buffered: true },
  },
  {
    name: '2016 msgpack msgpack-lite-0.1',
    server: ['--dialect', '2016', '--library', 'msgpack-lite-0.1'],
    client: ['--dialect', '2016', '--library', 'msgpack-lite-0.1'],
    serverSees: { buffered: true, mapBulks: true },
    clientSees: { buffered: true, mapBulks: true },
  },
  {
    name: 'nmsg-tcp msgpack-lite-0.2 buffered',
    server: ['--dialect', 'nmsg-tcp', '--library', 'msgpack-lite-0.2', '--buffered'],
    client: ['--dialect', 'nmsg-tcp', '--library', 'msgpack-lite-0.2', '--buffered'],
    serverSees: { buffered: true },
    clientSees: { buffered: true },
  },
  {
    // Sessions (no break here: tests/session_interop.rs cuts them), with a
    // little of the load scenarios.
    name: 'msgpack session',
    server: ['--session'],
    client: ['--session', '--events', '2000', '--requests', '200', '--big', '1'],
    serverSees: { buffered: false, session: true },
    clientSees: { buffered: false, session: true },
  },
  {
    name: 'json buffered session',
    server: ['--session', '--codec', 'json', '--buffered'],
    client: ['--session', '--codec', 'json', '--buffered', '--events', '2000'],
    serverSees: { buffered: true, session: true },
    clientSees: { buffered: true, session: true },
  },
  {
    // A session server serves a plain client as before.
    name: 'session server, plain client',
    server: ['--session'],
    client: [],
    serverSees: { buffered: false },
    clientSees: { buffered: false },
  },
  {
    name: '2016 json echo-bug, later client',
    server: ['--dialect', '2016', '--codec', 'json', '--echo-bug'],
    client: ['--codec', 'json', '--peer-echoes'],
    serverSees: { buffered: false },
    // Its own messages come back as they were (unbuffered), and the server's as maps.
    clientSees: { buffered: true, mapBulks: true, echoed: true },
  },
);

/** Runs one combination; resolves with its line (and the client's output when it failed). */
async function runCombination(combination) {
  const { name } = combination;
  let server;
  let out = '';
  try {
    server = await startServer(combination.server);
    const client = await runClient(server.addr, combination.client);
    out = client.out;
    const lines = out.trim().split('\n');
    const summary = lines[lines.length - 2];
    if (client.code !== 0 || !/^\d+ passed, 0 failed$/.test(summary || '')) throw new Error(`client exit code ${client.code}`);
    checkReport('client', parseReport(lines[lines.length - 1]), combination.clientSees);
    const end = await finishServer(server);
    server = undefined;
    if (end.length !== 1) throw new Error(`the server printed ${JSON.stringify(end)} at the end instead of one report line`);
    checkReport('server', parseReport(end[0]), combination.serverSees);
    return { ok: true, text: `PASS ${name}: ${summary}\n` };
  } catch (err) {
    return { ok: false, text: `FAIL ${name}: ${err.message}\n${out.replace(/^/gm, '    ')}` };
  } finally {
    if (server) {
      server.child.removeAllListeners('close');
      server.child.kill();
    }
  }
}

async function main() {
  let passed = 0;
  let failed = 0;
  // All at once (each pair on its own port), reported in order.
  for (const result of await Promise.all(COMBINATIONS.map(runCombination))) {
    if (result.ok) passed += 1;
    else failed += 1;
    process.stdout.write(result.text);
  }

  for (const [name, args] of [['wire vectors', []], ['wire vectors 2016', ['--dialect', '2016']]]) {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'check-vectors.js'), ...args], { encoding: 'utf8' });
    const summary = (r.stdout || '').trim().split('\n').pop();
    if (r.status === 0) {
      passed += 1;
      process.stdout.write(`PASS ${name}: ${summary}\n`);
    } else {
      failed += 1;
      process.stdout.write(`FAIL ${name}:\n${(r.stdout || '') + (r.stderr || '')}`);
    }
  }

  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
