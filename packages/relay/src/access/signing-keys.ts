import { createPrivateKey, createPublicKey, hkdfSync, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';

/**
 * Access keys derived from the fleet secret, so every relay of the fleet
 * holds the same ones without storing or shipping any: a relay signs with
 * the key of the current epoch, and the JWKS lists the previous, current and
 * next epochs' public keys. Rotation is the epoch turning over: an assertion
 * signed just before still verifies after (previous key listed), and a
 * connector that cached the JWKS already holds the next key.
 */
export interface AssertionKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
}

/** Default key lifetime: one day per epoch, so each key is published for three. */
export const DEFAULT_KEY_EPOCH_MS = 24 * 3600 * 1000;

// PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export class AccessKeys {
  private readonly cache = new Map<number, AssertionKey>();
  /** Seals the relay's cookies (session and login transaction): A256GCM. */
  readonly cookieKey: Uint8Array;

  constructor(
    private readonly fleetSecret: string,
    readonly epochMs: number = DEFAULT_KEY_EPOCH_MS,
    private readonly now: () => number = Date.now,
  ) {
    this.cookieKey = new Uint8Array(hkdfSync('sha256', Buffer.from(fleetSecret, 'utf8'), 'tunnel-access', 'cookie-key', 32));
  }

  private epoch(): number {
    return Math.floor(this.now() / this.epochMs);
  }

  private keyFor(epoch: number): AssertionKey {
    let k = this.cache.get(epoch);
    if (k) return k;
    const seed = Buffer.from(hkdfSync('sha256', Buffer.from(this.fleetSecret, 'utf8'), 'tunnel-access', `assertion-key:${this.epochMs}:${epoch}`, 32));
    const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    const jwk = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
    // The kid names the key, not the epoch: nothing about the schedule leaks into it.
    const kid = Buffer.from(hkdfSync('sha256', seed, 'tunnel-access', 'kid', 12)).toString('base64url');
    k = { kid, privateKey, publicJwk: { ...jwk, kid, alg: 'EdDSA', use: 'sig' } };
    if (this.cache.size > 8) this.cache.clear();
    this.cache.set(epoch, k);
    return k;
  }

  /** The key assertions are signed with now. */
  current(): AssertionKey {
    return this.keyFor(this.epoch());
  }

  /** What `/.well-known/tunnel-access/certs` serves. */
  jwks(): { keys: JWK[] } {
    const e = this.epoch();
    return { keys: [e, e - 1, e + 1].map((n) => this.keyFor(n).publicJwk) };
  }
}
