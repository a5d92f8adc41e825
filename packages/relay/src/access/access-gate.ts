import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { AccessHeaders, isAccessHeader, reasonPhrase, renderTunnelError, type TunnelErrorInfo } from '@tunnel/protocol';
import type { Route } from '../store/types.js';
import type { AccessPolicy } from '../store/access-records.js';
import { normalizeHost } from '../edge/route-table.js';
import { policyPath, type PolicyTable } from './policy-table.js';
import type { AssertionSigner, Identity } from './assertion.js';
import { CookieSealer, LOGIN_COOKIE, SESSION_COOKIE, readCookie, setCookie, withoutAccessCookies, type Session } from './session-cookie.js';
import { IdpError, type OidcClients } from './oidc-client.js';

export const CALLBACK_PATH = '/.tunnel/access/callback';
export const LOGOUT_PATH = '/.tunnel/access/logout';
/** `tunnel access login`: the browser logs in here and is sent, with a token, to the CLI's loopback callback. */
export const CLI_LOGIN_PATH = '/.tunnel/access/cli';
const DEFAULT_SESSION_SECONDS = 3600;
const LOGIN_STATE_TTL_MS = 11 * 60_000;

/** Where the gate's answer goes: a plain request's response, or an upgrade's raw socket. */
export type Reply = { readonly res: ServerResponse } | { readonly socket: Duplex };

/** Counted in /metrics: what the gate decided, and logins refused at the ceiling. */
export type AccessOutcome = 'allow' | 'deny' | 'login' | 'token_refused' | 'error' | 'busy';

export interface AccessGateDeps {
  table: PolicyTable;
  signer: AssertionSigner;
  cookies: CookieSealer;
  oidc: OidcClients;
  /** The fleet's replay cache: a login's state is used once, fleet-wide. */
  claimNonce(key: string, ttlMs: number): Promise<boolean>;
  log: Logger;
  /** Logins talking to an identity provider at once on this relay (each holds a request open); over it: 503. */
  maxPendingLogins: number;
  onOutcome?(outcome: AccessOutcome): void;
}

/** The client's own copies of the Access headers, taken off the request (the service token ones are kept to be checked). */
interface ClientCredentials {
  clientId?: string;
  clientSecret?: string;
}

/**
 * Access at the edge (DESIGN §14): decides, before a stream is opened to a
 * connector, whether a public request may pass, answering itself when it
 * may not (deny page, login redirect, callback, logout). A request let
 * through an `allow` policy carries a fresh `Tunnel-Access-Jwt-Assertion`.
 * Every request loses whatever Access headers the client sent.
 */
export class AccessGate {
  private pendingLogins = 0;

  constructor(private readonly d: AccessGateDeps) {}

  get loginsPending(): number {
    return this.pendingLogins;
  }

  /**
   * null: go on at once (no policy, or bypass). Otherwise the request waits:
   * true when it may go on (its assertion added), false when the gate has answered.
   */
  check(req: IncomingMessage, route: Route, reply: Reply, requestId: string): Promise<boolean> | null {
    const creds = stripClientHeaders(req);
    const host = normalizeHost(req.headers.host ?? '');
    if (!this.d.table.covers(host)) return null;
    requestIds.set(req, requestId);
    const path = policyPath(req.url ?? '/');
    if (path === CALLBACK_PATH) return this.guard(reply, req, () => this.callback(req, host, reply));
    if (path === LOGOUT_PATH) return this.guard(reply, req, async () => this.logout(req, reply));
    if (path === CLI_LOGIN_PATH) return this.guard(reply, req, () => this.cliLogin(req, host, reply));
    const policy = this.d.table.lookup(host, path);
    // A policy speaks only for the account that routes the hostname.
    if (!policy || policy.accountId !== route.accountId || policy.decision === 'bypass') return null;
    if (policy.decision === 'deny') {
      this.d.onOutcome?.('deny');
      answer(reply, req, { status: 403, code: 'access_denied', source: 'relay', message: `Access to ${host} is denied by policy.` });
      return Promise.resolve(false);
    }
    return this.guard(reply, req, () => this.allow(req, host, policy, creds, reply));
  }

