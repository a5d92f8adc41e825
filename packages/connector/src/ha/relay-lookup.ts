import { request } from 'undici';
import { z } from 'zod';
import {
  verifyToken,
  TokenError,
  MAX_RELAY_DESCRIPTION_BYTES,
  RELAY_DESCRIPTION_KIND,
  RELAY_DESCRIPTION_PATH,
} from '@tunnel/protocol';
import { relayTrust, certificateHint } from '../origin/ca-trust.js';
import { ControlError } from './control-client.js';

/**
 * One relay URL for every command: `tunnel login`, `tunnel run` and `tunnel
 * access tcp` each take any of a relay's URLs (public, connector endpoint,
 * control API), read its `/.well-known/tunnel-relay` and use the endpoint
 * they need. What answers is hostile until proven otherwise: the body is
 * capped, its shape checked, and only claims signed by the fleet key are used
 * (the key a credential pinned, else the one the document names).
 */

/** What a command learned about a relay (cert.json keeps it as `relay`). */
export interface RelayEndpoints {
  /** The URL as the user gave it. */
  url: string;
  relayId: string;
  region: string;
  /** Connector endpoints (ws:// or wss://). */
  connect: string[];
  control: string | null;
  public: string | null;
  fleetKey: string;
}

/** Which listener answered: that one is reached with the user's own URL (advertised ones may name an inside address). */
type Listener = 'public' | 'connect' | 'control';

const LOOKUP_TIMEOUT_MS = 10_000;
const MAX_URL = 2048;

const fleetKeySchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'not an Ed25519 public key (43 base64url characters)');
const urlOf = (schemes: string[]) =>
  z
    .string()
    .max(MAX_URL)
    .refine((s) => {
      try {
        return schemes.includes(new URL(s).protocol);
      } catch {
        return false;
      }
    }, `expected a ${schemes.map((s) => s.replace(':', '://')).join(' or ')} URL`);
const labelSchema = z.string().min(1).max(64).regex(/^[\x21-\x7e]+$/, 'printable, no spaces');

const documentSchema = z.object({
  tunnelRelay: z.literal(1),
  fleetKey: fleetKeySchema,
  signed: z.string().min(1).max(MAX_RELAY_DESCRIPTION_BYTES),
  answeredBy: z.enum(['public', 'connect', 'control']).optional(),
});
const claimsSchema = z.object({
  relayId: labelSchema,
  region: labelSchema,
  connect: z.array(urlOf(['ws:', 'wss:'])).min(1).max(16),
  control: urlOf(['http:', 'https:']).nullable(),
  public: urlOf(['http:', 'https:']).nullable(),
});

/** The URL's origin as an HTTP(S) base: ws:// and wss:// spellings of the connector endpoint are the same listener. */
export function relayBase(given: string): URL {
  let u: URL;
  try {
    u = new URL(given);
  } catch {
    throw new ControlError(0, 'bad_relay_url', `${JSON.stringify(given.slice(0, 200))} is not a URL: give one of the relay's URLs, e.g. https://relay.example.com:7000`);
  }
  const scheme = { 'http:': 'http:', 'https:': 'https:', 'ws:': 'http:', 'wss:': 'https:' }[u.protocol];
  if (!scheme) throw new ControlError(0, 'bad_relay_url', `${given}: a relay URL is http://, https://, ws:// or wss://, not ${u.protocol}//`);
  if (u.username || u.password) throw new ControlError(0, 'bad_relay_url', `${given}: a relay URL carries no user name or password`);
  return new URL(`${scheme}//${u.host}`);
}

