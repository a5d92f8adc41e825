// The connector's config file (cloudflared's config.yml): YAML → validated,
// defaulted ConnectorConfig. Every problem is reported as FILE:LINE:COL so a
// user can jump straight to it; all problems are reported at once, not just
// the first, because fixing a config one error per run is miserable.
//
// Flow: yaml.parseDocument (with a LineCounter, so every node knows its offset)
// → syntax errors → toJS → zod schema (shapes, types, unknown keys, value
// parsing) + ingress-order checks on the raw value → each problem's path is
// walked back through the YAML AST to the node's line/column.

import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import {
  LineCounter,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseDocument,
  visit,
  type Document,
} from 'yaml';
import * as z from 'zod';
import { durationSetting, HostnameError, normalizeHostname, type HostnameFault } from '@tunnel/protocol';

// ───────────────────────────── public types ─────────────────────────────

/**
 * Where a rule sends matching requests. http:// and https:// are one kind: the
 * URL's protocol says whether to use TLS. Each variant carries only what it
 * needs, so e.g. a tcp service without a port cannot be represented.
 */
export type Service =
  | { readonly kind: 'http'; readonly url: URL }
  | { readonly kind: 'unix'; readonly socketPath: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'hello_world' };

/**
 * How the connector talks to an origin (cloudflared's `originRequest`), with
 * every default resolved. Durations are in milliseconds.
 *
 * Defaults (as cloudflared, plus idleTimeout which is ours):
 *   connectTimeout          30s   TCP/TLS connect to the origin
 *   keepAliveConnections    100   idle pooled connections kept per origin
 *   keepAliveTimeout        90s   how long an idle pooled connection is kept
 *   httpHostHeader          —     Host header sent to the origin (default: the request's)
 *   originServerName        —     TLS SNI / certificate name (default: the service host)
 *   caPool                  —     PEM file of CAs trusted for https origins (default: system)
 *   noTLSVerify             false skip origin certificate verification
 *   disableChunkedEncoding  false buffer bodies instead of chunked uploads to the origin
 *   idleTimeout             0     0 = none. There is deliberately no fixed read timeout,
 *                                 which would kill long downloads and streams; if set,
 *                                 a response with no bytes for this long is aborted.
 */
export interface OriginRequestConfig {
  readonly connectTimeout: number;
  readonly keepAliveConnections: number;
  readonly keepAliveTimeout: number;
  readonly httpHostHeader?: string;
  readonly originServerName?: string;
  readonly caPool?: string;
  readonly noTLSVerify: boolean;
  readonly disableChunkedEncoding: boolean;
  readonly idleTimeout: number;
  /**
   * cloudflared's `access`: with `required`, a request reaches the origin
   * only with a valid `Tunnel-Access-Jwt-Assertion` whose `aud` is one of
   * `audTag` (else 403 from the connector).
   */
  readonly access?: { readonly required: boolean; readonly audTag: readonly string[] };
}

/** Per-rule overrides: only the keys the rule sets; merged over the top-level config. */
export type OriginRequestOverrides = Partial<OriginRequestConfig>;

export const ORIGIN_REQUEST_DEFAULTS: OriginRequestConfig = Object.freeze({
  connectTimeout: 30_000,
  keepAliveConnections: 100,
  keepAliveTimeout: 90_000,
  noTLSVerify: false,
  disableChunkedEncoding: false,
  idleTimeout: 0,
});

export interface IngressRule {
  /** Lower-cased; exact (`app.example.com`) or wildcard (`*.example.com`). Absent = any host. */
  readonly hostname?: string;
  /** Regex source tested (unanchored) against the request path. Absent = any path. */
  readonly path?: string;
  readonly service: Service;
  readonly originRequest: OriginRequestOverrides;
  /** 1-based line in the config file, when the rule came from one (for messages). */
  readonly line?: number;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface ConnectorConfig {
  /** The file this came from, for messages. */
  readonly source: string;
  /** Tunnel name or id. */
  readonly tunnel?: string;
  /** Where `tunnel:` is written, for an error about it. */
  readonly tunnelAt?: { readonly line: number; readonly column: number };
  /** Absolute path (relative paths resolve against the config file's directory, `~` expands). */
  readonly credentialsFile?: string;
  readonly tokenFile?: string;
  /** Relay URLs (ws://, wss://, http://, https://), as written. Empty = from the credential. */
  readonly relays: readonly string[];
  /** 1..16, default 4. */
  readonly haConnections: number;
  readonly metrics?: { readonly host: string; readonly port: number };
  /** Milliseconds, default 30s. */
  readonly gracePeriod: number;
  /** Default 'info'. */
  readonly loglevel: LogLevel;
  readonly originRequest: OriginRequestConfig;
  /** Empty only when the file has no rules; then `--url` must supply one (see resolveIngress). */
  readonly ingress: readonly IngressRule[];
}

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
    /** File path (or `--url` for the flag) the problems refer to. */
    readonly source: string,
    readonly problems: readonly ConfigProblem[],
  ) {
    super(problems.map((p) => formatProblem(source, p)).join('\n'));
  }
}