  /** A throw in the gate ends this one request with a 500, never the process. */
  private guard(reply: Reply, req: IncomingMessage, fn: () => Promise<boolean>): Promise<boolean> {
    return fn().catch((e: unknown) => {
      this.d.log.error({ err: (e as Error).message, stack: (e as Error).stack, host: req.headers.host }, 'access check failed');
      this.d.onOutcome?.('error');
      answer(reply, req, { status: 500, code: 'access_error', source: 'relay', message: 'The access check failed.' });
      return false;
    });
  }

  private async allow(req: IncomingMessage, host: string, policy: AccessPolicy, creds: ClientCredentials, reply: Reply): Promise<boolean> {
    let identity: Identity;
    if (creds.clientId !== undefined || creds.clientSecret !== undefined) {
      // A machine: its token decides alone, never a fallback to a login.
      const why = this.tokenRefusal(policy, creds);
      if (why) {
        this.d.onOutcome?.('token_refused');
        this.d.log.info({ event: 'access-token-refused', host, clientId: creds.clientId?.slice(0, 80), why }, 'service token refused');
        answer(reply, req, { status: 403, code: 'access_token_refused', source: 'relay', message: `The service token is refused: ${why}.` });
        return false;
      }
      const t = this.d.table.serviceToken(creds.clientId!)!;
      identity = { kind: 'service-token', clientId: t.clientId, name: t.name };
    } else {
      const session = await this.d.cookies.openSession(readCookie(req.headers.cookie, SESSION_COOKIE), host);
      if (!session || session.accountId !== policy.accountId) return this.startLogin(req, host, policy, reply);
      if (!admits(policy, session)) {
        this.d.onOutcome?.('deny');
        this.d.log.info({ event: 'access-denied', host, email: session.email }, 'identity not allowed by policy');
        answer(reply, req, {
          status: 403,
          code: 'access_denied',
          source: 'relay',
          message: `${session.email || session.sub} is not allowed to reach ${host}. Log out at ${LOGOUT_PATH} to use another account.`,
        });
        return false;
      }
      identity = { kind: 'user', sub: session.sub, email: session.email, groups: session.groups };
    }
    const jwt = await this.d.signer.sign(identity, policy.audTag, host);
    req.rawHeaders.push('Tunnel-Access-Jwt-Assertion', jwt);
    if (identity.kind === 'user' && identity.email) req.rawHeaders.push('Tunnel-Access-Authenticated-User-Email', identity.email);
    this.d.onOutcome?.('allow');
    return true;
  }

  private tokenRefusal(policy: AccessPolicy, creds: ClientCredentials): string | null {
    if (!creds.clientId || !creds.clientSecret) return 'both Tunnel-Access-Client-Id and Tunnel-Access-Client-Secret are needed';
    const t = this.d.table.serviceToken(creds.clientId);
    // One answer for unknown, revoked and wrong secret: nothing to probe.
    const bad = 'unknown client id or wrong secret';
    if (!t || t.accountId !== policy.accountId) return bad;
    const want = Buffer.from(t.secretSha256, 'hex');
    const got = createHash('sha256').update(creds.clientSecret, 'utf8').digest();
    if (want.length !== got.length || !timingSafeEqual(want, got)) return bad;
    if (t.expiresAt !== undefined && t.expiresAt <= Date.now()) return 'the token has expired';
    if (!policy.include.serviceTokens.includes(t.name) && !policy.include.serviceTokens.includes(t.clientId)) return `token ${t.name} is not allowed by this hostname's policy`;
    return null;
  }

