import type * as oidc from 'openid-client';

/** openid-client (and its jose) is loaded with the first login, not at start: most relays have no identity provider. */
const openidClient = () => import('openid-client');
import type { IdentityProvider } from '../store/access-records.js';

/** A failure talking to an identity provider: `unavailable` when it cannot be reached, `refused` when its answer does not check out. */
export class IdpError extends Error {
  constructor(
    readonly kind: 'unavailable' | 'refused',
    message: string,
  ) {
    super(message);
  }
}

export interface OidcLimits {
  /** Largest response body taken from an identity provider (discovery, JWKS, token). */
  maxResponseBytes: number;
  /** Per request to the identity provider. */
  timeoutMs: number;
  /** How long a discovered configuration is reused. */
  discoveryTtlMs: number;
}

export const DEFAULT_OIDC_LIMITS: OidcLimits = { maxResponseBytes: 64 * 1024, timeoutMs: 10_000, discoveryTtlMs: 10 * 60_000 };

export interface Claims {
  readonly sub: string;
  readonly email: string;
  readonly emailVerified: boolean;
  readonly groups: string[];
}

/**
 * The relay as a confidential OpenID Connect client of each account's
 * provider (openid-client): discovery from the issuer URL (cached per
 * account), the authorization-code flow with PKCE, state and nonce. Every
 * request to a provider is bounded in time and size.
 */
export class OidcClients {
  private readonly configs = new Map<string, { idp: IdentityProvider; config: Promise<oidc.Configuration>; at: number }>();

  constructor(private readonly limits: OidcLimits = DEFAULT_OIDC_LIMITS) {}

  private configFor(idp: IdentityProvider): Promise<oidc.Configuration> {
    const hit = this.configs.get(idp.accountId);
    if (hit && hit.idp === idp && Date.now() - hit.at < this.limits.discoveryTtlMs) return hit.config;
    const issuer = new URL(idp.issuer);
    // Plain http only for a provider on this very host (tests, a local provider).
    const insecure = issuer.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(issuer.hostname);
    const config = openidClient()
      .then((oidc) =>
        oidc.discovery(issuer, idp.clientId, { client_secret: idp.clientSecret }, oidc.ClientSecretPost(idp.clientSecret), {
          [oidc.customFetch]: this.boundedFetch,
          ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {}),
        }),
      )
      .catch((e: unknown) => {
        // A failed discovery is not kept: the next login tries again.
        this.configs.delete(idp.accountId);
        throw toIdpError(e, `discovery at ${idp.issuer}`);
      });
    if (this.configs.size > 10_000) this.configs.clear();
    this.configs.set(idp.accountId, { idp, config, at: Date.now() });
    return config;
  }

  /** Where to send the browser to log in. */
  async authorizationUrl(idp: IdentityProvider, redirectUri: string, tx: { state: string; nonce: string; verifier: string }): Promise<URL> {
    const config = await this.configFor(idp);
    const oidc = await openidClient();
    return oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'openid email profile',
      code_challenge: await oidc.calculatePKCECodeChallenge(tx.verifier),
      code_challenge_method: 'S256',
      state: tx.state,
      nonce: tx.nonce,
    });
  }

  /** Finishes a login at the callback: the code is exchanged and the id_token checked (issuer, audience, nonce, signature). */
  async finish(idp: IdentityProvider, callbackUrl: URL, tx: { state: string; nonce: string; verifier: string }): Promise<Claims> {
    const config = await this.configFor(idp);
    const oidc = await openidClient();
    let tokens;
    try {
      tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: tx.verifier, expectedState: tx.state, expectedNonce: tx.nonce, idTokenExpected: true });
    } catch (e) {
      throw toIdpError(e, 'code exchange');
    }
    const c = tokens.claims();
    if (!c || typeof c.sub !== 'string') throw new IdpError('refused', 'the identity provider returned no id_token subject');
    const email = typeof c.email === 'string' ? c.email.toLowerCase() : '';
    const raw = (c as Record<string, unknown>)[idp.groupsClaim];
    const groups = Array.isArray(raw) ? raw.filter((g): g is string => typeof g === 'string').slice(0, 200) : typeof raw === 'string' ? [raw] : [];
    return { sub: c.sub, email, emailVerified: c.email_verified === true, groups };
  }

  /** fetch with a deadline and a ceiling on the body: a provider that stalls or floods costs one login, not the relay. */
  private readonly boundedFetch: oidc.CustomFetch = async (url, options) => {
    const r = await fetch(url, { ...options, signal: AbortSignal.timeout(this.limits.timeoutMs), redirect: 'manual' } as RequestInit);
    const declared = Number(r.headers.get('content-length') ?? 0);
    if (declared > this.limits.maxResponseBytes) {
      await r.body?.cancel();
      throw new IdpError('refused', `the identity provider's answer is over ${this.limits.maxResponseBytes} bytes`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (r.body) {
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
        size += chunk.length;
        if (size > this.limits.maxResponseBytes) throw new IdpError('refused', `the identity provider's answer is over ${this.limits.maxResponseBytes} bytes`);
        chunks.push(chunk);
      }
    }
    return new Response(size === 0 ? null : Buffer.concat(chunks), { status: r.status, statusText: r.statusText, headers: r.headers });
  };
}

function toIdpError(e: unknown, what: string): IdpError {
  if (e instanceof IdpError) return e;
  const err = e as Error & { code?: string; cause?: { code?: string; name?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.name ?? err.code ?? err.name;
  const network = err.name === 'TimeoutError' || err.name === 'AbortError' || err.message === 'fetch failed' || cause === 'ECONNREFUSED' || cause === 'TimeoutError' || cause === 'UND_ERR_CONNECT_TIMEOUT';
  if (network) return new IdpError('unavailable', `${what}: the identity provider cannot be reached (${cause ?? err.message})`);
  if (err.cause instanceof IdpError) return err.cause;
  return new IdpError('refused', `${what}: ${err.message}`);
}