function formatProblem(source: string, p: ConfigProblem): string {
  return p.line > 0 ? `${source}:${p.line}:${p.column}: ${p.message}` : `${source}: ${p.message}`;
}

// ──────────────────────────── value parsers ─────────────────────────────

const SERVICE_SCHEMES = 'http://, https://, unix:, tcp://, http_status:NNN, hello_world';

/** Parse a rule's `service`. Throws an Error with a one-line reason. */
export function parseService(text: string): Service {
  const lower = text.toLowerCase();
  if (lower === 'hello_world') return { kind: 'hello_world' };
  if (lower.startsWith('http_status:')) {
    const code = text.slice('http_status:'.length);
    const status = /^\d{3}$/.test(code) ? Number(code) : NaN;
    if (!(status >= 100 && status <= 599)) {
      throw new Error(`invalid status code "${code}" in "${text}" (expected http_status:NNN with NNN from 100 to 599)`);
    }
    return { kind: 'status', status };
  }
  if (lower.startsWith('unix:')) {
    const socketPath = text.slice('unix:'.length);
    if (socketPath === '') throw new Error(`"${text}" has no socket path (expected unix:/path/to.sock)`);
    return { kind: 'unix', socketPath };
  }
  if (lower.startsWith('http://') || lower.startsWith('https://')) {
    const url = parseUrl(text);
    if (url.hostname === '') throw new Error(`"${text}" has no host (expected http://host[:port][/path])`);
    if (url.username !== '' || url.password !== '') throw new Error(`"${text}": credentials in a service URL are not supported`);
    if (url.search !== '' || url.hash !== '') throw new Error(`"${text}": a service URL cannot have a query or fragment`);
    return { kind: 'http', url };
  }
  if (lower.startsWith('tcp://')) {
    const url = parseUrl(text);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (host === '' || url.port === '' || url.port === '0') throw new Error(`"${text}" needs a host and a port (expected tcp://host:port)`);
    if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
      throw new Error(`"${text}": a tcp service cannot have a path (expected tcp://host:port)`);
    }
    return { kind: 'tcp', host, port: Number(url.port) };
  }
  throw new Error(`unknown service scheme "${text}" (expected ${SERVICE_SCHEMES})`);
}

function parseUrl(text: string): URL {
  try {
    return new URL(text);
  } catch {
    throw new Error(`"${text}" is not a valid URL`);
  }
}

/** Canonical text of a service, as a user would write it (for `ingress rule` output and logs). */
export function serviceToString(s: Service): string {
  switch (s.kind) {
    case 'http':
      // URL.href adds a trailing "/" to a bare origin; show what the user wrote.
      return s.url.pathname === '/' ? s.url.origin : s.url.href;
    case 'unix':
      return `unix:${s.socketPath}`;
    case 'tcp':
      return `tcp://${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`;
    case 'status':
      return `http_status:${s.status}`;
    case 'hello_world':
      return 'hello_world';
  }
}

// Hints only a rule hostname needs: what to use instead in a config file.
const RULE_HINT: Partial<Record<HostnameFault, string>> = {
  'not-bare': ' (use the path key to match paths)',
  port: " (matching ignores the request's port)",
};

/** Normalise a rule hostname (the grammar is protocol's, shared with the relay); '' and '*' (match anything) become undefined. */
export function parseHostname(text: string): string | undefined {
  const host = text.trim();
  if (host === '' || host === '*') return undefined;
  try {
    return normalizeHostname(host);
  } catch (e) {
    if (e instanceof HostnameError) throw new Error(e.message + (RULE_HINT[e.fault] ?? ''));
    throw e;
  }
}

/**
 * Compile a rule's path regex. cloudflared's paths are Go (RE2) regexes, which
 * JavaScript mostly shares; the one common difference, a leading `(?i)`, is
 * translated to the `i` flag. No `g`/`y` flag: those make `test()` stateful.
 */