  private async startLogin(req: IncomingMessage, host: string, policy: AccessPolicy, reply: Reply): Promise<boolean> {
    const i = policy.include;
    if (i.emails.length + i.domains.length + i.groups.length === 0) {
      this.d.onOutcome?.('deny');
      answer(reply, req, { status: 403, code: 'access_denied', source: 'relay', message: `${host} admits only service tokens (Tunnel-Access-Client-Id / Tunnel-Access-Client-Secret).` });
      return false;
    }
    const idp = this.d.table.identityProvider(policy.accountId);
    if (!idp) {
      this.d.onOutcome?.('error');
      answer(reply, req, { status: 503, code: 'access_idp_unconfigured', source: 'relay', message: `${host} needs a login, but its account has no identity provider configured (tunnel access idp set).` });
      return false;
    }
    const browser = 'res' in reply && (req.method === 'GET' || req.method === 'HEAD') && (req.headers.accept ?? '').includes('text/html');
    if (!browser) {
      this.d.onOutcome?.('login');
      answer(reply, req, { status: 401, code: 'access_login_required', source: 'relay', message: `${host} needs a login: open it in a browser, or send a service token.` });
      return false;
    }
    const oidc = await import('openid-client'); // loaded with the first login (oidc-client.ts)
    const tx = { host, accountId: policy.accountId, state: oidc.randomState(), nonce: oidc.randomNonce(), verifier: oidc.randomPKCECodeVerifier(), returnTo: safeReturnPath(req.url ?? '/') };
    const url = await this.talkToIdp(req, reply, () => this.d.oidc.authorizationUrl(idp, callbackUrl(req), tx));
    if (!url) return false;
    const secure = isEncrypted(req);
    this.d.onOutcome?.('login');
    redirect(reply, url.href, [setCookie(LOGIN_COOKIE, await this.d.cookies.sealLogin(tx), { secure, maxAgeSeconds: 600 })]);
    return false;
  }

  private async callback(req: IncomingMessage, host: string, reply: Reply): Promise<boolean> {
    const fail = (status: number, code: string, message: string) => {
      this.d.onOutcome?.('error');
      this.d.log.info({ event: 'access-login-failed', host, code }, message);
      answer(reply, req, { status, code, source: 'relay', message });
      return false;
    };
    if (req.method !== 'GET') return fail(405, 'access_bad_callback', 'The login callback takes GET only.');
    const tx = await this.d.cookies.openLogin(readCookie(req.headers.cookie, LOGIN_COOKIE), host);
    if (!tx) return fail(400, 'access_login_expired', 'This login is unknown or expired (or cookies are blocked): open the page again to log in.');
    const current = new URL(req.url ?? '/', callbackUrl(req));
    const error = current.searchParams.get('error');
    if (error) return fail(403, 'access_login_refused', `The identity provider refused the login: ${error.slice(0, 100)}.`);
    if (current.searchParams.get('state') !== tx.state) return fail(400, 'access_bad_state', 'The login callback does not belong to this login.');
    // A state is good for one callback, fleet-wide: a replayed callback URL is refused.
    let first: boolean;
    try {
      first = await this.d.claimNonce(`access-login:${tx.state}`, LOGIN_STATE_TTL_MS);
    } catch {
      return fail(503, 'access_store_unavailable', 'The login cannot be checked right now; try again.');
    }
    if (!first) return fail(400, 'access_login_replayed', 'This login callback was already used: open the page again to log in.');
    const idp = this.d.table.identityProvider(tx.accountId);
    if (!idp) return fail(503, 'access_idp_unconfigured', 'The identity provider of this hostname is no longer configured.');
    const claims = await this.talkToIdp(req, reply, () => this.d.oidc.finish(idp, new URL(current.pathname + current.search, callbackUrl(req)), tx));
    if (!claims) return false;
    const policy = this.d.table.lookup(host, policyPath(tx.returnTo));
    const seconds = policy?.sessionSeconds ?? DEFAULT_SESSION_SECONDS;
    const secure = isEncrypted(req);
    const session = await this.d.cookies.sealSession({ host, accountId: tx.accountId, sub: claims.sub, email: claims.email, emailVerified: claims.emailVerified, groups: claims.groups }, seconds);
    this.d.log.info({ event: 'access-login', host, email: claims.email }, 'access login');
    redirect(reply, tx.returnTo, [setCookie(SESSION_COOKIE, session, { secure, maxAgeSeconds: seconds }), setCookie(LOGIN_COOKIE, '', { secure, maxAgeSeconds: 0 })]);
    return false;
  }

