#!/usr/bin/env node
'use strict';
// Runs our JS conformance client against our JS conformance server in all four
// combinations (msgpack/json x unbuffered/buffered), and the wire-vector check
// when a wire.json path is given:
//
//   node self-test.js [/path/to/shared/vectors/wire.json]
//
// Prints one line per combination and a last line `N passed, M failed`;
// exits 1 if any failed.

const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const SCRIPT = path.join(__dirname, 'conformance.js');
const START_TIMEOUT_MS = 10000;

/** Starts `serve` on an ephemeral port; resolves with { child, addr } once it prints LISTENING. */
function startServer(flags) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, 'serve', '--addr', '127.0.0.1:0', ...flags], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('server did not print LISTENING in time'));
    }, START_TIMEOUT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited early with code ${code}`));
    });
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^LISTENING (\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ child, addr: m[1] });
      }
    });
  });
}

/** Runs `connect` to completion; resolves with its exit code and stdout. */
function runClient(addr, flags) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SCRIPT, 'connect', '--addr', addr, ...flags], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', (code) => resolve({ code, out }));
  });
}

async function main() {
  let passed = 0;
  let failed = 0;
  for (const codec of ['msgpack', 'json']) {
    for (const buffered of [false, true]) {
      const flags = ['--codec', codec, ...(buffered ? ['--buffered'] : [])];
      const name = `${codec}${buffered ? ' buffered' : ''}`;
      let server;
      try {
        server = await startServer(flags);
        const { code, out } = await runClient(server.addr, flags);
        const summary = out.trim().split('\n').pop();
        if (code === 0) {
          passed += 1;
          process.stdout.write(`PASS ${name}: ${summary}\n`);
        } else {
          failed += 1;
          process.stdout.write(`FAIL ${name}: exit code ${code}\n${out.replace(/^/gm, '    ')}`);
        }
      } catch (err) {
        failed += 1;
        process.stdout.write(`FAIL ${name}: ${err.message}\n`);
      } finally {
        if (server) {
          server.child.removeAllListeners('exit');
          server.child.kill();
        }
      }
    }
  }

  const vectors = process.argv[2];
  if (vectors) {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'check-vectors.js'), vectors], { encoding: 'utf8' });
    const summary = (r.stdout || '').trim().split('\n').pop();
    if (r.status === 0) {
      passed += 1;
      process.stdout.write(`PASS wire vectors: ${summary}\n`);
    } else {
      failed += 1;
      process.stdout.write(`FAIL wire vectors:\n${(r.stdout || '') + (r.stderr || '')}`);
    }
  }

  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
