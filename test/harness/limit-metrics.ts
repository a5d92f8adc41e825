// Reading a relay's ceiling counters from its /metrics, and its RSS, for the
// limit tests.

import { readFileSync } from 'node:fs';
import { parsePromText } from './prom-text.js';
import type { RelayProc } from './procs.js';

/** The relay's /metrics URL (it must run with `--metrics 127.0.0.1:0`). */
export async function metricsUrl(relay: RelayProc): Promise<string> {
  const l = await relay.proc.waitForLog((x) => x.event === 'metrics-listening', 10_000);
  return `http://127.0.0.1:${l.port as number}/metrics`;
}

/** Every sample of `family` as label-set → value (labels joined `k=v,…`). */
export async function scrape(url: string, family: string): Promise<Map<string, number>> {
  const text = await (await fetch(url)).text();
  const out = new Map<string, number>();
  const f = parsePromText(text).get(family);
  if (f) {
    for (const s of f.samples) out.set(Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(','), s.value);
  }
  return out;
}

/** tunnel_relay_limit_hits_total by limit name. */
export async function limitHits(url: string): Promise<Record<string, number>> {
  const m = await scrape(url, 'tunnel_relay_limit_hits_total');
  const out: Record<string, number> = {};
  for (const [k, v] of m) out[k.replace(/^limit=/, '')] = v;
  return out;
}

/** Resident set size of a process, in MiB (Linux). */
export function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