/** A printable, bounded rendering of what a stranger sent, for an error line. */
function shown(s: string, max = 80): string {
  const clean = s.replace(/[^\x20-\x7e]+/g, ' ').replace(/\s+/g, ' ').trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** "an HTML page titled "Welcome to nginx!"", "JSON (error code not_found)", "3 bytes of text/plain". */
function whatWasFound(contentType: string, body: string, server: string | undefined): string {
  const by = server ? ` (server: ${shown(server, 40)})` : '';
  if (/html/i.test(contentType) || /^\s*<(!doctype|html|head|body)/i.test(body)) {
    const title = /<title[^>]*>([^<]{0,400})/i.exec(body)?.[1];
    return `an HTML page${title && shown(title) ? ` titled "${shown(title)}"` : ''}${by}`;
  }
  try {
    const j = JSON.parse(body) as { error?: { code?: unknown } };
    const code = j && typeof j === 'object' && j.error && typeof j.error.code === 'string' ? j.error.code : undefined;
    return `JSON${code ? ` (error code ${shown(code, 40)})` : ''}${by}`;
  } catch {
    /* not JSON */
  }
  if (body.length === 0) return `an empty body${by}`;
  return `${body.length} bytes of ${contentType ? shown(contentType, 40) : 'untyped data'}${by}`;
}

function issueText(e: z.ZodError): string {
  const first = e.issues[0];
  return first ? `${first.path.join('.') || 'document'}: ${first.message}` : 'invalid';
}

/** The given URL, on the listener it names, as the scheme that listener speaks. */
function asListener(base: URL, kind: 'ws' | 'http'): string {
  const tls = base.protocol === 'https:';
  return `${kind === 'ws' ? (tls ? 'wss' : 'ws') : tls ? 'https' : 'http'}://${base.host}`;
}

/**
 * Fetch and check a relay's description. `pinnedFleetKey` is the fleet key a
 * credential already holds: the relay must belong to that fleet.
 */
export async function describeRelay(given: string, o: { pinnedFleetKey?: string | null; timeoutMs?: number } = {}): Promise<RelayEndpoints> {
  const base = relayBase(given);
  const where = `${base.origin}${RELAY_DESCRIPTION_PATH}`;
  const timeout = o.timeoutMs ?? LOOKUP_TIMEOUT_MS;
  let r;
  try {
    r = await request(where, {
      method: 'GET',
      headers: { accept: 'application/json' },
      headersTimeout: timeout,
      bodyTimeout: timeout,
      dispatcher: relayTrust.dispatcher(),
    });
  } catch (e) {
    const err = e as { code?: string; message: string; cause?: { code?: string } };
    const code = err.code ?? err.cause?.code;
    throw new ControlError(0, 'relay_unreachable', `nothing answers at ${base.origin}: ${code ?? err.message}${certificateHint(code)}`);
  }
  // Read at most the cap (a stranger may stream forever).
  const chunks: Buffer[] = [];
  let size = 0;
  let tooBig = false;
  try {
    for await (const c of r.body as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_RELAY_DESCRIPTION_BYTES) {
        tooBig = true;
        break;
      }
      chunks.push(c);
    }
  } catch (e) {
    throw new ControlError(0, 'relay_unreachable', `${base.origin} stopped answering ${RELAY_DESCRIPTION_PATH}: ${(e as Error).message}`);
  } finally {
    if (tooBig) r.body.destroy();
  }
  const header = (name: string): string => {
    const v = r.headers[name];
    return Array.isArray(v) ? (v[0] ?? '') : (v ?? '');
  };
  const notARelay = (found: string) =>
    new ControlError(r.statusCode, 'not_a_relay', `${base.origin} is not a tunnel relay: GET ${RELAY_DESCRIPTION_PATH} answered ${found}`);
  if (tooBig) throw notARelay(`HTTP ${r.statusCode} with more than ${MAX_RELAY_DESCRIPTION_BYTES / 1024} KiB`);
  const body = Buffer.concat(chunks).toString('utf8');
  const found = () => whatWasFound(header('content-type'), body, header('server') || undefined);
  if (r.statusCode !== 200) throw notARelay(`HTTP ${r.statusCode} with ${found()}`);
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw notARelay(`HTTP 200 with ${found()}`);
  }
  const doc = documentSchema.safeParse(json);
  if (!doc.success) throw notARelay(`JSON that is not a relay description (${issueText(doc.error)})`);
  const pinned = o.pinnedFleetKey ?? null;
  if (pinned && doc.data.fleetKey !== pinned) {
    throw new ControlError(0, 'other_fleet', `the relay at ${base.origin} belongs to another fleet: its fleet key is ${doc.data.fleetKey}, your credential's is ${pinned}`);
  }
  let signed: Record<string, unknown>;
  try {
    signed = verifyToken(RELAY_DESCRIPTION_KIND, doc.data.signed, pinned ?? doc.data.fleetKey).claims;
  } catch (e) {
    const why = e instanceof TokenError ? (e.code === 'EXPIRED' ? 'it has expired (is this clock right?)' : `${e.code}: ${e.message}`) : (e as Error).message;
    throw new ControlError(0, 'bad_relay_description', `the relay description at ${base.origin} is not signed by its fleet key: ${why}`);
  }
  const claims = claimsSchema.safeParse(signed);
  if (!claims.success) throw new ControlError(0, 'bad_relay_description', `the relay description at ${base.origin} is malformed (${issueText(claims.error)})`);
  const c = claims.data;
  // Reached over TLS, a relay cannot send credentials to plain-text endpoints (a
  // downgrade would expose them); a plain public listener is ordinary (:80 next to :443).
  if (base.protocol === 'https:') {
    const plain = [...c.connect.filter((u) => u.startsWith('ws:')), ...(c.control?.startsWith('http:') ? [c.control] : [])];
    if (plain.length > 0) throw new ControlError(0, 'bad_relay_description', `the relay at ${base.origin} was reached over TLS but names plain-text endpoints for credentials (${plain.map((u) => shown(u)).join(', ')}): refused`);
  }
  // The listener the user named is reached as named; the others as advertised.
  const by: Listener | undefined = doc.data.answeredBy;
  return {
    url: given,
    relayId: c.relayId,
    region: c.region,
    connect: by === 'connect' ? [asListener(base, 'ws')] : c.connect,
    control: by === 'control' ? asListener(base, 'http') : c.control,
    public: by === 'public' ? asListener(base, 'http') : c.public,
    fleetKey: doc.data.fleetKey,
  };
}

/**
 * `tunnel run --relay URL...` (or `relays:` in config.yml): ws:// and wss://
 * URLs are connector endpoints already; any other relay URL is looked up.
 * Returns the connector endpoints to dial and the control APIs learned (for
 * the live relay list).
 */
export async function connectEndpointsFor(given: readonly string[], pinnedFleetKey: string | null): Promise<{ connect: string[]; control: string[] }> {
  const connect: string[] = [];
  const control: string[] = [];
  for (const url of given) {
    if (/^wss?:\/\//i.test(url)) {
      connect.push(url);
      continue;
    }
    const r = await describeRelay(url, { pinnedFleetKey });
    connect.push(...r.connect);
    if (r.control) control.push(r.control);
  }
  return { connect: [...new Set(connect)], control: [...new Set(control)] };
}