  /**
   * The browser half of `tunnel access login` (as `cloudflared access
   * login`): once the browser holds a session that the hostname's policy
   * admits, it is sent on to the CLI's own callback on this machine's
   * loopback (and nowhere else) with the session as a token; the CLI sends
   * it as its cookie on `tunnel access tcp` upgrades.
   */
  private async cliLogin(req: IncomingMessage, host: string, reply: Reply): Promise<boolean> {
    const url = new URL(req.url ?? '/', 'http://relay');
    const callback = loopbackCallback(url.searchParams.get('callback'));
    const state = url.searchParams.get('state') ?? '';
    if (!callback || !/^[A-Za-z0-9_-]{16,128}$/.test(state)) {
      answer(reply, req, { status: 400, code: 'access_bad_cli_callback', source: 'relay', message: 'tunnel access login passes a callback on 127.0.0.1 (or localhost) and a state; this link has neither.' });
      return false;
    }
    const policy = this.d.table.lookup(host, '/');
    if (!policy || policy.decision !== 'allow') {
      answer(reply, req, { status: 404, code: 'access_no_policy', source: 'relay', message: `${host} has no Access policy to log in to.` });
      return false;
    }
    const value = readCookie(req.headers.cookie, SESSION_COOKIE);
    const session = await this.d.cookies.openSession(value, host);
    if (!session || session.accountId !== policy.accountId) return this.startLogin(req, host, policy, reply);
    if (!admits(policy, session)) {
      answer(reply, req, { status: 403, code: 'access_denied', source: 'relay', message: `${session.email || session.sub} is not allowed to reach ${host}.` });
      return false;
    }
    callback.searchParams.set('token', value!);
    callback.searchParams.set('state', state);
    redirect(reply, callback.href, []);
    return false;
  }

  private logout(req: IncomingMessage, reply: Reply): boolean {
    const secure = isEncrypted(req);
    const body = '<!doctype html><meta charset="utf-8"><title>Logged out</title><h1>Logged out</h1><p>Your session on this hostname has ended.</p>';
    write(reply, 200, [
      ['Content-Type', 'text/html; charset=utf-8'],
      ['Cache-Control', 'no-store'],
      ['Set-Cookie', setCookie(SESSION_COOKIE, '', { secure, maxAgeSeconds: 0 })],
    ], body);
    return false;
  }

  /** One call to an identity provider under the ceiling; its failure is answered (503 unreachable, 502 a bad answer) and gives undefined. */
  private async talkToIdp<T>(req: IncomingMessage, reply: Reply, fn: () => Promise<T>): Promise<T | undefined> {
    if (this.pendingLogins >= this.d.maxPendingLogins) {
      this.d.onOutcome?.('busy');
      answer(reply, req, { status: 503, code: 'access_busy', source: 'relay', message: 'Too many logins are under way on this relay; try again in a moment.' });
      return undefined;
    }
    this.pendingLogins++;
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof IdpError)) throw e;
      this.d.onOutcome?.('error');
      this.d.log.warn({ event: 'access-idp-failed', kind: e.kind, err: e.message }, 'identity provider failed');
      const info: TunnelErrorInfo =
        e.kind === 'unavailable'
          ? { status: 503, code: 'access_idp_unavailable', source: 'relay', message: 'The identity provider cannot be reached; try again later.' }
          : { status: 502, code: 'access_idp_failed', source: 'relay', message: `The identity provider's answer was refused: ${e.message.slice(0, 200)}` };
      answer(reply, req, info);
      return undefined;
    } finally {
      this.pendingLogins--;
    }
  }
}

/** Whether a logged-in identity is one the policy names. Email and domain rules need an email the provider verified. */
export function admits(policy: AccessPolicy, s: Session): boolean {
  const i = policy.include;
  if (s.emailVerified && s.email) {
    const email = s.email.toLowerCase();
    if (i.emails.some((e) => e.toLowerCase() === email)) return true;
    const at = email.lastIndexOf('@');
    if (at !== -1 && i.domains.some((d) => d.toLowerCase() === email.slice(at + 1))) return true;
  }
  return i.groups.some((g) => s.groups.includes(g));
}

