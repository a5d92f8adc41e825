// Reads a V8 .cpuprofile (from `node --cpu-prof`) and ranks functions by self
// time, so a benchmark can say where a process spends its CPU.

import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './common.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTimeRow {
  fn: string;
  where: string;
  selfMs: number;
  /** Share of the busy (non-idle) time. */
  share: number;
}

export interface ProfileSummary {
  file: string;
  wallMs: number;
  busyMs: number;
  idleMs: number;
  gcMs: number;
  top: SelfTimeRow[];
  /** Self time grouped by source: our packages, ws, undici, node internals, … */
  byArea: Array<{ area: string; selfMs: number; share: number }>;
  /** Our own functions (packages/*) by inclusive time: everything they and their callees ran. */
  oursInclusive: SelfTimeRow[];
}

function shortUrl(url: string): string {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(ROOT + '/')) u = u.slice(ROOT.length + 1);
  u = u.replace(/^.*node_modules\//, '');
  return u;
}

function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'gc';
  if (fn === '(program)') return 'v8/native (program)';
  if (!url) return fn.startsWith('(') ? fn : 'native';
  const u = shortUrl(url);
  if (u.startsWith('packages/protocol/')) return 'ours: protocol';
  if (u.startsWith('packages/relay/')) return 'ours: relay';
  if (u.startsWith('packages/connector/')) return 'ours: connector';
  if (u.startsWith('bench/')) return 'bench';
  if (u.startsWith('node:')) {
    const m = /^node:(internal\/)?([a-z_]+)/.exec(u);
    return `node:${m?.[2] ?? u}`;
  }
  const pkg = /^(@[^/]+\/[^/]+|[^/]+)/.exec(u);
  return pkg ? pkg[1]! : u;
}

/** A time window in CLOCK_MONOTONIC µs (`process.hrtime.bigint() / 1000n`), the profile's own clock. */
export interface ProfileWindow {
  fromUs: number;
  toUs: number;
}

/**
 * Self time per function. With `window`, only samples taken inside it count
 * (e.g. the measured phase, not start-up).
 */
export function summarizeProfile(file: string, topN = 20, window?: ProfileWindow): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time from sample i-1 to sample i: attribute it to sample i-1.
  let t = p.startTime;
  let first = Infinity;
  let last = -Infinity;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    first = Math.min(first, t);
    last = Math.max(last, t);
    const dt = p.timeDeltas[i + 1] ?? 0;
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, dt));
  }
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  const byArea = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let total = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    total += us;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    if (functionName === '(garbage collector)') gc += us;
    const fn = functionName || '(anonymous)';
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const e = byFn.get(key) ?? { fn, where, us: 0 };
    e.us += us;
    byFn.set(key, e);
    const a = area(url, functionName);
    byArea.set(a, (byArea.get(a) ?? 0) + us);
  }
  const busy = total - idle;
  const rows = [...byFn.values()].sort((a, b) => b.us - a.us).slice(0, topN);

  // Inclusive time of our functions: walk each sampled node's ancestors once.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, { fn: string; where: string; us: number }>();
  for (const [id, us] of selfUs) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      if (!cf.url.includes('/packages/')) continue;
      const where = `${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
      const fn = cf.functionName || '(anonymous)';
      const key = `${fn}@${where}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const e = incl.get(key) ?? { fn, where, us: 0 };
      e.us += us;
      incl.set(key, e);
    }
  }
  const inclRows = [...incl.values()].sort((a, b) => b.us - a.us).slice(0, topN);
  return {
    file: path.relative(ROOT, file),
    wallMs: window ? Math.max(0, last - first) / 1000 : (p.endTime - p.startTime) / 1000,
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    gcMs: gc / 1000,
    top: rows.map((r) => ({ fn: r.fn, where: r.where, selfMs: r.us / 1000, share: busy > 0 ? r.us / busy : 0 })),
    byArea: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 14)
      .map(([a, us]) => ({ area: a, selfMs: us / 1000, share: busy > 0 ? us / busy : 0 })),
    oursInclusive: inclRows.map((r) => ({ fn: r.fn, where: r.where, selfMs: r.us / 1000, share: busy > 0 ? r.us / busy : 0 })),
  };
}

/** The newest .cpuprofile in `dir`. */
export function newestProfile(dir: string): string | null {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return null;
  }
  if (files.length === 0) return null;
  files.sort();
  return path.join(dir, files[files.length - 1]!);
}

export function formatProfile(title: string, s: ProfileSummary, topN = 15): string {
  const lines = [
    `#### ${title}`,
    '',
    `${s.file}: busy ${s.busyMs.toFixed(0)} ms of ${s.wallMs.toFixed(0)} ms wall (GC ${s.gcMs.toFixed(0)} ms). ` +
      `Sampled wall time: a syscall's share (writev, writeBuffer, write*String) also holds time the process sat preempted in it.`,
    '',
    '| self ms | % busy | function | where |',
    '| ------: | -----: | -------- | ----- |',
    ...s.top.slice(0, topN).map((r) => `| ${r.selfMs.toFixed(0)} | ${(r.share * 100).toFixed(1)} | ${r.fn} | ${r.where} |`),
    '',
    `by area: ${s.byArea.map((a) => `${a.area} ${(a.share * 100).toFixed(0)}%`).join(', ')}`,
    '',
    `our functions by inclusive time: ${s.oursInclusive
      .slice(0, 10)
      .map((r) => `${r.fn} (${r.where.replace(/^packages\//, '')}) ${(r.share * 100).toFixed(0)}%`)
      .join(', ')}`,
    '',
  ];
  return lines.join('\n');
}
