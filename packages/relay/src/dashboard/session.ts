// Operator sessions: the operator key, once checked, becomes an HttpOnly
// SameSite=Strict cookie `EXP.NONCE.MAC` (HMAC under a key derived from the
// operator key, so changing the key ends every session). Every action also
// carries a CSRF token bound to the session (HMAC of its nonce), sent in the
// X-CSRF-Token header by the page's script, and must come from this origin.

import type http from 'node:http';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ApiError } from '../control/api-error.js';

const COOKIE = 'tunnel_dash';
export const SESSION_MS = 12 * 3600 * 1000;
export const CSRF_HEADER = 'x-csrf-token';

export interface Session {
  readonly exp: number;
  readonly nonce: string;
}

export class DashboardSessions {
  private readonly key: Buffer;
  /** Nonces of sessions logged out before they expired (dropped once expired). */
  private readonly loggedOut = new Map<string, number>();

  constructor(operatorKey: string) {
    this.key = createHash('sha256').update('tunnel-dashboard-session/v1\n').update(operatorKey).digest();
  }

  /** A new session's Set-Cookie value. */
  create(req: http.IncomingMessage): string {
    const exp = Date.now() + SESSION_MS;
    const nonce = randomBytes(12).toString('base64url');
    return cookie(`${exp}.${nonce}.${this.mac(`${exp}.${nonce}`)}`, SESSION_MS / 1000, req);
  }

  /** The Set-Cookie value that clears the session cookie (and forgets the session). */
  end(req: http.IncomingMessage): string {
    const s = this.current(req);
    if (s) this.loggedOut.set(s.nonce, s.exp);
    return cookie('', 0, req);
  }

  /** The request's valid, unexpired, not logged-out session, if any. */
  current(req: http.IncomingMessage): Session | null {
    const raw = cookieValue(req.headers.cookie, COOKIE);
    if (!raw) return null;
    const [expS, nonce, mac] = raw.split('.');
    if (!expS || !nonce || !mac) return null;
    if (!equal(this.mac(`${expS}.${nonce}`), mac)) return null;
    const exp = Number(expS);
    const now = Date.now();
    for (const [n, e] of this.loggedOut) if (e < now) this.loggedOut.delete(n);
    if (!(exp > now) || this.loggedOut.has(nonce)) return null;
    return { exp, nonce };
  }

  /** The CSRF token of a session (put in the page; the script echoes it). */
  csrfToken(s: Session): string {
    return this.mac(`csrf\n${s.nonce}`);
  }

  /**
   * An action must come from this origin and carry the session's CSRF token:
   * 403 otherwise. (The cookie is SameSite=Strict as well: both would have
   * to fail for a forged request to pass.)
   */
  checkAction(req: http.IncomingMessage, s: Session): void {
    checkSameOrigin(req);
    const presented = req.headers[CSRF_HEADER];
    if (typeof presented !== 'string' || presented === '') throw new ApiError(403, 'csrf_missing', 'the request carries no CSRF token: reload the dashboard');
    if (!equal(this.csrfToken(s), presented)) throw new ApiError(403, 'csrf_invalid', 'the CSRF token does not match this session: reload the dashboard');
  }

  private mac(s: string): string {
    return createHmac('sha256', this.key).update(s).digest('base64url');
  }
}

/** A browser's Origin (or, without one, Sec-Fetch-Site) must name this host. */
export function checkSameOrigin(req: http.IncomingMessage): void {
  const origin = req.headers.origin;
  if (origin === undefined) {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') throw new ApiError(403, 'cross_origin', 'cross-origin request refused');
    return;
  }
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    host = '';
  }
  if (host === '' || host !== req.headers.host) throw new ApiError(403, 'cross_origin', 'cross-origin request refused');
}

function cookie(value: string, maxAge: number, req: http.IncomingMessage): string {
  const secure = (req.socket as { encrypted?: boolean }).encrypted || req.headers['x-forwarded-proto'] === 'https';
  return `${COOKIE}=${value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure ? '; Secure' : ''}`;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
