// A steady, bounded load of GETs and POSTs spread over the relays, sent the
// way a load balancer in front of a fleet would: only to relays whose
// /healthz is 200, a fresh connection per request, a refused connect moved
// to the next relay (nothing was sent). Everything else that is not the
// expected answer is a failure -- including a GET that had to be retried:
// a retry hides a relay that cut a request it should have finished, so it is
// allowed only where the test says a relay dies under requests (kill -9), and
// even then it is counted (stats.retries).

import { request } from 'undici';
import type { RelayProc } from './procs.js';

export interface LoadFailure {
  method: string;
  relay: string;
  status?: number;
  error?: string;
  body?: string;
}

export interface LoadStats {
  ok: number;
  failures: LoadFailure[];
  /** GETs that failed and were retried on another relay (only with retryGets). */
  retries: LoadFailure[];
  byMethod: Record<string, number>;
}

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT']);

export class HealthView {
  private up = new Map<string, boolean>();
  private timer: NodeJS.Timeout;
  private rr = 0;

  constructor(private readonly relays: () => RelayProc[]) {
    this.timer = setInterval(() => void this.poll(), 100);
    void this.poll();
  }

  private async poll(): Promise<void> {
    await Promise.all(
      this.relays().map(async (r) => {
        if (!r.controlUrl) return this.up.set(r.id, true);
        try {
          const res = await request(`${r.controlUrl}/healthz`, { headersTimeout: 1_000, bodyTimeout: 1_000, reset: true });
          await res.body.dump();
          this.up.set(r.id, res.statusCode === 200);
        } catch {
          this.up.set(r.id, false);
        }
      }),
    );
  }

  /** Relays to try for one request, healthy first. */
  order(): RelayProc[] {
    const all = this.relays();
    const k = this.rr++ % Math.max(1, all.length);
    const rotated = [...all.slice(k), ...all.slice(0, k)];
    return [...rotated.filter((r) => this.up.get(r.id) !== false), ...rotated.filter((r) => this.up.get(r.id) === false)];
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export function startLoad(o: {
  health: HealthView;
  host: string;
  concurrency: number;
  maxMs: number;
  timeoutMs?: number;
  /** Retry a failed GET once on another relay, as a balancer would when a relay dies (kill -9 only). */
  retryGets?: boolean;
}): { stop(): Promise<LoadStats>; stats: LoadStats } {
  const stats: LoadStats = { ok: 0, failures: [], retries: [], byMethod: {} };
  const deadline = Date.now() + o.maxMs;
  let running = true;
  const timeout = o.timeoutMs ?? 15_000;
  let seq = 0;

  const one = async (method: 'GET' | 'POST'): Promise<void> => {
    const n = seq++;
    const body = method === 'POST' ? `payload-${n}-${'x'.repeat(n % 2000)}` : undefined;
    let retriedGet = false;
    const order = o.health.order();
    for (let i = 0; i < order.length; i++) {
      const relay = order[i]!;
      try {
        const r = await request(`${relay.publicUrl}/load/${n}`, {
          method,
          headers: { host: o.host, ...(body ? { 'content-type': 'text/plain' } : {}) },
          body,
          reset: true,
          headersTimeout: timeout,
          bodyTimeout: timeout,
        });
        const text = await r.body.text();
        const want = method === 'POST' ? `echo:${body}` : `get:/load/${n}`;
        stats.byMethod[method] = (stats.byMethod[method] ?? 0) + 1;
        if (r.statusCode === 200 && text === want) stats.ok++;
        else stats.failures.push({ method, relay: relay.id, status: r.statusCode, body: text.slice(0, 200) });
        return;
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        if (CONNECT_ERRORS.has(code)) continue; // the balancer moves on: nothing was sent
        if (method === 'GET' && o.retryGets && !retriedGet) {
          retriedGet = true;
          stats.retries.push({ method, relay: relay.id, error: `${code} ${(e as Error).message}` });
          continue;
        }
        stats.failures.push({ method, relay: relay.id, error: `${code} ${(e as Error).message}` });
        return;
      }
    }
    stats.failures.push({ method, relay: '-', error: 'no relay accepted the connection' });
  };

  const workers = Array.from({ length: o.concurrency }, async (_, w) => {
    let i = 0;
    while (running && Date.now() < deadline) await one(i++ % 2 === w % 2 ? 'GET' : 'POST');
  });
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(workers);
      return stats;
    },
  };
}

/**
 * The origin the load expects: GET answers its path, POST echoes its body,
 * each after 0-40 ms (by request number), so that requests are in flight
 * when a relay drains or dies -- an origin that answers instantly leaves a
 * drain nothing to wait for.
 */
export function loadOriginHandler(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
  const n = Number(/\/load\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
  const answer = (body: string) => setTimeout(() => res.end(body), (n * 7) % 41);
  if (req.method === 'POST') {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => answer(`echo:${Buffer.concat(parts).toString()}`));
    return;
  }
  answer(`get:${req.url}`);
}
