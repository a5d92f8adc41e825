import { HOP_BY_HOP } from '@tunnel/protocol';
import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { ReplayCache } from './replay-cache.js';

/**
 * The one signature scheme for relay-to-relay requests: forwarded public
 * requests (peer endpoint) and the dashboard's relay-stats calls.
 *
 * HMAC-SHA-256 keyed from the fleet's signing secret (every relay holds it)
 * rather than Ed25519: it is checked on every forwarded request, and an HMAC
 * in native code costs microseconds where a JS Ed25519 verify costs
 * milliseconds.
 *
 * The signature covers everything the receiver acts on: who sent it and when,
 * a nonce, the request id, method, Host, request target (path and query),
 * the public client's IP and scheme, a digest of the forwarded headers, and
 * the body (see BodySeal). The nonce is claimed in a replay cache for the
 * validity window, so a captured request is served at most once — fleet-wide
 * when the cache is the fleet's Redis.
 */
export interface SignedRequest {
  from: string;
  /** ms since the epoch */
  time: number;
  nonce: string;
  requestId: string;
  method: string;
  host: string;
  /** The request target as sent: path and query. */
  target: string;
  clientIp: string;
  scheme: string;
  /** headersDigest() of the forwarded headers. */
  headers: string;
  body: BodySeal;
}

/**
 * How the body is bound to the signature:
 * - `none`: no body (no Content-Length, no Transfer-Encoding);
 * - `upgrade`: an HTTP upgrade, no body; the protocol asked for is signed
 *   because the connector acts on it (WebSocket to the origin, or a raw TCP
 *   bridge for `tunnel access tcp`), and Upgrade itself is a hop header;
 * - `digest`: a body read whole before forwarding (≤ 64 KiB), by length and SHA-256;
 * - `stream`: a body forwarded as it arrives. Its bytes are followed, inside
 *   the peer request's body, by a 32-byte HMAC trailer under a key derived
 *   from this request's signature.
 *
 * Why an in-band MAC trailer for streams (and not HTTP trailers or a
 * per-request key without a trailer): undici, which carries forwarded
 * requests for speed, cannot send request trailers, and a per-request key
 * alone authenticates nothing unless something is MAC'd with it at the end.
 * The trailer costs one native HMAC pass over the bytes, keeps the body
 * streaming with flow control, and the receiver holds back only 32 bytes; if
 * it does not verify at the end the receiver resets the stream to the
 * connector, so the origin sees an aborted request, never a complete one.
 * `length` restores the client's framing (the peer hop is always chunked).
 */
export type BodySeal =
  | { readonly kind: 'none' }
  | { readonly kind: 'upgrade'; readonly protocol: UpgradeProtocol }
  | { readonly kind: 'digest'; readonly length: number; readonly sha256: string }
  | { readonly kind: 'stream'; readonly length: number | 'chunked' };

export const PeerHeaders = {
  from: 'tunnel-peer-relay',
  time: 'tunnel-peer-time',
  nonce: 'tunnel-peer-nonce',
  sig: 'tunnel-peer-signature',
  requestId: 'tunnel-peer-request-id',
  clientIp: 'tunnel-peer-client-ip',
  scheme: 'tunnel-peer-scheme',
  body: 'tunnel-peer-body',
} as const;

const PEER_HEADER_SET = new Set<string>(Object.values(PeerHeaders));

/**
 * Headers the hop between relays may add, drop or rewrite (undici sets its
 * own framing and connection headers): neither signed nor passed on. The
 * body's framing travels in the signed BodySeal instead.
 */
// Hop-by-hop headers (the shared list) are the hop's own; the framing is sent as the body seal.
const UNSIGNED = new Set([...HOP_BY_HOP, 'expect', 'content-length']);

/** Whether a (lower-case) header name is forwarded and covered by the headers digest. */
export function isSignedHeader(lowerName: string): boolean {
  return !UNSIGNED.has(lowerName) && !PEER_HEADER_SET.has(lowerName);
}

/**
 * The canonical digest of forwarded headers: `lowercase-name:value\n` for
 * each pair in order, one SHA-256 over the joined string (one native call;
 * forwarding is benchmarked). Order and duplicates are kept, as the receiver
 * passes them on. `raw` alternates names and values (node's rawHeaders).
 */