export function compilePathPattern(source: string): RegExp {
  return source.startsWith('(?i)') ? new RegExp(source.slice(4), 'i') : new RegExp(source);
}

/** A catch-all rule matches every request: no hostname (or `*`) and no path. */
export function isCatchAll(rule: Pick<IngressRule, 'hostname' | 'path'>): boolean {
  return rule.hostname === undefined && rule.path === undefined;
}

/**
 * The single rule cloudflared builds for `--url`: a catch-all to that service.
 * A URL without a scheme (`localhost:8000`) means http://, as in cloudflared.
 */
export function singleServiceIngress(url: string): IngressRule[] {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) || /^(unix:|http_status:|hello_world$)/i.test(url);
  try {
    return [{ service: parseService(hasScheme ? url : `http://${url}`), originRequest: {} }];
  } catch (err) {
    throw new ConfigError('--url', [{ line: 0, column: 0, message: (err as Error).message }]);
  }
}

/**
 * The rules to run with: the config's, or the `--url` one. As in cloudflared,
 * both at once is an error (which would win is not obvious), and neither is too.
 */
export function resolveIngress(config: ConnectorConfig | undefined, url: string | undefined): readonly IngressRule[] {
  const rules = config?.ingress ?? [];
  if (url !== undefined && url !== '') {
    if (rules.length > 0) {
      throw new ConfigError(config!.source, [
        { line: rules[0]!.line ?? 0, column: 1, message: '--url cannot be used together with ingress rules; remove one of them' },
      ]);
    }
    return singleServiceIngress(url);
  }
  if (rules.length === 0) {
    throw new ConfigError(config?.source ?? '--url', [
      { line: 0, column: 0, message: 'no ingress rules: add an "ingress:" list to the config file or pass --url' },
    ]);
  }
  return rules;
}

/** Merge per-rule overrides over a resolved config (keys a rule does not set are inherited). */
export function resolveOriginRequest(
  overrides: OriginRequestOverrides | undefined,
  base: OriginRequestConfig = ORIGIN_REQUEST_DEFAULTS,
): OriginRequestConfig {
  const set = Object.entries(overrides ?? {}).filter(([, v]) => v !== undefined);
  if (set.length === 0) return base; // rules without overrides share the top-level object
  return Object.freeze({ ...base, ...Object.fromEntries(set) }) as OriginRequestConfig;
}

// ──────────────────────────────── schema ────────────────────────────────

/** A zod field whose value is parsed by `parse` (throwing Error → one issue with its message). */
function parsed<T>(parse: (v: unknown) => T) {
  return z.unknown().transform((v, ctx): T => {
    try {
      return parse(v);
    } catch (err) {
      ctx.issues.push({ code: 'custom', message: (err as Error).message, input: v });
      return z.NEVER;
    }
  });
}

function requireString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`expected ${what}, got ${describeValue(v)}`);
  return v;
}

const duration = parsed((v) => {
  const r = durationSetting(v);
  if ('problem' in r) throw new Error(r.problem);
  return r.ms;
});

const service = parsed((v) => parseService(requireString(v, `a service (${SERVICE_SCHEMES})`)));
const hostname = parsed((v) => parseHostname(requireString(v, 'a hostname')));
const path = parsed((v) => {
  const source = requireString(v, 'a regular expression');
  if (source === '') return undefined; // as cloudflared: empty path = any path
  try {
    compilePathPattern(source);
  } catch (err) {
    throw new Error(`invalid regular expression "${source}": ${(err as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /, '')}`);
  }
  return source;
});

const relay = parsed((v) => {
  const text = requireString(v, 'a relay URL');
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (url === undefined || !['ws:', 'wss:', 'http:', 'https:'].includes(url.protocol) || url.hostname === '') {
    throw new Error(`"${text}" is not a relay URL (expected wss://host[:port], ws://, https:// or http://)`);
  }
  return text;
});

const metrics = parsed((v) => {
  const text = requireString(v, 'host:port');
  const m = /^(?:\[([^\]]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (m === null || port > 65535) throw new Error(`"${text}" is not host:port (e.g. localhost:2000, 127.0.0.1:0, [::1]:2000)`);
  return { host: (m[1] ?? m[2])!, port };
});

// Hand-rolled rather than z.int(): zod reports a quoted "4" as "expected number".
function integer(min: number, max: number) {
  return parsed((v) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`expected an integer, got ${describeValue(v)}`);
    if (v < min) throw new Error(`must be at least ${min}, got ${v}`);
    if (v > max) throw new Error(`must be at most ${max}, got ${v}`);
    return v;
  });
}

