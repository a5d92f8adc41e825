import { MAX_ASSERTION_SECONDS } from '@tunnel/protocol';
import type { AccessKeys } from './signing-keys.js';

/** Who a request was let through as: a person from the identity provider, or a service token. */
export type Identity =
  | { readonly kind: 'user'; readonly sub: string; readonly email: string; readonly groups: readonly string[] }
  | { readonly kind: 'service-token'; readonly clientId: string; readonly name: string };

/** Assertions are reused for this share of their life: signing is per identity and audience, not per request. */
const REUSE_FRACTION = 0.2;
const CACHE_ENTRIES = 10_000;

/**
 * Signs `Tunnel-Access-Jwt-Assertion`: `iss` the fleet, `aud` the policy's
 * audience tag, `sub`, `email`, `groups`, `iat`, `exp` (at most 5 min).
 * One identity asking many times within a minute gets the same JWT back.
 */
export class AssertionSigner {
  private readonly cache = new Map<string, { jwt: string; reuseUntil: number }>();

  constructor(
    private readonly keys: AccessKeys,
    readonly issuer: string,
    private readonly lifetimeSeconds: number = MAX_ASSERTION_SECONDS,
  ) {
    if (lifetimeSeconds < 1 || lifetimeSeconds > MAX_ASSERTION_SECONDS) throw new RangeError(`assertion lifetime must be 1..${MAX_ASSERTION_SECONDS} s`);
  }

  async sign(identity: Identity, audience: string, host: string): Promise<string> {
    const key = this.keys.current();
    const cacheKey = `${key.kid}\n${audience}\n${host}\n${identity.kind === 'user' ? `u\n${identity.sub}\n${identity.email}\n${identity.groups.join(',')}` : `t\n${identity.clientId}`}`;
    const now = Date.now();
    const hit = this.cache.get(cacheKey);
    if (hit && hit.reuseUntil > now) return hit.jwt;
    const claims =
      identity.kind === 'user'
        ? { type: 'app', email: identity.email, groups: [...identity.groups], host }
        : { type: 'service-token', common_name: identity.clientId, service_token_name: identity.name, host };
    // jose is loaded with the first policy that signs (most relays never need it: ≈ 3 MB RSS).
    const { SignJWT } = await import('jose');
    const jwt = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setAudience(audience)
      .setSubject(identity.kind === 'user' ? identity.sub : identity.clientId)
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.floor(now / 1000) + this.lifetimeSeconds)
      .sign(key.privateKey);
    if (this.cache.size >= CACHE_ENTRIES) this.cache.clear();
    this.cache.set(cacheKey, { jwt, reuseUntil: now + this.lifetimeSeconds * 1000 * REUSE_FRACTION });
    return jwt;
  }
}