export function headersDigest(raw: ReadonlyArray<string>): string {
  let s = '';
  for (let i = 0; i < raw.length; i += 2) {
    const lk = raw[i]!.toLowerCase();
    if (isSignedHeader(lk)) s += `${lk}:${raw[i + 1]}\n`;
  }
  return createHash('sha256').update(s, 'latin1').digest('base64url');
}

/** The upgrades a relay carries: WebSocket, and `tunnel access tcp`'s raw bridge. */
export const UPGRADE_PROTOCOLS = ['websocket', 'tunnel-tcp'] as const;
export type UpgradeProtocol = (typeof UPGRADE_PROTOCOLS)[number];
export function upgradeProtocol(value: string | undefined): UpgradeProtocol | null {
  const v = (value ?? '').trim().toLowerCase();
  return (UPGRADE_PROTOCOLS as readonly string[]).includes(v) ? (v as UpgradeProtocol) : null;
}

export function encodeBodySeal(b: BodySeal): string {
  switch (b.kind) {
    case 'none':
      return 'none';
    case 'upgrade':
      return `upgrade;${b.protocol}`;
    case 'digest':
      return `digest;len=${b.length};sha256=${b.sha256}`;
    case 'stream':
      return b.length === 'chunked' ? 'stream;chunked' : `stream;len=${b.length}`;
  }
}

const DIGEST_RE = /^digest;len=(0|[1-9][0-9]{0,8});sha256=([A-Za-z0-9_-]{43})$/;
const STREAM_RE = /^stream;(?:len=(0|[1-9][0-9]{0,15})|(chunked))$/;

export function decodeBodySeal(s: string): BodySeal | null {
  if (s === 'none') return { kind: 'none' };
  if (s.startsWith('upgrade;')) {
    const protocol = upgradeProtocol(s.slice(8));
    return protocol && s.slice(8) === protocol ? { kind: 'upgrade', protocol } : null;
  }
  let m = DIGEST_RE.exec(s);
  if (m) return { kind: 'digest', length: Number(m[1]), sha256: m[2]! };
  m = STREAM_RE.exec(s);
  if (m) return { kind: 'stream', length: m[2] ? 'chunked' : Number(m[1]) };
  return null;
}

export function sha256(body: Buffer): string {
  return createHash('sha256').update(body).digest('base64url');
}

export const MAC_TRAILER_BYTES = 32;
/**
 * A signed request's time must be less than this from ours; nonces are kept
 * for twice this. The bound is strict so that a nonce claimed at the earliest
 * accepted moment is still held at the latest one (a store expires a key
 * claimed for `ttl` ms exactly `ttl` ms later).
 */
export const DEFAULT_PEER_WINDOW_MS = 60_000;

export class PeerAuth {
  private readonly key: Buffer;

  constructor(
    fleetSecretKey: string,
    private readonly replay: ReplayCache,
    readonly windowMs = DEFAULT_PEER_WINDOW_MS,
  ) {
    this.key = createHash('sha256').update('tunnel-peer/v2\n').update(fleetSecretKey).digest();
  }

  /** A fresh nonce: randomUUID draws from a cached entropy pool (no syscall per request). */
  static nonce(): string {
    return randomUUID();
  }

  sign(r: SignedRequest): string {
    return createHmac('sha256', this.key).update(canonical(r), 'utf8').digest('base64url');
  }

  /**
   * Null when the signature verifies, the time is within the window and the
   * nonce is new; else why it is refused. The nonce is claimed only for a
   * valid signature, so forgeries cannot fill the cache.
   */
  async verify(r: SignedRequest, sig: string): Promise<string | null> {
    return this.checkSignature(r, sig) ?? (await this.claimNonce(r));
  }

  /** The signature and time alone (no nonce claimed yet): null when valid. */
  checkSignature(r: SignedRequest, sig: string): string | null {
    if (!Number.isFinite(r.time) || Math.abs(Date.now() - r.time) >= this.windowMs) return 'stale or missing timestamp';
    const want = Buffer.from(this.sign(r));
    const got = Buffer.from(sig);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return 'bad signature';
    return null;
  }

  /** Claims the nonce of a request whose signature verified: null when it is new. */
  async claimNonce(r: SignedRequest): Promise<string | null> {
    if (!r.nonce) return 'missing nonce';
    let fresh: boolean;
    try {
      fresh = await this.replay.claim(`${r.from}\n${r.nonce}`, 2 * this.windowMs);
    } catch (e) {
      return `replay check unavailable: ${(e as Error).message}`;
    }
    return fresh ? null : 'replayed request (nonce already used)';
  }

