// The h2load row of `npm run bench` (and BENCH_ONLY=h2load alone): HTTP/2
// load from nghttp2's h2load, `-n 20000 -c 16 -m 10` (16 connections, 10
// streams each), GET 1 KiB:
//   direct: the origin's own cleartext HTTP/2 listener (prior knowledge);
//   tunnel: the relay's HTTPS listener over h2 (TLS, ALPN), through the
//           connector (4 connections) to the origin's HTTP/1.1 listener.
// A fleet of its own (one relay with a self-signed certificate), so the
// other rows keep their plain-HTTP relays. Skipped, with the reason, when
// h2load or openssl is absent (Debian: nghttp2-client).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BENCH_DIST, Child, ROOT, cpuMicros, fmt, run, waitUntil } from './common.js';

const RELAY_CLI = path.join(ROOT, 'packages/relay/dist/cli/cli.js');
const CONNECTOR_CLI = path.join(ROOT, 'packages/connector/dist/cli/cli.js');
const NODE = process.execPath;
const HOST = 'app.test';
const ARGS = ['-n', '20000', '-c', '16', '-m', '10'];

export interface H2loadRun {
  requests: number;
  succeeded: number;
  reqPerSec: number;
}

export type H2loadResult =
  | { readonly skipped: string }
  | { readonly direct: H2loadRun; readonly tunnel: H2loadRun; readonly cpuUsPerRequest: { relay: number; connector: number; origin: number } };

function missing(): string | null {
  if (spawnSync('h2load', ['--version']).status !== 0) return 'h2load is not installed (apt-get install nghttp2-client)';
  if (spawnSync('openssl', ['version']).status !== 0) return 'openssl is not installed (the relay needs a certificate)';
  return null;
}

/** h2load's summary: "finished in 1.23s, 16260.16 req/s, ..." and "requests: N total, N started, N done, N succeeded, ...". */
function parse(out: string): H2loadRun {
  const rate = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out);
  const counts = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded/.exec(out);
  if (!rate || !counts) throw new Error(`h2load output not understood:\n${out.slice(-800)}`);
  return { reqPerSec: Number(rate[1]), requests: Number(counts[1]), succeeded: Number(counts[2]) };
}

