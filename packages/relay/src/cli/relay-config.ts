import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { durationSetting, hostPortSetting } from '@tunnel/protocol';
import { closestKey, describeIssues, parseYamlConfig, readConfigText } from '@tunnel/host';
import { LIMIT_SETTINGS } from '../relay-limits.js';
import { ALL_INTERFACES } from '../edge/listen.js';
import { parseLifetime } from '../connectors/credential-check.js';

// `relay.yml`: the same settings as `tunnel-relay serve` flags (flags win).
// Errors name the file, line and column of the offending value, through the
// config toolkit the connector's config.yml uses (@tunnel/host).

export { ConfigError } from '@tunnel/host';

/** A listen address, checked by the grammar the flags use (kept as written: the CLI parses it again with the flag's name). */
const address = (off: 'off' | 'no-off') =>
  z.unknown().transform((v, ctx) => {
    if (off === 'off' && v === 'off') return 'off';
    const r = typeof v === 'string' || typeof v === 'number' ? hostPortSetting(v, ALL_INTERFACES) : { problem: `expected HOST:PORT, :PORT or PORT${off === 'off' ? ' (or off)' : ''}, got ${v === null ? 'an empty value' : Array.isArray(v) ? 'a list' : typeof v}` };
    if ('value' in r) return String(v);
    ctx.addIssue({ code: 'custom', message: r.problem });
    return z.NEVER;
  });
/** A relay.yml value or `serve` flag that is a duration, in ms: protocol's durationSetting, the checker of every duration setting. */
export const durationMs = durationSetting;

const duration = z.unknown().transform((v, ctx) => {
  const r = durationMs(v);
  if ('ms' in r) return r.ms;
  ctx.addIssue({ code: 'custom', message: r.problem });
  return z.NEVER;
});

/** Kept as written (the CLI parses it with its flag's name), but checked here so the error has file:line. */
const lifetime = (example: string) =>
  z.unknown().transform((v, ctx) => {
    try {
      if (typeof v === 'number') throw new Error();
      parseLifetime(String(v), 'lifetime');
      return String(v);
    } catch {
      ctx.addIssue({ code: 'custom', message: typeof v === 'number' ? `expected a lifetime with a unit, e.g. "${v}s" or "${example}", got the bare number ${v}` : `expected a lifetime like ${example}, 24h or 30m` });
      return z.NEVER;
    }
  });

const count = z.number().int().min(0);
const limitsSchema = z.strictObject(Object.fromEntries(LIMIT_SETTINGS.map((l) => [l.name, l.kind === 'ms' ? duration.optional() : count.optional()])) as Record<string, z.ZodOptional<typeof count>>);


const schema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'relay ids are 1-64 letters, digits, dot, dash, underscore').optional(),
  region: z.string().min(1).max(64).optional(),
  store: z.string().regex(/^(file:|redis:\/\/|rediss:\/\/)/, 'expected file:DIR or redis://HOST:PORT').optional(),
  keys: z.string().min(1).optional(),
  listen: z
    .strictObject({ http: address('off').optional(), https: address('off').optional(), connect: address('no-off').optional(), control: address('off').optional(), peer: address('off').optional(), metrics: address('off').optional() })
    .optional(),
  tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1), ca: z.string().min(1).optional() }).optional(),
  'insecure-http-control': z.boolean().optional(),
  /** Certificates per hostname from an ACME CA (static tls: stays the fallback). */
  acme: z
    .strictObject({
      directory: z.url({ protocol: /^https?$/ }),
      email: z.email(),
      challenge: z.enum(['http-01', 'tls-alpn-01', 'dns-01']).optional(),
      'dns-hook': z.string().min(1).optional(),
      'dns-hook-timeout': duration.optional(),
      'orders-per-hour': z.number().int().min(0).optional(),
      'retry-after': duration.optional(),
      'handshake-wait': duration.optional(),
    })
    .optional(),
  'advertise-host': z.string().min(1).optional(),
  'drain-timeout': duration.optional(),
  'drain-delay': duration.optional(),
  'operator-key-file': z.string().min(1).optional(),
  'login-ttl': duration.optional(),
  /** Credential lifetimes: 90d, 24h, 30m, 45s. */
  'account-credential-ttl': lifetime('90d').optional(),
  'tunnel-token-ttl': lifetime('365d').optional(),
  'legacy-credentials': z.enum(['accept', 'refuse']).optional(),
  /** Quick tunnels (`tunnel --url`): on when a zone is given. */
  'quick-zone': z.string().min(1).max(253).optional(),
  'quick-token-ttl': lifetime('8h').optional(),
  'quick-banner': z.string().regex(/^[\x20-\x7e]{1,200}$/, '1-200 printable ASCII characters (it is sent as a header)').optional(),
  /** Ceilings (see relay-limits.ts); 0 turns one off. */
  limits: limitsSchema.optional(),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(), format: z.enum(['json', 'pretty', 'auto']).optional(), file: z.string().optional() }).optional(),
});

export type RelayConfigFile = z.infer<typeof schema>;

const RELAY_KEYS = Object.keys(schema.shape);

/** Read and check relay.yml. Throws ConfigError naming the file, line and problem (also for an unreadable file). */
export function loadRelayConfig(file: string): RelayConfigFile {
  const yaml = parseYamlConfig(readConfigText(file), file);
  const r = schema.safeParse(yaml.raw);
  if (!r.success) {
    throw yaml.error(
      describeIssues(r.error.issues, yaml.raw, {
        topKeys: 'store:, listen:, limits:, …',
        suggest: (key, parent) => {
          const best = parent.length === 0 ? closestKey(key, RELAY_KEYS) : parent[0] === 'limits' ? closestKey(key, LIMIT_SETTINGS.map((l) => l.name)) : undefined;
          return best === undefined ? '' : ` (did you mean "${best}"?)`;
        },
      }),
    );
  }
  // Paths in the file are relative to the file.
  const base = dirname(resolve(file));
  const abs = (p: string | undefined) => (p === undefined || isAbsolute(p) ? p : resolve(base, p));
  const c = r.data;
  return {
    ...c,
    keys: abs(c.keys),
    'operator-key-file': abs(c['operator-key-file']),
    ...(c.acme?.['dns-hook'] ? { acme: { ...c.acme, 'dns-hook': abs(c.acme['dns-hook']) } } : {}),
    ...(c.tls ? { tls: { cert: abs(c.tls.cert)!, key: abs(c.tls.key)!, ...(c.tls.ca ? { ca: abs(c.tls.ca)! } : {}) } } : {}),
    ...(c.store?.startsWith('file:') && !c.store.startsWith('file:/') ? { store: `file:${resolve(base, c.store.slice(5))}` } : {}),
  };
}
