import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { z } from 'zod';
import { durationSetting } from '@tunnel/protocol';
import { LIMIT_SETTINGS } from '../relay-limits.js';
import { parseLifetime } from '../connectors/credential-check.js';

/**
 * `relay.yml`: the same settings as `tunnel-relay serve` flags (flags win).
 * Errors name the file, line and column of the offending value.
 */
export class RelayConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: Array<{ line: number; column: number; message: string }>,
  ) {
    super(problems.map((p) => `${file}:${p.line}:${p.column}: ${p.message}`).join('\n'));
  }
}

const addr = z.union([z.string().regex(/^(\[[^\]]+\]|[^:\s]*):\d{1,5}$|^\d{1,5}$|^off$/, 'expected HOST:PORT, :PORT, PORT or off'), z.number().int().min(0).max(65535)]).transform(String);
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
    .strictObject({ http: addr.optional(), https: addr.optional(), connect: addr.optional(), control: addr.optional(), peer: addr.optional(), metrics: addr.optional() })
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

export function loadRelayConfig(file: string): RelayConfigFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new RelayConfigError(file, [{ line: 0, column: 0, message: `cannot read config file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }]);
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  const pos = (offset: number) => {
    const p = lc.linePos(offset);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length) throw new RelayConfigError(file, doc.errors.map((e) => ({ ...pos(e.pos[0]), message: `YAML syntax error: ${e.message}` })));
  const raw = doc.toJS() ?? {};
  const r = schema.safeParse(raw);
  if (!r.success) {
    throw new RelayConfigError(
      file,
      r.error.issues.map((i) => {
        const path = i.path.filter((p): p is string | number => typeof p !== 'symbol');
        const keys = i.code === 'unrecognized_keys' ? i.keys : [];
        const where = keys.length ? locate(doc, [...path, keys[0]!], true) : locate(doc, path, false);
        const name = [...path, ...keys.slice(0, 1)].join('.') || '(top)';
        return { ...pos(where), message: i.code === 'unrecognized_keys' ? `${name}: unknown key` : `${name}: ${i.message}` };
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

/** Offset of the node at `path` (its key when `key`), else of the nearest parent. */
function locate(doc: Document, path: Array<string | number>, key: boolean): number {
  for (let n = path.length; n >= 0; n--) {
    const sub = path.slice(0, n);
    if (key && n === path.length && sub.length > 0) {
      const parent = sub.length === 1 ? doc.contents : doc.getIn(sub.slice(0, -1), true);
      const pair = (parent as { items?: Array<{ key: { value?: unknown; range?: number[] } }> } | null)?.items?.find((it) => it.key?.value === sub[sub.length - 1]);
      if (pair?.key?.range) return pair.key.range[0]!;
      continue;
    }
    const node = sub.length === 0 ? doc.contents : doc.getIn(sub, true);
    if (isNode(node) && node.range) return node.range[0];
  }
  return 0;
}
