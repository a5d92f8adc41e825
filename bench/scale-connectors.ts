// Child of bench/scale.ts (never run by hand): many simulated connectors in
// one process. Each tunnel runs the connector's own HAManager — the real
// RelayConnection, Session and WebSocket, the real reconnect back-off — with
// a stream handler that refuses streams (the scale bench sends no requests).
//
// One JSON argument {tokens: string[], relays: string[], conns: number};
// JSON lines on stdout: {"event":"status", ready, full, ...} whenever the
// counts change (at most every 100 ms), and every connection event of the
// managers bucketed per 100 ms in {"event":"events", ...} lines, so the parent
// can see the dial rate after a relay dies (is the back-off jittered?).

import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { ROOT } from './common.js';

type HaModule = typeof import('../packages/connector/src/ha/ha-manager.js');

interface Params {
  tokens: string[];
  relays: string[];
  conns: number;
}

const p = JSON.parse(process.argv[2] ?? '{}') as Params;
const { HAManager } = (await import(pathToFileURL(path.join(ROOT, 'packages/connector/dist/ha/ha-manager.js')).href)) as HaModule;
const log = pino({ level: 'silent' });
const mono = () => Number(process.hrtime.bigint() / 1000n);

const managers = p.tokens.map(
  (token, i) =>
    new HAManager({
      relays: p.relays,
      haConnections: p.conns,
      token,
      connectorId: `scale-${process.pid}-${i}`,
      version: 'bench-scale',
      log,
      onStream: (s) => s.destroy(),
      gracePeriodMs: 1_000,
    }),
);

// Connection events per 100 ms bucket: dials, registrations, losses, failed dials.
const buckets = new Map<number, Record<string, number>>();
let dirty = true;
for (const m of managers) {
  m.on('connection', (e) => {
    const b = Math.floor(mono() / 100_000);
    const rec = buckets.get(b) ?? {};
    rec[e.event] = (rec[e.event] ?? 0) + 1;
    if (e.reason) rec[`${e.event}:${e.reason}`] = (rec[`${e.event}:${e.reason}`] ?? 0) + 1;
    // Which relay (index in the list): after a kill, failures against the survivor are the herd's cost.
    const k = `${e.event}@${p.relays.indexOf(e.relayUrl)}`;
    rec[k] = (rec[k] ?? 0) + 1;
    buckets.set(b, rec);
    dirty = true;
  });
  m.on('change', () => (dirty = true));
}

const report = () => {
  if (buckets.size > 0) {
    process.stdout.write(JSON.stringify({ event: 'events', buckets: Object.fromEntries(buckets) }) + '\n');
    buckets.clear();
  }
  if (!dirty) return;
  dirty = false;
  let ready = 0;
  let full = 0;
  const perRelay: Record<string, number> = {};
  for (const m of managers) {
    const r = m.readyConnections;
    ready += r;
    if (r === p.conns) full++;
    for (const c of m.connections()) if (c.state === 'registered') perRelay[c.relayId] = (perRelay[c.relayId] ?? 0) + 1;
  }
  process.stdout.write(JSON.stringify({ event: 'status', ready, full, tunnels: managers.length, perRelay, mono: mono() }) + '\n');
};
setInterval(report, 100);

process.stdout.write(JSON.stringify({ event: 'start', mono: mono() }) + '\n');
for (const m of managers) m.start();

const stop = () => {
  for (const m of managers) m.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
