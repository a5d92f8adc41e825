// The config-file half of the config toolkit both daemons use (config.yml,
// relay.yml): read the file, parse YAML with positions, and report every
// problem as FILE:LINE:COLUMN: problem under one error class.

import { readFileSync } from 'node:fs';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, visit, type Document } from 'yaml';

export interface ConfigProblem {
  /** 1-based; 0 when the problem concerns the whole file (e.g. unreadable). */
  readonly line: number;
  readonly column: number;
  /** The problem without the FILE:LINE:COL prefix, e.g. `ingress[1].service: unknown service scheme …`. */
  readonly message: string;
}

/** A config that cannot be used. `message` has one `FILE:LINE:COL: problem` line per problem. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    /** File path (or the flag, e.g. `--url`) the problems refer to. */
    readonly source: string,
    readonly problems: readonly ConfigProblem[],
  ) {
    super(problems.map((p) => (p.line > 0 ? `${source}:${p.line}:${p.column}: ${p.message}` : `${source}: ${p.message}`)).join('\n'));
  }
}

/** A key path into the document: `['ingress', 1, 'service']`. */
export type YamlPath = readonly (string | number)[];

/** A problem before it is located: `at` says whether to point at the key or the value. */
export interface PendingProblem {
  readonly path: YamlPath;
  readonly message: string;
  readonly at: 'key' | 'value';
}

/** A parsed YAML config: its plain value, and where each path sits in the text. */
export interface YamlConfig {
  readonly raw: unknown;
  position(path: YamlPath, at: 'key' | 'value'): { line: number; column: number };
  /** The pending problems located and sorted by position, as a ConfigError. */
  error(problems: readonly PendingProblem[]): ConfigError;
}

/** Read a config file; an unreadable one is a ConfigError saying why. */
export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new ConfigError(file, [{ line: 0, column: 0, message: `cannot read config file: ${why}` }]);
  }
}

/**
 * Parse YAML text; syntax errors and broken aliases are a ConfigError with
 * their positions. `<<: *defaults` merges work; aliases are bounded (a
 * billion-laughs file is an error, not an out-of-memory). An empty file is an
 * empty mapping.
 */
export function parseYamlConfig(text: string, file: string): YamlConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, merge: true, uniqueKeys: true });
  const at = (offset: number) => {
    const { line, col } = lines.linePos(offset);
    return { line, column: col };
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => ({ ...at(e.pos[0]), message: `YAML syntax error: ${e.message}` })));
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(file, [{ ...at(firstBadAlias(doc)), message: `YAML error: ${(err as Error).message}` }]);
  }
  const position = (path: YamlPath, where: 'key' | 'value') => at(locate(doc, path, where));
  return {
    raw: raw ?? {},
    position,
    error(pending) {
      const problems = pending.map((p) => ({ ...position(p.path, p.at), message: p.message }));
      problems.sort((a, b) => a.line - b.line || a.column - b.column);
      return new ConfigError(file, problems);
    },
  };
}

/**
 * Offset of the node at `path` (its key when `at` is 'key'), or of the deepest
 * node that exists on the way: a missing key is reported at its parent map.
 */
function locate(doc: Document, path: YamlPath, at: 'key' | 'value'): number {
  let node: unknown = doc.contents;
  let offset = rangeStart(node) ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    if (isAlias(node)) node = node.resolve(doc);
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair === undefined) break;
      if (at === 'key' && i === path.length - 1) return rangeStart(pair.key) ?? offset;
      next = pair.value ?? pair.key; // `key:` with nothing after it
    } else if (isSeq(node) && typeof seg === 'number') {
      next = node.items[seg];
    }
    const start = rangeStart(next);
    if (start === undefined) break;
    node = next;
    offset = start;
  }
  return offset;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return range?.[0];
}

function firstBadAlias(doc: Document): number {
  let offset = 0;
  visit(doc, {
    Alias(_, node) {
      if (node.resolve(doc) === undefined) {
        offset = node.range?.[0] ?? 0;
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return offset;
}