async function h2load(args: string[]): Promise<H2loadRun> {
  const r = await run('h2load', 'h2load', args, { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`h2load exited ${String(r.code)}: ${r.stderr.slice(-800)}`);
  return parse(r.stdout);
}

export async function h2loadBench(log: (s: string) => void): Promise<H2loadResult> {
  const why = missing();
  if (why) return { skipped: why };
  const tmp = mkdtempSync(path.join(tmpdir(), 'tunnel-bench-h2-'));
  const started: Child[] = [];
  try {
    const cert = path.join(tmp, 'cert.pem');
    const key = path.join(tmp, 'key.pem');
    const ssl = await run('openssl', 'openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', `/CN=${HOST}`, '-addext', `subjectAltName=DNS:${HOST},IP:127.0.0.1`, '-keyout', key, '-out', cert]);
    if (ssl.code !== 0) throw new Error(`openssl failed: ${ssl.stderr}`);
    const keys = path.join(tmp, 'fleet-key.json');
    if ((await run('keys generate', NODE, [RELAY_CLI, 'keys', 'generate', '--out', keys])).code !== 0) throw new Error('keys generate failed');
    const store = `file:${path.join(tmp, 'store')}`;

    const origin = new Child('origin', NODE, [path.join(BENCH_DIST, 'origin.js')], { env: { BENCH_ORIGIN_H2C: '1' } });
    started.push(origin);
    const originPort = (await origin.waitFor((l) => l.event === 'listening', 15_000, 'listening')).port as number;
    const h2cPort = (await origin.waitFor((l) => l.event === 'listening-h2c', 15_000, 'listening-h2c')).port as number;

    const relay = new Child('relay-h2', NODE, [RELAY_CLI, 'serve', '--id', 'bench-relay-h2', '--store', store, '--keys', keys, '--https', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off',
      '--tls-cert', cert, '--tls-key', key, '--log-format', 'json', '--log-level', 'info', '--drain-timeout', '2s']);
    started.push(relay);
    const ports = (await relay.waitFor((x) => x.event === 'listening', 20_000, 'listening')).ports as { https: number; connect: number };
    const relayUrl = `wss://127.0.0.1:${ports.connect}`;
    const t = await run('tunnel create', NODE, [RELAY_CLI, 'tunnel', 'create', 'bench-h2', '--zone', HOST, '--hostname', HOST, '--store', store, '--keys', keys, '--relay-url', relayUrl]);
    if (t.code !== 0) throw new Error(`tunnel create failed: ${t.stderr}`);
    const connector = new Child('connector-h2', NODE, [CONNECTOR_CLI, 'run', '--url', `http://127.0.0.1:${originPort}`, '--relay', relayUrl, '--ha-connections', '4', '--log-format', 'json', '--loglevel', 'info', '--grace-period', '2s', '--no-discover'], {
      env: { TUNNEL_TOKEN: t.stdout.trim(), NODE_EXTRA_CA_CERTS: cert },
    });
    started.push(connector);
    await waitUntil(() => connector.count((l) => l.event === 'registered') >= 4 || !connector.running, 20_000, 'connector: 4 registered connections');
    if (!connector.running) throw new Error(`connector exited: ${connector.stderr}`);

    const direct = [`http://127.0.0.1:${h2cPort}/`];
    // SNI and :authority are the tunnel's hostname; the TCP connection goes to the relay.
    const tunnel = ['--connect-to', `127.0.0.1:${ports.https}`, `https://${HOST}:${ports.https}/`];
    // Warm-up (JIT, connections, the route in the relay's table), then the measured runs.
    await h2load(['-n', '2000', '-c', '16', '-m', '10', ...direct]);
    await h2load(['-n', '2000', '-c', '16', '-m', '10', ...tunnel]);
    const d = await h2load([...ARGS, ...direct]);
    log(`  h2load direct (h2c): ${fmt(d.reqPerSec)} req/s, ${d.succeeded}/${d.requests} succeeded`);
    const pids = { relay: relay.pid, connector: connector.pid, origin: origin.pid };
    const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMicros(pid) ?? NaN]));
    const tu = await h2load([...ARGS, ...tunnel]);
    const cpu = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, ((cpuMicros(pid) ?? NaN) - before[k]!) / tu.succeeded])) as { relay: number; connector: number; origin: number };
    log(`  h2load tunnel (h2 over TLS): ${fmt(tu.reqPerSec)} req/s, ${tu.succeeded}/${tu.requests} succeeded; CPU µs/request relay ${fmt(cpu.relay, 1)}, connector ${fmt(cpu.connector, 1)}`);
    return { direct: d, tunnel: tu, cpuUsPerRequest: cpu };
  } finally {
    for (const c of [...started].reverse()) await c.stop(3_000);
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The rows for the bench table (measurement, direct, nginx ×2, tunnel, tunnel / direct, ...). */
export function h2loadRows(r: H2loadResult): string[][] {
  const what = `(f) h2load ${ARGS.join(' ')}, GET 1 KiB over HTTP/2`;
  if ('skipped' in r) return [[`${what}: skipped (${r.skipped})`, '', '', '', '', '', '', '']];
  const relayConnector = r.cpuUsPerRequest.relay + r.cpuUsPerRequest.connector;
  return [
    [`${what}: req/s (direct: origin h2c; tunnel: relay h2 over TLS)`, fmt(r.direct.reqPerSec), '–', fmt(r.tunnel.reqPerSec), `${(r.tunnel.reqPerSec / r.direct.reqPerSec).toFixed(2)}×`, '', '', ''],
    ['(f) CPU µs/request over h2: relay + connector', '', '', `${fmt(relayConnector, 1)} (${fmt(r.cpuUsPerRequest.relay, 1)} + ${fmt(r.cpuUsPerRequest.connector, 1)})`, '', '', '', ''],
  ];
}
