
/**
 * The relay's own cookies, sealed (A256GCM, `dir`) with a key derived from
 * the fleet secret, so any relay of the fleet opens what another sealed and
 * nobody else can read or forge one. Both are bound to the hostname they
 * were issued on: copied to another hostname, they open to nothing.
 */
export const SESSION_COOKIE = 'tunnel_access';
export const LOGIN_COOKIE = 'tunnel_access_login';

/** A cookie longer than this is not even opened (a browser sends at most ~4 KiB per cookie). */
const MAX_COOKIE_CHARS = 4096;
const LOGIN_SECONDS = 600;

export interface Session {
  readonly host: string;
  readonly accountId: string;
  readonly sub: string;
  readonly email: string;
  /** Whether the identity provider said the email is verified; email and domain rules need it. */
  readonly emailVerified: boolean;
  readonly groups: readonly string[];
  /** Seconds since the epoch. */
  readonly exp: number;
}

/** A login under way: what the callback needs to finish it (state, nonce, PKCE verifier, where to return). */
export interface LoginTransaction {
  readonly host: string;
  readonly accountId: string;
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
  /** A path on `host`, never a URL: the callback cannot be turned into an open redirect. */
  readonly returnTo: string;
}

export class CookieSealer {
  constructor(private readonly key: Uint8Array) {}

  sealSession(s: Omit<Session, 'exp'>, seconds: number): Promise<string> {
    return this.seal({ t: 's', ...s }, seconds);
  }

  async openSession(value: string | undefined, host: string): Promise<Session | null> {
    const p = await this.open(value, 's');
    if (!p || p.host !== host || typeof p.sub !== 'string' || typeof p.email !== 'string' || typeof p.accountId !== 'string' || !Array.isArray(p.groups)) return null;
    return { host: p.host, accountId: p.accountId, sub: p.sub, email: p.email, emailVerified: p.emailVerified === true, groups: p.groups.filter((g): g is string => typeof g === 'string'), exp: Number(p.exp) };
  }

  sealLogin(tx: LoginTransaction): Promise<string> {
    return this.seal({ t: 'l', ...tx }, LOGIN_SECONDS);
  }

  async openLogin(value: string | undefined, host: string): Promise<LoginTransaction | null> {
    const p = await this.open(value, 'l');
    if (!p || p.host !== host) return null;
    const { accountId, state, nonce, verifier, returnTo } = p;
    if (![accountId, state, nonce, verifier, returnTo].every((v) => typeof v === 'string')) return null;
    return { host, accountId, state, nonce, verifier, returnTo } as LoginTransaction;
  }

  // jose is loaded with the first Access login (most relays never need it).
  private async seal(payload: Record<string, unknown>, seconds: number): Promise<string> {
    const { EncryptJWT } = await import('jose');
    const now = Math.floor(Date.now() / 1000);
    return new EncryptJWT(payload).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setIssuedAt(now).setExpirationTime(now + seconds).encrypt(this.key);
  }

  private async open(value: string | undefined, kind: 's' | 'l'): Promise<Record<string, unknown> | null> {
    if (!value || value.length > MAX_COOKIE_CHARS) return null;
    try {
      const { jwtDecrypt } = await import('jose');
      const { payload } = await jwtDecrypt(value, this.key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] });
      return payload.t === kind ? (payload as Record<string, unknown>) : null;
    } catch {
      // Tampered, expired, from another fleet, or garbage: simply no session.
      return null;
    }
  }
}

/** The value of one cookie from a request's Cookie header(s); the first wins. */
export function readCookie(header: string | string[] | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const line of Array.isArray(header) ? header : [header]) {
    for (const part of line.split(';')) {
      const eq = part.indexOf('=');
      if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** The cookie line without the relay's own cookies (they are a credential: the origin never sees them); '' when nothing is left. */
export function withoutAccessCookies(line: string): string {
  return line
    .split(';')
    .filter((part) => {
      const name = part.slice(0, part.indexOf('=') === -1 ? undefined : part.indexOf('=')).trim();
      return name !== SESSION_COOKIE && name !== LOGIN_COOKIE;
    })
    .join(';')
    .trim();
}

export function setCookie(name: string, value: string, o: { secure: boolean; maxAgeSeconds: number; path?: string }): string {
  // No Domain attribute: host-only, never sent to sibling hostnames.
  return `${name}=${value}; Path=${o.path ?? '/'}; Max-Age=${o.maxAgeSeconds}; HttpOnly; SameSite=Lax${o.secure ? '; Secure' : ''}`;
}
