#!/usr/bin/env node
// `npm start`: the quick path on a local fleet — two relays on the embedded
// store offering quick tunnels under try.localhost, then `tunnel --url` with
// four connections publishing the built-in hello_world origin (or
// `npm start -- --url http://localhost:3000`) at a random hostname, printed.
// Ctrl-C drains and stops everything.

import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, existsSync, openSync, rmSync, writeFileSync, writeSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RELAY = path.join(root, 'packages/relay/dist/cli/cli.js');
const TUNNEL = path.join(root, 'packages/connector/dist/cli/cli.js');
const args = process.argv.slice(2);
const urlArg = args.indexOf('--url');
const origin = urlArg >= 0 ? args[urlArg + 1] : 'hello_world';
const quickZone = 'try.localhost';
const dir = path.join(root, '.demo');
const logs = path.join(dir, 'logs');

function free(port) {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}
async function pick(preferred) {
  return (await free(preferred)) ? preferred : 0;
}

const children = [];
function start(name, cli, argv, env = {}) {
  const out = openSync(path.join(logs, `${name}.log`), 'a');
  const child = spawn(process.execPath, [cli, ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', out] });
  // The JSON log lines come on stdout, which we read to follow start-up; the
  // file gets every one of them too, as they arrive, so `tail -f` works.
  child.stdout.on('data', (d) => writeSync(out, d));
  children.push({ name, child });
  let buf = '';
  const lines = [];
  const waiters = [];
  child.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop();
    for (const l of parts) {
      try {
        const j = JSON.parse(l);
        lines.push(j);
        for (const w of [...waiters]) if (w.pred(j)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(j));
      } catch {}
    }
  });
  child.on('exit', (code) => {
    if (!stopping) {
      console.error(`\n${name} exited (${code}); see ${path.join(logs, name + '.log')}`);
      stop(1);
    }
  });
  return {
    child,
    lines,
    waitFor(pred, ms = 15000) {
      const hit = lines.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        waiters.push(w);
        setTimeout(() => reject(new Error(`${name}: timed out; see ${path.join(logs, name + '.log')}`)), ms).unref();
      });
    },
  };
}
let stopping = false;
async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  process.stdout.write('\nstopping: draining the connector, then the relays...\n');
  const conn = children.filter((c) => c.name === 'connector');
  const relays = children.filter((c) => c.name !== 'connector');
  for (const group of [conn, relays]) {
    await Promise.all(
      group.map(
        ({ child }) =>
          new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', resolve);
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 10000).unref();
          }),
      ),
    );
  }
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

async function main() {
  rmSync(logs, { recursive: true, force: true });
  mkdirSync(logs, { recursive: true });
  const keys = path.join(dir, 'fleet-key.json');
  if (!existsSync(keys)) execFileSync(process.execPath, [RELAY, 'keys', 'generate', '--out', keys], { stdio: 'ignore' });
  // An operator key, so the dashboard works out of the box; kept across runs, never on a command line.
  const operatorKeyFile = path.join(dir, 'operator-key');
  if (!existsSync(operatorKeyFile)) writeFileSync(operatorKeyFile, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600 });
  const operatorKey = readFileSync(operatorKeyFile, 'utf8').trim();
  const store = `file:${path.join(dir, 'store')}`;
  const relays = [];
  for (const [i, base] of [[0, 8080], [1, 8081]]) {
    const ports = { http: await pick(base), connect: await pick(7844 + i * 10), control: await pick(7000 + i), peer: await pick(7845 + i * 10) };
    const r = start(`relay-${'ab'[i]}`, RELAY, [
      'serve', '--id', `relay-${'ab'[i]}`, '--store', store, '--keys', keys,
      '--http', `127.0.0.1:${ports.http}`, '--connect', `127.0.0.1:${ports.connect}`,
      '--control', `127.0.0.1:${ports.control}`, '--peer', `127.0.0.1:${ports.peer}`,
      '--log-format', 'json', '--drain-delay', '100ms', '--operator-key-file', operatorKeyFile,
      '--quick-zone', quickZone,
    ]);
    const l = await r.waitFor((j) => j.event === 'listening');
    const c = await r.waitFor((j) => j.event === 'control-listening');
    relays.push({ ...l.ports, control: c.port });
  }
  // No account, no token: the connector asks relay-a for a quick tunnel.
  const connector = start('connector', TUNNEL, ['--url', origin, '--relay', `http://127.0.0.1:${relays[0].control}`, '--log-format', 'json']);
  const { hostname } = await connector.waitFor((j) => j.event === 'quick-tunnel', 20000);
  const regs = new Set();
  await connector.waitFor((j) => {
    if (j.event === 'registered') regs.add(j.connIndex);
    return regs.size >= 4;
  }, 20000);
  const relayIds = new Set(connector.lines.filter((j) => j.event === 'registered').map((j) => j.relayId));
  const a = relays[0].http;
  const b = relays[1].http;
  process.stdout.write(
    [
      '',
      `  Your quick tunnel is up: ${origin === 'hello_world' ? 'the built-in hello_world origin' : origin} is published at`,
      '',
      `    http://${hostname}:${a}/        (relay-a)`,
      `    http://${hostname}:${b}/        (relay-b)`,
      '',
      `  Try:   curl http://${hostname}:${a}/`,
      `         curl -H 'Host: ${hostname}' http://127.0.0.1:${b}/`,
      '',
      `  (tunnel --url ${origin} --relay http://127.0.0.1:${relays[0].control}: a random hostname, no account; Ctrl-C removes it)`,
      `  4 connections over ${relayIds.size} relays (${[...relayIds].join(', ')}); logs in ${logs}`,
      `  Dashboard:   http://127.0.0.1:${relays[0].control}/dashboard   operator key: ${operatorKey}`,
      `               (kept in ${operatorKeyFile})   Ctrl-C to stop.`,
      '',
    ].join('\n') + '\n',
  );
}

main().catch((e) => {
  console.error(`npm start failed: ${e.message}`);
  void stop(1);
});
