import http from 'node:http';
import { randomInt } from 'node:crypto';
import { z } from 'zod';
import type { Logger } from 'pino';
import { normalizeHostname, randomId, sealTo, signToken, verifyToken, TokenError, TokenKind, type AccountClaims, type EnrollClaims, type TunnelClaims } from '@tunnel/protocol';
import type { Store, Tunnel, Presence } from '../store/types.js';
import { StoreError } from '../store/types.js';
import type { FleetKeys } from './keys.js';
import { ApiError, decodeSegment } from './api-error.js';
import { authenticateAccount, authenticateOperator, bearer } from './control-auth.js';
import { checkTunnelCredential, DEFAULT_CREDENTIAL_POLICY, type CredentialPolicy } from '../connectors/credential-check.js';
import { signTunnelToken, relayUrls, ensureAccount } from './provisioning.js';
import { readBody } from './read-body.js';
import { accessApi } from '../access/access-api.js';
import { ACCESS_JWKS_PATH } from '@tunnel/protocol';
import { SignedRelayList } from '../fleet/signed-relay-list.js';

const relayLists = new WeakMap<ControlApiDeps, SignedRelayList>();
function relayList(d: ControlApiDeps): SignedRelayList {
  let l = relayLists.get(d);
  if (!l) relayLists.set(d, (l = new SignedRelayList(d.store, d.keys)));
  return l;
}
import type { OperatorKeyGuard } from './operator-key-guard.js';
import type { LoginAdmissions } from './login-admission.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import { checkRoute, grantZone, refusalError } from '../zones/zone-grants.js';
import { zoneVerdict } from '../zones/zone-rules.js';
import { challengeRecord, challengeToken, checkClaim, type ZoneClaimOptions } from '../zones/zone-claims.js';

export interface ControlApiDeps {
  store: Store;
  keys: FleetKeys;
  log: Logger;
  relayId: string;
  /** Checks the operator key; absent when the relay has none. */
  operatorGuard?: OperatorKeyGuard;
  /** Pending-login ceilings; absent: none. */
  logins?: LoginAdmissions;
  /** This relay's own control URL (goes into credentials). */
  controlUrl(): string;
  loginTtlMs: number;
  /** Credential lifetimes and what to do with legacy (no `exp`) credentials. */
  policy?: CredentialPolicy;
  /** Health turns 503 while the relay drains, so load balancers stop sending. */
  isDraining?: () => boolean;
  /** Self-service zone claims by DNS TXT challenge; off when undefined. */
  zoneClaims?: ZoneClaimOptions;
  /** The Access assertion keys (`/.well-known/tunnel-access/certs`); absent: not served. */
  accessJwks?: () => unknown;
  /** Extra routes (dashboard, metrics); return true when handled. */
  extra?: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<boolean> | boolean;
}

const MAX_BODY = 64 * 1024;
/** Default grace of `tunnel token --rotate`: the old token keeps working this long. */
export const DEFAULT_ROTATION_GRACE_SECONDS = 24 * 3600;
const MAX_ROTATION_GRACE_SECONDS = 30 * 24 * 3600;
const CODE_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789'; // no 0/O, 1/I

const NameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'names are 1-63 letters, digits, dot, dash, underscore');
// The shared grammar (protocol's hostname.ts): the same names a connector's ingress and the store take.
const HostnameSchema = z
  .string()
  .max(1024)
  .transform((s, ctx) => {
    try {
      return normalizeHostname(s);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

export function loginCode(): string {
  let s = '';
  for (let i = 0; i < 8; i++) s += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}

export function normalizeCode(c: string): string {
  const s = c.toUpperCase().replace(/[^A-Z0-9]/g, '');
  return s.length === 8 ? `${s.slice(0, 4)}-${s.slice(4)}` : c.toUpperCase();
}

/**
 * The relay's control API (JSON over HTTP): login sessions, accounts,
 * tunnels, routes, tokens, connector listings, the live relay list.
 * Every error is `{error: {code, message}}` with a stable code.
 */
export function createControlServer(d: ControlApiDeps): http.Server {
  return http.createServer(controlRequestHandler(d));
}

/** The control API's routes, for a server the relay builds (HTTPS when it has certificates). */
export function controlRequestHandler(d: ControlApiDeps): http.RequestListener {
  return (req, res) => {
    handle(d, req, res).catch((e: unknown) => {
      const err = toApiError(e);
      if (err.status >= 500) d.log.error({ err: (e as Error).message, path: req.url }, 'control API error');
      if (err.retryAfterS !== undefined && !res.headersSent) res.setHeader('retry-after', String(err.retryAfterS));
      send(res, err.status, err.toJSON());
    });
  };
}

export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof StoreError) {
    switch (e.code) {
      case 'CONFLICT':
        return new ApiError(409, 'conflict', e.message);
      case 'NOT_FOUND':
        return new ApiError(404, 'not_found', e.message);
      case 'UNAVAILABLE':
        return new ApiError(503, 'store_unavailable', `the fleet store is unavailable: ${e.message}`);
      default:
        return new ApiError(500, 'store_error', e.message);
    }
  }
  if (e instanceof z.ZodError) {
    const first = e.issues[0];
    return new ApiError(400, 'bad_request', first ? `${first.path.join('.') || 'body'}: ${first.message}` : 'invalid request');
  }
  return new ApiError(500, 'internal', 'internal error');
}

export function send(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const body = await readBody(req, MAX_BODY);
  if (body === null) throw new ApiError(413, 'body_too_large', 'request body over 64 KiB');
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new ApiError(400, 'bad_json', 'request body is not valid JSON');
  }
}