/**
 * Takes every client-sent Access header off the request (an origin must
 * never see a forged assertion or identity, nor a token's secret), and the
 * relay's own cookies off its Cookie headers; returns the service token
 * credentials it found. Costs one pass over the header names when there is nothing to take.
 */
export function stripClientHeaders(req: IncomingMessage): ClientCredentials {
  const raw = req.rawHeaders;
  let found = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if ((name.length > 14 && (name.charCodeAt(0) | 32) === 116 /* t */ && isAccessHeader(name.toLowerCase())) || (name.length === 6 && name.toLowerCase() === 'cookie' && raw[i + 1]!.includes('tunnel_access'))) {
      found = true;
      break;
    }
  }
  if (!found) return {};
  const creds: ClientCredentials = {};
  const kept: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (isAccessHeader(lower)) {
      if (lower === AccessHeaders.clientId) creds.clientId ??= value;
      else if (lower === AccessHeaders.clientSecret) creds.clientSecret ??= value;
      continue;
    }
    if (lower === 'cookie' && value.includes('tunnel_access')) {
      const rest = withoutAccessCookies(value);
      if (rest) kept.push(name, rest);
      continue;
    }
    kept.push(name, value);
  }
  // In place: an HTTP/2 request's rawHeaders has a getter only (the same array every time).
  raw.length = 0;
  for (const x of kept) raw.push(x);
  return creds;
}

/** The CLI's callback: plain http on the loopback of the user's machine, never anywhere else. */
export function loopbackCallback(raw: string | null): URL | null {
  if (!raw || raw.length > 256) return null;
  try {
    const u = new URL(raw);
    if (u.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname) || !u.port || u.username || u.password) return null;
    return new URL(`${u.origin}/`);
  } catch {
    return null;
  }
}

function isEncrypted(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true;
}

/** The callback on the hostname the browser used (with its port): the URL registered at the identity provider. */
function callbackUrl(req: IncomingMessage): string {
  return `${isEncrypted(req) ? 'https' : 'http'}://${req.headers.host}${CALLBACK_PATH}`;
}

/** Only a path on the same host comes back from a login: never `//evil`, `/\evil` or an absolute URL. */
export function safeReturnPath(target: string): string {
  if (!target.startsWith('/') || target.startsWith('//') || target.startsWith('/\\') || /[\r\n\t]/.test(target)) return '/';
  if (policyPath(target) === CALLBACK_PATH) return '/';
  return target.length > 2048 ? '/' : target;
}

/** The Tunnel-Request-Id of a request the gate is deciding, for its answers (the request path's own pages carry it too). */
const requestIds = new WeakMap<IncomingMessage, string>();

function answer(reply: Reply, req: IncomingMessage, info: TunnelErrorInfo): void {
  const requestId = requestIds.get(req) ?? '';
  const { type, body } = renderTunnelError(info, req.headers.accept, requestId);
  write(reply, info.status, [
    ['Content-Type', type],
    ['Cache-Control', 'no-store'],
    ['Tunnel-Error', info.code],
    ['Tunnel-Error-Source', info.source],
    ['Tunnel-Request-Id', requestId],
  ], req.method === 'HEAD' ? '' : body);
}

function redirect(reply: Reply, location: string, cookies: string[]): void {
  write(reply, 302, [['Location', location], ['Cache-Control', 'no-store'], ...cookies.map((c): [string, string] => ['Set-Cookie', c])], '');
}

function write(reply: Reply, status: number, headers: Array<[string, string]>, body: string): void {
  if ('res' in reply) {
    const res = reply.res;
    if (res.headersSent || res.destroyed) return void res.destroy();
    const flat: string[] = [];
    for (const [k, v] of headers) flat.push(k, v);
    flat.push('Content-Length', String(Buffer.byteLength(body)));
    res.writeHead(status, reasonPhrase(status), flat);
    res.end(body);
    return;
  }
  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
  for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
  reply.socket.end(`${head}Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}