const nonEmpty = z.string().min(1);

const originRequestSchema = z.strictObject({
  connectTimeout: duration.optional(),
  keepAliveConnections: integer(0, 100_000).optional(),
  keepAliveTimeout: duration.optional(),
  httpHostHeader: nonEmpty.optional(),
  originServerName: nonEmpty.optional(),
  caPool: nonEmpty.optional(),
  noTLSVerify: z.boolean().optional(),
  disableChunkedEncoding: z.boolean().optional(),
  idleTimeout: duration.optional(),
  access: z
    .strictObject({
      required: z.boolean().default(false),
      audTag: z.array(z.string().min(1).max(256)).max(64).default([]),
      // cloudflared's team name: accepted for configs written for it; the fleet is the issuer here.
      teamName: z.string().optional(),
    })
    .refine((a) => !a.required || a.audTag.length > 0, { message: 'access.required needs at least one audTag (the policy\'s audience tag from `tunnel access policy list`)', path: ['audTag'] })
    .transform(({ required, audTag }) => ({ required, audTag }))
    .optional(),
});

const ruleSchema = z.strictObject({
  hostname: hostname.optional(),
  path: path.optional(),
  service,
  // `originRequest:` with nothing under it (all children commented out) is null.
  originRequest: originRequestSchema.nullish(),
});

const configSchema = z.strictObject({
  tunnel: nonEmpty.optional(),
  'credentials-file': nonEmpty.optional(),
  'token-file': nonEmpty.optional(),
  relays: z.array(relay).nullish(),
  'ha-connections': integer(1, 16).default(4),
  metrics: metrics.optional(),
  'grace-period': duration.default(30_000),
  loglevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  originRequest: originRequestSchema.nullish(),
  ingress: z.array(ruleSchema).nullish(),
});

const KEYS = {
  top: Object.keys(configSchema.shape),
  rule: Object.keys(ruleSchema.shape),
  originRequest: Object.keys(originRequestSchema.shape),
};

// ─────────────────────────────── parsing ────────────────────────────────

type Path = readonly (string | number)[];
/** A problem before it is located: `at` says whether to point at the key or the value. */
interface PendingProblem {
  readonly path: Path;
  readonly message: string;
  readonly at: 'key' | 'value';
}

/** Read and parse a config file. Throws ConfigError (also for an unreadable file). */
export function loadConfig(file: string): ConnectorConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message;
    throw new ConfigError(file, [{ line: 0, column: 0, message: `cannot read config file: ${why}` }]);
  }
  return parseConfig(text, file);
}

/** Parse config text; `file` names it in messages and anchors relative paths. */
export function parseConfig(text: string, file: string): ConnectorConfig {
  const lines = new LineCounter();
  // merge: true so `<<: *defaults` works for shared originRequest blocks.
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
  raw ??= {}; // an empty file is an empty config

  const pending: PendingProblem[] = [];
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) pending.push(...describeIssue(issue, raw));
  }
  pending.push(...checkRuleOrder(raw));
  if (!result.success || pending.length > 0) {
    const problems = pending.map((p) => ({ ...at(locate(doc, p.path, p.at)), message: p.message }));
    problems.sort((a, b) => a.line - b.line || a.column - b.column);
    throw new ConfigError(file, problems);
  }

  const c = result.data;
  const baseDir = dirname(resolve(file));
  const top = resolveOriginRequest(originOverrides(c.originRequest, baseDir));
  return {
    source: file,
    ...(c.tunnel !== undefined && { tunnel: c.tunnel, tunnelAt: at(locate(doc, ['tunnel'], 'value')) }),
    ...(c['credentials-file'] !== undefined && { credentialsFile: resolvePath(c['credentials-file'], baseDir) }),
    ...(c['token-file'] !== undefined && { tokenFile: resolvePath(c['token-file'], baseDir) }),
    relays: c.relays ?? [],
    haConnections: c['ha-connections'],
    ...(c.metrics !== undefined && { metrics: c.metrics }),
    gracePeriod: c['grace-period'],
    loglevel: c.loglevel,
    originRequest: top,
    ingress: (c.ingress ?? []).map((r, i): IngressRule => ({
      ...(r.hostname !== undefined && { hostname: r.hostname }),
      ...(r.path !== undefined && { path: r.path }),
      service: r.service,
      originRequest: originOverrides(r.originRequest, baseDir) ?? {},
      line: at(locate(doc, ['ingress', i], 'value')).line,
    })),
  };
}