async function handle(d: ControlApiDeps, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control');
  const p = url.pathname.replace(/\/+$/, '') || '/';
  const parts = p.split('/').filter(Boolean).map(decodeSegment);
  const m = req.method ?? 'GET';
  const { store } = d;

  if (p === '/healthz') {
    const draining = d.isDraining?.() ?? false;
    return send(res, draining ? 503 : 200, { status: draining ? 'draining' : 'ok', relayId: d.relayId });
  }
  if (p === ACCESS_JWKS_PATH && m === 'GET' && d.accessJwks) {
    const text = JSON.stringify(d.accessJwks());
    res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'content-length': Buffer.byteLength(text), 'cache-control': 'public, max-age=300' });
    return void res.end(text);
  }
  if (parts[0] !== 'v1') {
    if (d.extra && (await d.extra(req, res, url))) return;
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
  }

  // ---- public -------------------------------------------------------------------------
  if (p === '/v1/relays' && m === 'GET') return send(res, 200, await relayList(d).current());
  if (p === '/v1/login' && m === 'POST') {
    const body = z.object({ boxPublicKey: z.string().min(40).max(64) }).parse(await readJson(req));
    const ip = stripV4Mapped(req.socket.remoteAddress ?? '');
    for (let attempt = 0; ; attempt++) {
      const code = loginCode();
      const expiresAt = Date.now() + d.loginTtlMs;
      const admitted = d.logins?.admit(ip, code, expiresAt) ?? { ok: true };
      if (!admitted.ok) {
        d.log.warn({ event: 'login-refused', ip, limit: admitted.limit }, `login refused: ${admitted.message}`);
        throw new ApiError(429, 'too_many_logins', admitted.message, 60);
      }
      try {
        const s = await store.createLoginSession({ code, boxPublicKey: body.boxPublicKey, expiresAt });
        d.log.info({ event: 'login-created', code }, 'login session created');
        return send(res, 201, { code, expiresAt: s.expiresAt, approveUrl: `${d.controlUrl()}/dashboard/#login=${code}`, pollUrl: `/v1/login/${code}` });
      } catch (e) {
        d.logins?.release(code);
        if (!(e instanceof StoreError && e.code === 'CONFLICT') || attempt > 5) throw e;
      }
    }
  }
  if (parts[1] === 'login' && parts.length === 3 && m === 'GET') {
    const code = normalizeCode(parts[2]!);
    const s = await store.getLoginSession(code);
    if (!s) throw new ApiError(410, 'login_expired', `login code ${code} is unknown or expired: run \`tunnel login\` again`);
    if (s.state === 'pending') return send(res, 202, { state: 'pending', expiresAt: s.expiresAt });
    // Hand the sealed credential out once.
    await store.deleteLoginSession(code);
    d.logins?.release(code);
    return send(res, 200, { state: 'approved', sealedCredential: s.sealedCredential });
  }
  if (p === '/v1/connector/routes' && m === 'GET') {
    // A connector asks, with its own tunnel credential, which hostnames it
    // serves (shown in `tunnel run`'s status block). Nothing secret in the answer.
    // The same check as the connector endpoint: expiry, and revocation whatever the jti's shape.
    const checked = await checkTunnelCredential(bearer(req.headers.authorization), d.keys.publicKey, store, policyOf(d));
    if ('code' in checked) throw new ApiError(checked.status, checked.code, checked.message);
    const tunnel = await store.getTunnel(checked.claims.tunnelId);
    if (!tunnel) throw new ApiError(403, 'tunnel_deleted', `tunnel ${checked.claims.tunnelId} no longer exists`);
    const routes = await store.listRoutes({ tunnelId: tunnel.id });
    return send(res, 200, { tunnelId: tunnel.id, tunnelName: tunnel.name, hostnames: routes.map((r) => r.hostname) });
  }
  if (p === '/v1/enroll' && m === 'POST') {
    const body = z.object({ token: z.string().min(10).max(16_384) }).parse(await readJson(req));
    let claims: EnrollClaims;
    try {
      claims = verifyToken(TokenKind.Enroll, body.token, d.keys.publicKey).claims as unknown as EnrollClaims;
    } catch (e) {
      const code = e instanceof TokenError ? e.code : 'MALFORMED';
      throw new ApiError(401, code === 'EXPIRED' ? 'enroll_expired' : 'invalid_enroll_token', code === 'EXPIRED' ? 'enrollment token has expired: ask the operator for a new one' : `enrollment token rejected (${code.toLowerCase()})`);
    }
    if (typeof claims.jti !== 'string' || typeof claims.accountId !== 'string') throw new ApiError(401, 'invalid_enroll_token', 'enrollment token lacks its id or account');
    if (await store.isRevoked(claims.jti)) throw new ApiError(403, claims.reusable === true ? 'enroll_revoked' : 'enroll_used', claims.reusable === true ? 'enrollment token was revoked' : 'enrollment token was already used: ask the operator for a new one');
    const account = await store.getAccount(claims.accountId);
    if (!account) throw new ApiError(403, 'account_deleted', 'the account of this enrollment token no longer exists');
    // Single use unless issued --reusable: the first enrollment revokes it, atomically fleet-wide.
    if (claims.reusable !== true && !(await store.revokeOnce(claims.jti, claims.exp * 1000))) {
      throw new ApiError(403, 'enroll_used', 'enrollment token was already used: ask the operator for a new one');
    }
    return send(res, 200, { credential: issueAccountCredential(d, account.id, account.name), accountId: account.id, accountName: account.name });
  }

  // ---- operator -------------------------------------------------------------------------
  if (parts[1] === 'operator') {
    await authenticateOperator(d.operatorGuard, stripV4Mapped(req.socket.remoteAddress ?? ''), req.headers.authorization);
    if (p === '/v1/operator/logins' && m === 'GET') return send(res, 200, { logins: await store.listLoginSessions() });
    if (parts[2] === 'logins' && parts[4] === 'approve' && m === 'POST') {
      const body = z.object({ account: NameSchema.default('default') }).parse(await readJson(req));
      const approved = await approveLogin(d, parts[3]!, body.account);
      return send(res, 200, approved);
    }
    if (p === '/v1/operator/accounts' && m === 'POST') {
      const body = z.object({ name: NameSchema, reusable: z.boolean().default(false) }).parse(await readJson(req));
      const account = await ensureAccount(store, body.name);
      return send(res, 201, { account, enrollToken: issueEnrollToken(d.keys, account.id, undefined, body.reusable) });
    }
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
  }

  // ---- account ---------------------------------------------------------------------------
  const who = await authenticateAccount(store, d.keys.publicKey, req.headers.authorization, policyOf(d));
  if (p === '/v1/account/refresh' && m === 'POST') {
    // A still-valid account credential is exchanged for a fresh one; the old
    // one is revoked at once (cert.json holds only the new one).
    const account = await store.getAccount(who.accountId);
    const credential = issueAccountCredential(d, who.accountId, account?.name ?? who.accountName);
    await store.revoke(who.jti, expiryMs(who.exp));
    d.log.info({ event: 'account-credential-refreshed', accountId: who.accountId, oldTokenId: who.jti }, 'account credential refreshed');
    return send(res, 200, { credential, accountId: who.accountId, accountName: account?.name ?? who.accountName });
  }
  if (p === '/v1/account/logout' && m === 'POST') {
    // `tunnel logout`: the credential in cert.json stops working fleet-wide, not only on this machine.
    await store.revoke(who.jti, expiryMs(who.exp));
    d.log.info({ event: 'account-logout', accountId: who.accountId, tokenId: who.jti }, 'account credential revoked by its holder (logout)');
    return send(res, 200, { revoked: who.jti });
  }
  const access = await accessApi(store, who, m, parts, url.searchParams, () => readJson(req));
  if (access) return send(res, access.status, access.body);
  if (p === '/v1/tunnels' && m === 'GET') {
    const tunnels = await store.listTunnels(who.accountId);
    const presence = await store.listPresence();
    return send(res, 200, { tunnels: tunnels.map((t) => ({ ...t, connections: presence.filter((x) => x.tunnelId === t.id).length })) });
  }
  if (p === '/v1/tunnels' && m === 'POST') {
    const body = z.object({ name: NameSchema }).parse(await readJson(req));
    if (await store.getTunnelByName(who.accountId, body.name)) throw new ApiError(409, 'tunnel_exists', `you already have a tunnel named ${body.name}`);
    const tunnel = await store.createTunnel(who.accountId, body.name);
    return send(res, 201, { tunnel, credentials: await credentialsFor(d, tunnel) });
  }
  if (parts[1] === 'tunnels' && parts.length >= 3) {
    const tunnel = await findTunnel(store, who, parts[2]!);
    const action = parts[3];
    if (!action && m === 'GET') {
      const [routes, presence] = await Promise.all([store.listRoutes({ tunnelId: tunnel.id }), store.listPresence({ tunnelId: tunnel.id })]);
      return send(res, 200, { tunnel, routes, connectors: groupConnectors(presence) });
    }
    if (!action && m === 'DELETE') {
      const presence = await store.listPresence({ tunnelId: tunnel.id });
      if (presence.length > 0 && url.searchParams.get('force') !== 'true') {
        throw new ApiError(409, 'tunnel_has_connectors', `tunnel ${tunnel.name} has ${presence.length} active connection(s); stop its connectors or use --force`);
      }
      await store.deleteTunnel(tunnel.id);
      d.log.info({ event: 'tunnel-deleted', tunnelId: tunnel.id, accountId: who.accountId }, 'tunnel deleted');
      return send(res, 200, { deleted: tunnel.id });
    }
    if (action === 'token' && m === 'GET') return send(res, 200, await credentialsFor(d, tunnel));
    if (action === 'rotate' && m === 'POST') {
      // Stateless tokens: the caller names the token to retire (its current
      // credentials file). It must be this fleet's, for this tunnel; expired
      // is fine (it is dead anyway). It stays valid for the grace period,
      // so a running connector can move to the new one without a failed request.
      const body = z
        .object({ token: z.string().min(10).max(16_384).optional(), graceSeconds: z.number().int().min(0).max(MAX_ROTATION_GRACE_SECONDS).default(DEFAULT_ROTATION_GRACE_SECONDS) })
        .parse(await readJson(req));
      let retired: { tokenId: string; revokesAt: number } | null = null;
      if (body.token) {
        let old: TunnelClaims;
        try {
          old = verifyToken(TokenKind.Tunnel, body.token, d.keys.publicKey, { now: 0 }).claims as unknown as TunnelClaims;
        } catch (e) {
          throw new ApiError(400, 'invalid_credential', `the token to rotate is not a tunnel token of this fleet (${e instanceof TokenError ? e.code.toLowerCase() : 'malformed'})`);
        }
        if (old.tunnelId !== tunnel.id || typeof old.jti !== 'string') throw new ApiError(400, 'wrong_tunnel', `the token to rotate is not one of tunnel ${tunnel.name}`);
        const revokesAt = Date.now() + body.graceSeconds * 1000;
        await store.revoke(old.jti, Math.max(expiryMs(old.exp), revokesAt), revokesAt);
        retired = { tokenId: old.jti, revokesAt };
      }
      d.log.info({ event: 'tunnel-token-rotated', tunnelId: tunnel.id, accountId: who.accountId, oldTokenId: retired?.tokenId ?? null, revokesAt: retired?.revokesAt ?? null }, 'tunnel token rotated');
      return send(res, 200, { credentials: await credentialsFor(d, tunnel), retired });
    }
    if (action === 'cleanup' && m === 'POST') return send(res, 200, { removed: await cleanupPresence(store, tunnel.id) });
  }
  if (p === '/v1/routes' && m === 'GET') return send(res, 200, { routes: await store.listRoutes({ accountId: who.accountId }) });
  if (p === '/v1/routes' && m === 'POST') {
    const body = z.object({ hostname: HostnameSchema, tunnel: z.string().min(1).max(64) }).parse(await readJson(req));
    const tunnel = await findTunnel(store, who, body.tunnel);
    await checkRoute(store, who.accountId, body.hostname);
    const existing = await store.getRoute(body.hostname);
    if (existing && existing.tunnelId !== tunnel.id) {
      throw new ApiError(409, 'hostname_taken', existing.accountId === who.accountId ? `${body.hostname} is already routed to another of your tunnels (${existing.tunnelId}); delete that route first` : `${body.hostname} is already routed by another account`);
    }
    try {
      const route = await store.addRoute({ hostname: body.hostname, tunnelId: tunnel.id, accountId: who.accountId });
      return send(res, 201, { route });
    } catch (e) {
      if (e instanceof StoreError && e.code === 'CONFLICT') throw new ApiError(409, 'hostname_taken', `${body.hostname} is already routed to another tunnel`);
      throw e;
    }
  }
  if (p === '/v1/zones' && m === 'GET') return send(res, 200, { zones: await store.listZones({ accountId: who.accountId }) });
  if ((p === '/v1/zones/claims' || p === '/v1/zones/claims/verify') && m === 'POST') {
    if (!d.zoneClaims) throw new ApiError(403, 'zone_claims_disabled', 'this fleet does not take zone claims: ask the operator (tunnel-relay zone add ZONE --account NAME)');
    const body = z.object({ zone: z.string().min(1).max(253) }).parse(await readJson(req));
    const v = zoneVerdict(body.zone, who.accountId, await store.listZones(), await store.listRoutes());
    if (!v.ok) throw refusalError(v.refusal);
    const zone = v.value;
    const token = challengeToken(d.keys.secretKey, who.accountId, zone);
    if (p === '/v1/zones/claims') return send(res, 200, { zone, record: challengeRecord(zone), type: 'TXT', value: token });
    const check = await d.zoneClaims.checks.run(() => checkClaim(zone, token, d.zoneClaims));
    if (!check) throw new ApiError(429, 'zone_claims_busy', `this relay is already checking ${d.zoneClaims.checks.max} zone claim(s); try again in a few seconds`);
    if (!check.found) throw new ApiError(403, 'challenge_not_found', `${check.reason}; publish TXT ${challengeRecord(zone)} = "${token}" and try again`);
    const granted = await grantZone(store, who.accountId, zone, 'dns');
    d.log.info({ event: 'zone-claimed', zone, accountId: who.accountId }, 'zone granted by DNS challenge');
    return send(res, 201, { zone: granted });
  }
  if (parts[1] === 'routes' && parts.length === 3 && m === 'DELETE') {
    const hostname = parts[2]!.toLowerCase();
    const route = await store.getRoute(hostname);
    if (!route || route.accountId !== who.accountId) throw new ApiError(404, 'route_not_found', `you have no route for ${hostname}`);
    await store.deleteRoute(hostname);
    return send(res, 200, { deleted: hostname });
  }
  throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
}

