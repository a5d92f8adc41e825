import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Relay-to-relay requests are signed with an HMAC keyed from the fleet's
 * signing secret (every relay of the fleet holds it). HMAC rather than
 * Ed25519: it is checked on every forwarded request, and SHA-256 in native
 * code costs microseconds where a JS Ed25519 verify costs milliseconds.
 */
export class PeerAuth {
  private readonly key: Buffer;

  constructor(fleetSecretKey: string) {
    this.key = createHash('sha256').update('tunnel-peer/v1\n').update(fleetSecretKey).digest();
  }

  sign(fromRelay: string, time: number, requestId: string, method: string, host: string, path: string): string {
    return createHmac('sha256', this.key).update(`${fromRelay}\n${time}\n${requestId}\n${method}\n${host}\n${path}`).digest('base64url');
  }

  /** Null when valid, else the reason. */
  verify(sig: string, fromRelay: string, time: number, requestId: string, method: string, host: string, path: string, maxSkewMs = 60_000): string | null {
    if (!Number.isFinite(time) || Math.abs(Date.now() - time) > maxSkewMs) return 'stale or missing timestamp';
    const want = Buffer.from(this.sign(fromRelay, time, requestId, method, host, path));
    const got = Buffer.from(sig);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return 'bad signature';
    return null;
  }
}

export const PeerHeaders = {
  from: 'tunnel-peer-relay',
  time: 'tunnel-peer-time',
  sig: 'tunnel-peer-signature',
  requestId: 'tunnel-peer-request-id',
  clientIp: 'tunnel-peer-client-ip',
  scheme: 'tunnel-peer-scheme',
} as const;

const PEER_HEADER_SET = new Set<string>(Object.values(PeerHeaders));
export function isPeerHeader(lowerName: string): boolean {
  return PEER_HEADER_SET.has(lowerName);
}
