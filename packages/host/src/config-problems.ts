// The wording half of the config toolkit: a zod issue on a config file's
// value becomes one problem a person can act on (`ingress[1].service: …`,
// `tunel: unknown key (did you mean "tunnel"?)`), the same way for
// config.yml and relay.yml.

import type * as z from 'zod';
import type { PendingProblem, YamlPath } from './config-file.js';

export interface WordingOptions {
  /** What a top-level mapping holds, for "the config must be a mapping of keys (…)". */
  readonly topKeys: string;
  /** A hint after "unknown key": e.g. ` (did you mean "tunnel"?)`; '' for none. */
  suggest(key: string, parent: YamlPath): string;
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
};

/** The zod issues of a config file's value (`raw`), as pending problems. */
export function describeIssues(issues: readonly z.core.$ZodIssue[], raw: unknown, o: WordingOptions): PendingProblem[] {
  return issues.flatMap((i) => describeIssue(i, raw, o));
}

function describeIssue(issue: z.core.$ZodIssue, raw: unknown, o: WordingOptions): PendingProblem[] {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: [...path, key], at: 'key', message: `${formatPath([...path, key])}: unknown key${o.suggest(key, path)}` }));
  }
  const parentPath = path.slice(0, -1);
  const parent = valueAt(raw, parentPath);
  const value = valueAt(raw, path);
  const last = path[path.length - 1];
  if (value === undefined && typeof last === 'string' && isRecord(parent)) {
    const where = parentPath.length > 0 ? `${formatPath(parentPath)}: ` : '';
    return [{ path: parentPath, at: 'value', message: `${where}missing required key "${last}"` }];
  }
  let message: string;
  switch (issue.code) {
    case 'invalid_type':
      message =
        path.length === 0
          ? `the config must be a mapping of keys (${o.topKeys}), got ${describeValue(value)}`
          : `expected ${EXPECTED[issue.expected] ?? issue.expected}, got ${describeValue(value)}`;
      break;
    case 'too_small':
      message = issue.origin === 'string' && issue.minimum === 1 ? 'must not be empty' : issue.message;
      break;
    case 'invalid_value':
      message = `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(value)}`;
      break;
    default:
      message = issue.message;
  }
  return [{ path, at: 'value', message: path.length > 0 ? `${formatPath(path)}: ${message}` : message }];
}

/** A value as a person reads it in a problem: `the string "x"`, `the integer 3`, `a list`. */
export function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'an empty value';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `the integer ${v}` : `the number ${v}`;
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return 'a list';
  return 'a mapping';
}

/** `ingress[1].originRequest.connectTimeout` */
export function formatPath(path: YamlPath): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/** The known key nearest to `key`: same letters ignoring case/-/_, or within a small edit distance. */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestDistance = key.length < 5 ? 1 : 2;
  for (const k of known) {
    if (norm(k) === norm(key)) return k;
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d <= bestDistance) {
      best = k;
      bestDistance = d - 1;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function valueAt(raw: unknown, path: YamlPath): unknown {
  let v = raw;
  for (const p of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}