async function findTunnel(store: Store, who: AccountClaims, ref: string): Promise<Tunnel> {
  const byId = await store.getTunnel(ref);
  if (byId && byId.accountId === who.accountId) return byId;
  const byName = await store.getTunnelByName(who.accountId, ref);
  if (byName) return byName;
  throw new ApiError(404, 'tunnel_not_found', `you have no tunnel named ${ref}`);
}

async function credentialsFor(d: ControlApiDeps, tunnel: Tunnel) {
  const relays = await relayUrls(d.store);
  const controlUrl = d.controlUrl();
  return {
    accountId: tunnel.accountId,
    tunnelId: tunnel.id,
    tunnelName: tunnel.name,
    token: signTunnelToken(d.keys, tunnel, relays, controlUrl, policyOf(d).tunnelSeconds),
    relays,
    controlUrl,
    fleetKey: d.keys.publicKey,
  };
}

function groupConnectors(presence: Presence[]) {
  const by = new Map<string, { connectorId: string; version: string; clientIp: string; connections: Array<{ connIndex: number; relayId: string; connectionId: string; connectedAt: number }> }>();
  for (const p of presence) {
    let c = by.get(p.connectorId);
    if (!c) by.set(p.connectorId, (c = { connectorId: p.connectorId, version: p.version, clientIp: p.clientIp, connections: [] }));
    c.connections.push({ connIndex: p.connIndex, relayId: p.relayId, connectionId: p.connectionId, connectedAt: p.connectedAt });
  }
  for (const c of by.values()) c.connections.sort((a, b) => a.connIndex - b.connIndex);
  return [...by.values()];
}

