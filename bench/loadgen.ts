// Load-generating child of bench/tunnel.ts (never run by hand). One JSON
// argument; JSON lines on stdout ({"event":"start"} when the measured phase
// begins, {"event":"result",...} at the end).
//
//   rate       open-loop GETs at a fixed rate (undici Pool per target), latency from dispatch to the last body byte
//   ac         closed-loop GETs with autocannon (the fallback when wrk is not installed), one instance per target
//   download   one GET, body counted and dropped: MB/s
//   upload     one POST of N bytes: MB/s until the origin's answer

import http from 'node:http';
import { createRequire } from 'node:module';
import { Pool } from 'undici';

interface Target {
  host: string;
  port: number;
}
interface Params {
  mode: 'rate' | 'ac' | 'download' | 'upload';
  targets: Target[];
  hostHeader?: string;
  path?: string;
  rate?: number;
  seconds?: number;
  warmupSeconds?: number;
  connections?: number;
  bytes?: number;
}

function report(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...o, mono: Number(process.hrtime.bigint() / 1000n) }) + '\n');
}

const now = () => performance.now();

function pctl(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Fixed-rate (open-loop) load: requests are sent on schedule whatever the responses do. */
async function rate(p: Params): Promise<void> {
  const pools = p.targets.map((t) => new Pool(`http://${t.host}:${t.port}`, { connections: p.connections ?? 16, pipelining: 1 }));
  const headers = p.hostHeader ? { host: p.hostHeader } : {};
  const path = p.path ?? '/';
  const r = p.rate!;
  const warm = (p.warmupSeconds ?? 1) * 1000;
  const total = (p.seconds ?? 10) * 1000;
  const lat = new Float64Array(Math.ceil((r * total) / 1000) + 1000);
  let n = 0;
  let errors = 0;
  let issued = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let lateMs = 0; // how far behind schedule the generator ever fell
  let measuring = false;
  const t0 = now();
  // dispatch() with a bare handler: the cheapest way to drive undici (no body stream per response).
  const one = (i: number) => {
    const pool = pools[i % pools.length]!;
    const start = now();
    const counted = measuring;
    let status = 0;
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    pool.dispatch(
      { method: 'GET', path, headers },
      {
        onConnect() {},
        onHeaders(statusCode: number) {
          status = statusCode;
          return true;
        },
        onData() {
          return true;
        },
        onComplete() {
          inFlight--;
          if (status !== 200) errors++;
          else if (counted && n < lat.length) lat[n++] = now() - start;
        },
        onError() {
          inFlight--;
          errors++;
        },
      } as unknown as Parameters<Pool['dispatch']>[1],
    );
  };
  await new Promise<void>((resolve) => {
    let tStart = 0;
    const timer = setInterval(() => {
      const t = now() - t0;
      if (!measuring && t >= warm) {
        measuring = true;
        tStart = now();
        report({ event: 'start' });
      }
      if (t >= warm + total) {
        clearInterval(timer);
        resolve();
        return;
      }
      const due = Math.floor((t * r) / 1000);
      if (due - issued > 1) lateMs = Math.max(lateMs, ((due - issued) * 1000) / r);
      while (issued < due) one(issued++);
      void tStart;
    }, 1);
  });
  // Let the last requests finish.
  const deadline = now() + 5000;
  while (inFlight > 0 && now() < deadline) await new Promise((res) => setTimeout(res, 5));
  const s = lat.slice(0, n).sort();
  report({
    event: 'result',
    mode: 'rate',
    rate: r,
    requests: n,
    errors,
    p50_ms: pctl(s, 50),
    p90_ms: pctl(s, 90),
    p99_ms: pctl(s, 99),
    p999_ms: pctl(s, 99.9),
    max_ms: s.length ? s[s.length - 1] : NaN,
    mean_ms: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
    maxInFlight,
    generatorLagMs: lateMs,
  });
  await Promise.all(pools.map((x) => x.close()));
}

/** autocannon, one instance per target at once (load spread like wrk's threads). */
async function ac(p: Params): Promise<void> {
  // autocannon ships no types; it is CommonJS.
  const autocannon = createRequire(import.meta.url)('autocannon') as (o: Record<string, unknown>) => Promise<Record<string, any>>;
  const per = Math.max(1, Math.floor((p.connections ?? 64) / p.targets.length));
  const headers = p.hostHeader ? { host: p.hostHeader } : {};
  report({ event: 'start' });
  const results = await Promise.all(
    p.targets.map((t) =>
      autocannon({ url: `http://${t.host}:${t.port}${p.path ?? '/'}`, connections: per, duration: p.seconds ?? 10, headers, pipelining: 1 }),
    ),
  );
  // Percentiles of the instances combined by request-weighted mean (an approximation; wrk reports exact merged ones).
  const total = results.reduce((a, r) => a + (r.requests.total as number), 0);
  const w = (f: (r: Record<string, any>) => number) => results.reduce((a, r) => a + f(r) * (r.requests.total as number), 0) / Math.max(1, total);
  report({
    event: 'result',
    tool: 'autocannon',
    requests: total,
    duration_us: Math.max(...results.map((r) => (r.duration as number) * 1e6)),
    errors: results.reduce((a, r) => a + (r.errors as number) + (r.timeouts as number) + (r.non2xx as number), 0),
    p50_us: w((r) => r.latency.p50 * 1000),
    p90_us: w((r) => r.latency.p90 * 1000),
    p99_us: w((r) => r.latency.p99 * 1000),
    mean_us: w((r) => r.latency.average * 1000),
    max_us: Math.max(...results.map((r) => r.latency.max * 1000)),
  });
}

function download(p: Params): Promise<void> {
  const t = p.targets[0]!;
  return new Promise((resolve, reject) => {
    report({ event: 'start' });
    const t0 = now();
    const req = http.get({ host: t.host, port: t.port, path: p.path ?? '/download', headers: p.hostHeader ? { host: p.hostHeader } : {}, agent: false }, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => (n += d.length));
      res.on('end', () => {
        const ms = now() - t0;
        report({ event: 'result', mode: 'download', status: res.statusCode, bytes: n, complete: n === p.bytes, ms, mbps: n / 1e6 / (ms / 1000) });
        resolve();
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function upload(p: Params): Promise<void> {
  const t = p.targets[0]!;
  const total = p.bytes!;
  const chunk = Buffer.alloc(64 * 1024, 'u');
  return new Promise((resolve, reject) => {
    report({ event: 'start' });
    const t0 = now();
    const req = http.request(
      {
        host: t.host,
        port: t.port,
        method: 'POST',
        path: p.path ?? '/upload',
        headers: { ...(p.hostHeader ? { host: p.hostHeader } : {}), 'content-type': 'application/octet-stream', 'content-length': String(total) },
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          const ms = now() - t0;
          let got = -1;
          try {
            got = (JSON.parse(body) as { bytes: number }).bytes;
          } catch {
            /* not the origin's answer */
          }
          report({ event: 'result', mode: 'upload', status: res.statusCode, bytes: total, originGot: got, complete: got === total, ms, mbps: total / 1e6 / (ms / 1000) });
          resolve();
        });
      },
    );
    req.on('error', reject);
    let left = total;
    const go = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          req.once('drain', go);
          return;
        }
      }
      req.end();
    };
    go();
  });
}

const p = JSON.parse(process.argv[2] ?? '{}') as Params;
setTimeout(() => {
  process.stderr.write('loadgen: gave up after 170 s\n');
  process.exit(2);
}, 170_000).unref();
const job = p.mode === 'rate' ? rate(p) : p.mode === 'ac' ? ac(p) : p.mode === 'download' ? download(p) : upload(p);
job.then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`loadgen ${p.mode}: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
