// The connector's config file (cloudflared's config.yml): YAML → validated,
// defaulted ConnectorConfig. Every problem is reported as FILE:LINE:COL so a
// user can jump straight to it; all problems are reported at once, not just
// the first, because fixing a config one error per run is miserable.
//
// Flow: yaml.parseDocument (with a LineCounter, so every node knows its offset)
// → syntax errors → toJS → zod schema (shapes, types, unknown keys, value
// parsing) + ingress-order checks on the raw value → each problem's path is
// walked back through the YAML AST to the node's line/column.

//
// The file toolkit (YAML positions, ConfigError, the wording of zod issues) is
// @tunnel/host's, shared with relay.yml; the types are config-types.ts and the
// value grammars config-values.ts.

import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import * as z from 'zod';
import { durationSetting } from '@tunnel/protocol';
import { closestKey, describeIssues, describeValue, isRecord, parseYamlConfig, readConfigText, type PendingProblem, type YamlPath } from '@tunnel/host';
import { compilePathPattern, parseHostname, parseService, resolveOriginRequest, SERVICE_SCHEMES } from './config-values.js';
import type { ConnectorConfig, IngressRule, OriginRequestOverrides } from './config-types.js';
import { HA_CONNECTIONS, RUN_SETTINGS, runDefault } from '../run-settings.js';

export { ConfigError, type ConfigProblem } from '@tunnel/host';
export * from './config-types.js';
export * from './config-values.js';

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

// The flag's grammar (HOST:PORT, :PORT or PORT), so config.yml takes what --metrics takes.
const metrics = parsed((v) => {
  const r = RUN_SETTINGS.metrics.parse(typeof v === 'number' && Number.isInteger(v) ? String(v) : requireString(v, 'HOST:PORT, :PORT or PORT'));
  if ('problem' in r) throw new Error(r.problem);
  return r.value;
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
  'ha-connections': integer(HA_CONNECTIONS.min, HA_CONNECTIONS.max).default(RUN_SETTINGS.haConnections.default),
  metrics: metrics.optional(),
  'grace-period': duration.default(runDefault('gracePeriod')!),
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


/** Read and parse a config file. Throws ConfigError (also for an unreadable file). */
export function loadConfig(file: string): ConnectorConfig {
  return parseConfig(readConfigText(file), file);
}

/** Parse config text; `file` names it in messages and anchors relative paths. */
export function parseConfig(text: string, file: string): ConnectorConfig {
  const yaml = parseYamlConfig(text, file);
  const raw = yaml.raw;
  const pending: PendingProblem[] = [];
  const result = configSchema.safeParse(raw);
  if (!result.success) pending.push(...describeIssues(result.error.issues, raw, { topKeys: 'tunnel:, ingress:, …', suggest: suggestKey }));
  pending.push(...checkRuleOrder(raw));
  if (!result.success || pending.length > 0) throw yaml.error(pending);

  const c = result.data;
  const baseDir = dirname(resolve(file));
  const top = resolveOriginRequest(originOverrides(c.originRequest, baseDir));
  return {
    source: file,
    ...(c.tunnel !== undefined && { tunnel: c.tunnel, tunnelAt: yaml.position(['tunnel'], 'value') }),
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
      line: yaml.position(['ingress', i], 'value').line,
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

function suggestKey(key: string, path: YamlPath): string {
  const last = path[path.length - 1];
  const level = path.length === 0 ? 'top' : last === 'originRequest' ? 'originRequest' : 'rule';
  const best = closestKey(key, KEYS[level]);
  if (best !== undefined) return ` (did you mean "${best}"?)`;
  // Right key, wrong level: common when indenting by hand.
  const origin = level !== 'originRequest' ? closestKey(key, KEYS.originRequest) : undefined;
  if (origin !== undefined) return ` ("${origin}" belongs under originRequest:)`;
  const rule = level === 'top' ? closestKey(key, KEYS.rule) : undefined;
  if (rule !== undefined) return ` ("${rule}" belongs in an ingress rule)`;
  return ` (expected one of: ${KEYS[level].join(', ')})`;
}