/** Drop this tunnel's presence records held for relays that are no longer alive. */
async function cleanupPresence(store: Store, tunnelId: string): Promise<number> {
  const live = new Set((await store.listRelays()).map((r) => r.id));
  const all = await store.listPresence();
  const deadRelays = new Set(all.filter((p) => p.tunnelId === tunnelId && !live.has(p.relayId)).map((p) => p.relayId));
  let removed = 0;
  for (const relayId of deadRelays) {
    const keep = all.filter((p) => p.relayId === relayId && p.tunnelId !== tunnelId);
    removed += all.filter((p) => p.relayId === relayId && p.tunnelId === tunnelId).length;
    await store.putPresence(relayId, keep, 1);
  }
  return removed;
}

function policyOf(d: Pick<ControlApiDeps, 'policy'>): CredentialPolicy {
  return d.policy ?? DEFAULT_CREDENTIAL_POLICY;
}

/** A revocation record outlives the token it revokes: its expiry, or ten years for a legacy one. */
function expiryMs(exp: number | undefined): number {
  return typeof exp === 'number' ? exp * 1000 : Date.now() + 10 * 365 * 24 * 3600 * 1000;
}

export function issueAccountCredential(d: Pick<ControlApiDeps, 'keys' | 'controlUrl' | 'policy'>, accountId: string, accountName: string): string {
  const now = Math.floor(Date.now() / 1000);
  const claims: AccountClaims = { jti: randomId(12), accountId, accountName, controlUrl: d.controlUrl(), fleetKey: d.keys.publicKey, iat: now, exp: now + policyOf(d).accountSeconds };
  return signToken(TokenKind.Account, claims, d.keys.secretKey);
}

export function issueEnrollToken(keys: FleetKeys, accountId: string, ttlSeconds = 24 * 3600, reusable = false): string {
  const now = Math.floor(Date.now() / 1000);
  const claims: EnrollClaims = { jti: randomId(12), accountId, iat: now, exp: now + ttlSeconds, ...(reusable ? { reusable: true } : {}) };
  return signToken(TokenKind.Enroll, claims, keys.secretKey);
}

/** Approve a pending login: the account credential is sealed to the CLI's box key. */
export async function approveLogin(d: Pick<ControlApiDeps, 'store' | 'keys' | 'controlUrl' | 'policy'>, rawCode: string, accountName: string) {
  const code = normalizeCode(rawCode);
  const session = await d.store.getLoginSession(code);
  if (!session) throw new ApiError(404, 'login_not_found', `no pending login with code ${code} (unknown or expired)`);
  if (session.state !== 'pending') throw new ApiError(409, 'login_already_approved', `login ${code} is already approved`);
  const account = await ensureAccount(d.store, accountName);
  const credential = issueAccountCredential(d, account.id, account.name);
  await d.store.approveLoginSession(code, account.id, sealTo(session.boxPublicKey, credential));
  return { approved: code, account: account.name, accountId: account.id };
}
