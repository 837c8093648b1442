#!/usr/bin/env node
'use strict';
// Runs our JS conformance client against our JS conformance server in all four
// combinations (msgpack/json x unbuffered/buffered), then the wire-vector check
// (by default against the project's copy, tests/data/wire.json):
//
//   node self-test.js [path/to/wire.json]
//
// A combination passes when the client passed every scenario and both peers'
// report lines are clean: no protocol error, stray or duplicate response,
// handler failure or unhandled event, and bulk messages received exactly when
// buffered. Prints one line per combination and a last line `N passed, M failed`;
// exits 1 if any failed.

const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const SCRIPT = path.join(__dirname, 'conformance.js');
const START_TIMEOUT_MS = 10000;
const RUN_TIMEOUT_MS = 180000;
const ERROR_FIELDS = ['protocol_errors', 'stray', 'duplicates', 'handler_failures', 'unhandled'];

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

/** Throws unless a report is clean, with bulks received exactly when buffered. */
function checkReport(side, report, buffered) {
  if (!report) throw new Error(`the ${side} printed no report line`);
  for (const key of ERROR_FIELDS) {
    if (report[key] !== 0) throw new Error(`the ${side} reported ${key}=${report[key]}`);
  }
  if (report.unclosed !== undefined && report.unclosed !== 0) throw new Error(`the ${side} had ${report.unclosed} connections left open`);
  const ok = buffered ? report.bulks > 0 && report.bulk_frames > report.bulks : report.bulks === 0 && report.bulk_frames === 0;
  if (!ok) throw new Error(`the ${side} received ${report.bulks} bulks with ${report.bulk_frames} frames (buffered: ${buffered})`);
}

async function main() {
  let passed = 0;
  let failed = 0;
  for (const codec of ['msgpack', 'json']) {
    for (const buffered of [false, true]) {
      const flags = ['--codec', codec, ...(buffered ? ['--buffered'] : [])];
      const name = `${codec}${buffered ? ' buffered' : ''}`;
      let server;
      let out = '';
      try {
        server = await startServer(flags);
        const client = await runClient(server.addr, flags);
        out = client.out;
        const lines = out.trim().split('\n');
        const summary = lines[lines.length - 2];
        if (client.code !== 0 || !/^\d+ passed, 0 failed$/.test(summary || '')) throw new Error(`client exit code ${client.code}`);
        checkReport('client', parseReport(lines[lines.length - 1]), buffered);
        const end = await finishServer(server);
        server = undefined;
        if (end.length !== 1) throw new Error(`the server printed ${JSON.stringify(end)} at the end instead of one report line`);
        checkReport('server', parseReport(end[0]), buffered);
        passed += 1;
        process.stdout.write(`PASS ${name}: ${summary}\n`);
      } catch (err) {
        failed += 1;
        process.stdout.write(`FAIL ${name}: ${err.message}\n${out.replace(/^/gm, '    ')}`);
      } finally {
        if (server) {
          server.child.removeAllListeners('close');
          server.child.kill();
        }
      }
    }
  }

  const vectorArgs = process.argv[2] ? [process.argv[2]] : [];
  const r = spawnSync(process.execPath, [path.join(__dirname, 'check-vectors.js'), ...vectorArgs], { encoding: 'utf8' });
  const summary = (r.stdout || '').trim().split('\n').pop();
  if (r.status === 0) {
    passed += 1;
    process.stdout.write(`PASS wire vectors: ${summary}\n`);
  } else {
    failed += 1;
    process.stdout.write(`FAIL wire vectors:\n${(r.stdout || '') + (r.stderr || '')}`);
  }

  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
