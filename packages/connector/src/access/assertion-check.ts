import type { JWTPayload, createRemoteJWKSet, errors } from 'jose';
import { fetch as undiciFetch } from 'undici';
import { ACCESS_JWKS_PATH, MAX_ASSERTION_SECONDS, fleetIssuer } from '@tunnel/protocol';
import { relayTrust } from '../origin/ca-trust.js';

export type AssertionVerdict =
  | { readonly ok: true; readonly claims: JWTPayload }
  /** `unavailable`: the fleet's keys cannot be fetched (503); anything else is a refusal (403). */
  | { readonly ok: false; readonly reason: string; readonly unavailable?: boolean };

export interface AssertionCheckOptions {
  /** Keys are refetched at most this often when an unknown kid shows up. */
  cooldownMs?: number;
  /** Keys are refetched after this long anyway. */
  cacheMaxAgeMs?: number;
  timeoutMs?: number;
}

/**
 * `originRequest.access: { required: true, audTag: [...] }`: the connector
 * checks the relay's `Tunnel-Access-Jwt-Assertion` itself before a byte
 * reaches the origin, so an origin stays safe even if a relay is
 * misconfigured. Keys come from the fleet's JWKS on the control API, over
 * the same CA trust as every other call to the fleet; jose caches them and
 * refetches on an unknown kid no more often than the cooldown.
 */
export class AssertionCheck {
  /** jose and the key set, loaded with the first request a rule requires Access for: most connectors never check one (≈ 3 MB RSS). */
  private verifier: Promise<{ jose: typeof import('jose'); jwks: ReturnType<typeof createRemoteJWKSet> }> | null = null;
  readonly issuer: string;
  private readonly url: URL;

  constructor(controlUrl: string, fleetKey: string, private readonly o: AssertionCheckOptions = {}) {
    this.issuer = fleetIssuer(fleetKey);
    this.url = new URL(ACCESS_JWKS_PATH, controlUrl);
  }

  private load() {
    return (this.verifier ??= import('jose').then((jose) => ({
      jose,
      jwks: jose.createRemoteJWKSet(this.url, {
        cooldownDuration: this.o.cooldownMs ?? 30_000,
        cacheMaxAge: this.o.cacheMaxAgeMs ?? 10 * 60_000,
        timeoutDuration: this.o.timeoutMs ?? 5_000,
        // The connector's trust for the fleet (--ca-file / TUNNEL_CA_FILE / cert.json), not only the system store.
        [jose.customFetch]: ((input: string, init: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher: relayTrust.dispatcher() } as never)) as never,
      }),
    })));
  }

  async verify(token: string | undefined, audTags: readonly string[]): Promise<AssertionVerdict> {
    if (!token) return { ok: false, reason: 'no Tunnel-Access-Jwt-Assertion on the request' };
    if (token.length > 8_192) return { ok: false, reason: 'the assertion is too large' };
    const { jose, jwks } = await this.load();
    const { errors } = jose;
    try {
      const { payload } = await jose.jwtVerify(token, jwks, {
        issuer: this.issuer,
        audience: [...audTags],
        // EdDSA only: an `alg: none` or HMAC token never reaches a key.
        algorithms: ['EdDSA', 'ES256'],
        requiredClaims: ['exp', 'iat', 'sub'],
        maxTokenAge: MAX_ASSERTION_SECONDS + 5,
        clockTolerance: 5,
      });
      if (typeof payload.exp === 'number' && typeof payload.iat === 'number' && payload.exp - payload.iat > MAX_ASSERTION_SECONDS) {
        return { ok: false, reason: 'the assertion is valid for longer than 5 minutes' };
      }
      return { ok: true, claims: payload };
    } catch (e) {
      if (e instanceof errors.JWKSTimeout || (e instanceof Error && !(e instanceof errors.JOSEError))) {
        return { ok: false, reason: `the fleet's Access keys cannot be fetched: ${e.message}`, unavailable: true };
      }
      return { ok: false, reason: `invalid assertion: ${describe(errors, e as errors.JOSEError)}` };
    }
  }
}

function describe(errors: typeof import('jose').errors, e: errors.JOSEError): string {
  if (e instanceof errors.JWTExpired) return 'expired';
  if (e instanceof errors.JWTClaimValidationFailed) return `${e.claim} ${e.reason}`;
  if (e instanceof errors.JWKSNoMatchingKey) return 'signed by a key the fleet does not publish';
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'bad signature';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  return e.code;
}