  /** The per-request key of a streamed body's MAC trailer, bound to the request's signature. */
  streamKey(sig: string): Buffer {
    return createHmac('sha256', this.key).update('stream\n').update(sig).digest();
  }

  /** Sender side: passes the body through and appends the MAC trailer at its end. */
  sealStream(sig: string): Transform {
    const mac = createHmac('sha256', this.streamKey(sig));
    return new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        mac.update(chunk);
        cb(null, chunk);
      },
      flush(cb: TransformCallback) {
        cb(null, mac.digest());
      },
    });
  }

  /**
   * Receiver side: passes the body on minus the trailer (held back, 32
   * bytes), and fails the stream at its end when the MAC or the declared
   * length does not match: the caller then resets the connector stream.
   */
  openStream(sig: string, length: number | 'chunked'): Transform {
    const mac = createHmac('sha256', this.streamKey(sig));
    let held: Buffer = Buffer.alloc(0);
    let passed = 0;
    return new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        const all = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
        if (all.length <= MAC_TRAILER_BYTES) {
          held = all;
          return cb();
        }
        const out = all.subarray(0, all.length - MAC_TRAILER_BYTES);
        held = Buffer.from(all.subarray(all.length - MAC_TRAILER_BYTES));
        passed += out.length;
        if (length !== 'chunked' && passed > length) return cb(new Error('streamed body longer than signed'));
        mac.update(out);
        cb(null, out);
      },
      flush(cb: TransformCallback) {
        const want = mac.digest();
        if (held.length !== MAC_TRAILER_BYTES || !timingSafeEqual(held, want)) return cb(new Error('streamed body MAC does not verify'));
        if (length !== 'chunked' && passed !== length) return cb(new Error('streamed body length differs from the signed one'));
        cb();
      },
    });
  }

  /** The signed header pairs for a request (flat name/value list). */
  headerPairs(r: SignedRequest, sig: string): string[] {
    return [
      PeerHeaders.from, r.from,
      PeerHeaders.time, String(r.time),
      PeerHeaders.nonce, r.nonce,
      PeerHeaders.requestId, r.requestId,
      PeerHeaders.clientIp, r.clientIp,
      PeerHeaders.scheme, r.scheme,
      PeerHeaders.body, encodeBodySeal(r.body),
      PeerHeaders.sig, sig,
    ];
  }
}

function canonical(r: SignedRequest): string {
  // Newline-separated; a field containing a newline could shift the others,
  // so none may (header values and request targets cannot hold one anyway).
  const fields = [
    'tunnel-peer/v2',
    r.from,
    String(r.time),
    r.nonce,
    r.requestId,
    r.method,
    r.host,
    r.target,
    r.clientIp,
    r.scheme,
    r.headers,
    encodeBodySeal(r.body),
  ];
  for (const f of fields) if (f.includes('\n')) return `invalid\n${randomUUID()}`; // never verifies
  return fields.join('\n');
}

/** A short, bounded label for a refusal message (metrics). */
export function peerRefusalReason(message: string): string {
  if (message.includes('bad signature')) return 'signature';
  if (message.includes('stale')) return 'stale';
  if (message.includes('replayed')) return 'replay';
  if (message.includes('replay check unavailable')) return 'replay_check_unavailable';
  if (message.includes('body')) return 'body';
  return 'malformed';
}

/** Reads the signed fields a peer request carries (node:http request). */
export function readSignedRequest(req: { method?: string; url?: string; headers: Record<string, string | string[] | undefined>; rawHeaders: string[] }): { fields: SignedRequest; sig: string } | string {
  const h = (n: string): string => {
    const v = req.headers[n];
    return (Array.isArray(v) ? v[0] : v) ?? '';
  };
  const body = decodeBodySeal(h(PeerHeaders.body));
  if (!body) return 'missing or malformed body seal';
  return {
    sig: h(PeerHeaders.sig),
    fields: {
      from: h(PeerHeaders.from),
      time: Number(h(PeerHeaders.time) || NaN),
      nonce: h(PeerHeaders.nonce),
      requestId: h(PeerHeaders.requestId),
      method: req.method ?? 'GET',
      host: h('host'),
      target: req.url ?? '/',
      clientIp: h(PeerHeaders.clientIp),
      scheme: h(PeerHeaders.scheme),
      headers: headersDigest(req.rawHeaders),
      body,
    },
  };
}