/** Drop unset keys and resolve caPool against the config directory. */
function originOverrides(o: z.infer<typeof originRequestSchema> | null | undefined, baseDir: string): OriginRequestOverrides | undefined {
  if (o == null) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = k === 'caPool' ? resolvePath(v as string, baseDir) : v;
  return out as OriginRequestOverrides;
}

// Relative paths are relative to the config file, not the working directory:
// the same file must work from `tunnel run` in a shell and from a service unit.
function resolvePath(p: string, baseDir: string): string {
  if (p === '~' || p.startsWith('~/')) return join(homedir(), p.slice(1));
  return isAbsolute(p) ? p : resolve(baseDir, p);
}

/** The cloudflared rule-order checks, on the raw value so they run even when a rule has other errors. */
function checkRuleOrder(raw: unknown): PendingProblem[] {
  const ingress = isRecord(raw) ? raw['ingress'] : undefined;
  if (!Array.isArray(ingress) || ingress.length === 0) return [];
  const out: PendingProblem[] = [];
  const last = ingress.length - 1;
  ingress.forEach((rule: unknown, i) => {
    // Not a mapping, or a misspelt key (`hostnme:`): already reported, and
    // guessing whether it was meant as a catch-all would only add noise.
    if (!isRecord(rule) || Object.keys(rule).some((k) => !KEYS.rule.includes(k))) return;
    const noHost = rule['hostname'] == null || rule['hostname'] === '' || rule['hostname'] === '*';
    const noPath = rule['path'] == null || rule['path'] === '';
    const catchAll = noHost && noPath;
    if (i < last && catchAll) {
      out.push({
        path: ['ingress', i],
        at: 'value',
        message: `ingress[${i}]: this rule matches every request (no hostname, no path), so the rules after it can never match; only the last rule may be a catch-all`,
      });
    } else if (i === last && !catchAll) {
      out.push({
        path: ['ingress', i],
        at: 'value',
        message: `ingress[${i}]: the last ingress rule must be a catch-all (no hostname, no path) so every request matches a rule, e.g. "- service: http_status:404"`,
      });
    }
  });
  return out;
}

// ─────────────────────────── issue formatting ───────────────────────────

function describeIssue(issue: z.core.$ZodIssue, raw: unknown): PendingProblem[] {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      path: [...path, key],
      at: 'key',
      message: `${formatPath([...path, key])}: unknown key${suggestKey(key, path)}`,
    }));
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
          ? `the config must be a mapping of keys (tunnel:, ingress:, …), got ${describeValue(value)}`
          : `expected ${EXPECTED[issue.expected] ?? issue.expected}, got ${describeValue(value)}`;
      break;
    case 'too_small': // only non-empty strings use zod's min()
      message = 'must not be empty';
      break;
    case 'invalid_value':
      message = `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(value)}`;
      break;
    default:
      message = issue.message;
  }
  return [{ path, at: 'value', message: path.length > 0 ? `${formatPath(path)}: ${message}` : message }];
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
};

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'an empty value';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `the integer ${v}` : `the number ${v}`;
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return 'a list';
  return 'a mapping';
}

/** `ingress[1].originRequest.connectTimeout` */
function formatPath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

function suggestKey(key: string, path: Path): string {
  const last = path[path.length - 1];
  const level = path.length === 0 ? 'top' : last === 'originRequest' ? 'originRequest' : 'rule';
  const best = closest(key, KEYS[level]);
  if (best !== undefined) return ` (did you mean "${best}"?)`;
  // Right key, wrong level: common when indenting by hand.
  const origin = level !== 'originRequest' ? closest(key, KEYS.originRequest) : undefined;
  if (origin !== undefined) return ` ("${origin}" belongs under originRequest:)`;
  const rule = level === 'top' ? closest(key, KEYS.rule) : undefined;
  if (rule !== undefined) return ` ("${rule}" belongs in an ingress rule)`;
  return ` (expected one of: ${KEYS[level].join(', ')})`;
}

/** The known key nearest to `key`: same letters ignoring case/-/_, or within a small edit distance. */
function closest(key: string, known: readonly string[]): string | undefined {
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

// ─────────────────────────── YAML positions ─────────────────────────────

/**
 * Offset of the node at `path` (its key when `at` is 'key'), or of the deepest
 * node that exists on the way: a missing key is reported at its parent map.
 */
function locate(doc: Document, path: Path, at: 'key' | 'value'): number {
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

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function valueAt(raw: unknown, path: Path): unknown {
  let v = raw;
  for (const p of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}
