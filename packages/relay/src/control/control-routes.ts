import type http from 'node:http';
import { z } from 'zod';
import { normalizeHostname, verifyToken, TokenError, TokenKind, type AccountClaims, type EnrollClaims, type TunnelClaims } from '@tunnel/protocol';
import type { Store, Tunnel, Presence } from '../store/types.js';
import { StoreError } from '../store/types.js';
import { tombstoneLifetimeMs } from '../store/tombstone-lifetime.js';
import { ApiError } from './api-error.js';
import { bearer } from './control-auth.js';
import { checkTunnelCredential } from '../connectors/credential-check.js';
import { signTunnelToken, relayUrls, ensureAccount } from './provisioning.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import { checkRoute, grantZone, refusalError } from '../zones/zone-grants.js';
import { zoneVerdict } from '../zones/zone-rules.js';
import { challengeRecord, challengeToken, checkClaim } from '../zones/zone-claims.js';
import { approveLogin, denyLogin, expiryMs, issueAccountCredential, issueEnrollToken, loginCode, normalizeCode, policyOf } from './issued-credentials.js';
import { readJson, send } from './json-http.js';
import type { ControlApiDeps } from './control-api.js';
import { SignedRelayList } from '../fleet/signed-relay-list.js';

/** Default grace of `tunnel token --rotate`: the old token keeps working this long. */
export const DEFAULT_ROTATION_GRACE_SECONDS = 24 * 3600;
const MAX_ROTATION_GRACE_SECONDS = 30 * 24 * 3600;

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

export interface Call {
  d: ControlApiDeps;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  /** The path's `:name` segments, %-decoded. */
  params: Readonly<Record<string, string>>;
}

/** Who may call a route: anyone, the operator (operator key), or an account (its credential, as `who`). */
export type ControlRoute = { method: string; path: string } & (
  | { access: 'public' | 'operator'; handle(c: Call): Promise<void> }
  | { access: 'account'; handle(c: Call & { who: AccountClaims }): Promise<void> }
);

/** The control API, one line per endpoint. */
export const CONTROL_ROUTES: readonly ControlRoute[] = [
  // ---- public
  { method: 'GET', path: '/v1/relays', access: 'public', handle: async ({ d, res }) => send(res, 200, await relayList(d).current()) },
  { method: 'POST', path: '/v1/login', access: 'public', handle: startLogin },
  { method: 'GET', path: '/v1/login/:code', access: 'public', handle: pollLogin },
  { method: 'GET', path: '/v1/connector/routes', access: 'public', handle: connectorRoutes },
  { method: 'POST', path: '/v1/enroll', access: 'public', handle: enroll },
  // ---- operator
  { method: 'GET', path: '/v1/operator/logins', access: 'operator', handle: async ({ d, res }) => send(res, 200, { logins: await d.store.listLoginSessions() }) },
  { method: 'POST', path: '/v1/operator/logins/:code/approve', access: 'operator', handle: approve },
  { method: 'POST', path: '/v1/operator/logins/:code/deny', access: 'operator', handle: async ({ d, res, params }) => send(res, 200, await denyLogin(d, params.code!)) },
  { method: 'POST', path: '/v1/operator/accounts', access: 'operator', handle: createAccount },
  // ---- account
  { method: 'POST', path: '/v1/account/refresh', access: 'account', handle: refreshAccount },
  { method: 'POST', path: '/v1/account/logout', access: 'account', handle: logout },
  { method: 'GET', path: '/v1/tunnels', access: 'account', handle: listTunnels },
  { method: 'POST', path: '/v1/tunnels', access: 'account', handle: createTunnel },
  { method: 'GET', path: '/v1/tunnels/:tunnel', access: 'account', handle: showTunnel },
  { method: 'DELETE', path: '/v1/tunnels/:tunnel', access: 'account', handle: deleteTunnel },
  { method: 'GET', path: '/v1/tunnels/:tunnel/token', access: 'account', handle: async (c) => send(c.res, 200, await credentialsFor(c.d, await findTunnel(c))) },
  { method: 'POST', path: '/v1/tunnels/:tunnel/rotate', access: 'account', handle: rotateToken },
  { method: 'POST', path: '/v1/tunnels/:tunnel/cleanup', access: 'account', handle: async (c) => send(c.res, 200, { removed: await cleanupPresence(c.d.store, (await findTunnel(c)).id) }) },
  { method: 'GET', path: '/v1/routes', access: 'account', handle: async ({ d, res, who }) => send(res, 200, { routes: await d.store.listRoutes({ accountId: who.accountId }) }) },
  { method: 'POST', path: '/v1/routes', access: 'account', handle: addRoute },
  { method: 'DELETE', path: '/v1/routes/:hostname', access: 'account', handle: deleteRoute },
  { method: 'GET', path: '/v1/zones', access: 'account', handle: async ({ d, res, who }) => send(res, 200, { zones: await d.store.listZones({ accountId: who.accountId }) }) },
  { method: 'POST', path: '/v1/zones/claims', access: 'account', handle: (c) => claimZone(c, false) },
  { method: 'POST', path: '/v1/zones/claims/verify', access: 'account', handle: (c) => claimZone(c, true) },
];

// ---- public ---------------------------------------------------------------------------

async function startLogin({ d, req, res }: Call): Promise<void> {
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
      const s = await d.store.createLoginSession({ code, boxPublicKey: body.boxPublicKey, expiresAt });
      d.log.info({ event: 'login-created', code }, 'login session created');
      return send(res, 201, { code, expiresAt: s.expiresAt, approveUrl: `${d.controlUrl()}/dashboard/#login=${code}`, pollUrl: `/v1/login/${code}` });
    } catch (e) {
      d.logins?.release(code);
      if (!(e instanceof StoreError && e.code === 'CONFLICT') || attempt > 5) throw e;
    }
  }
}

async function pollLogin({ d, res, params }: Call): Promise<void> {
  const code = normalizeCode(params.code!);
  const s = await d.store.getLoginSession(code);
  if (!s) throw new ApiError(410, 'login_expired', `login code ${code} is unknown or expired: run \`tunnel login\` again`);
  if (s.state === 'pending') return send(res, 202, { state: 'pending', expiresAt: s.expiresAt });
  // Hand the sealed credential (or the denial) out once.
  await d.store.deleteLoginSession(code);
  d.logins?.release(code);
  if (s.state === 'denied') throw new ApiError(403, 'login_denied', `the operator denied this login (code ${code})`);
  send(res, 200, { state: 'approved', sealedCredential: s.sealedCredential });
}

/**
 * A connector asks, with its own tunnel credential, which hostnames it
 * serves (shown in `tunnel run`'s status block). Nothing secret in the answer.
 * The same check as the connector endpoint: expiry, and revocation whatever the jti's shape.
 */
async function connectorRoutes({ d, req, res }: Call): Promise<void> {
  const checked = await checkTunnelCredential(bearer(req.headers.authorization), d.keys.publicKey, d.store, policyOf(d));
  if ('code' in checked) throw new ApiError(checked.status, checked.code, checked.message);
  const tunnel = await d.store.getTunnel(checked.claims.tunnelId);
  if (!tunnel) throw new ApiError(403, 'tunnel_deleted', `tunnel ${checked.claims.tunnelId} no longer exists`);
  const routes = await d.store.listRoutes({ tunnelId: tunnel.id });
  send(res, 200, { tunnelId: tunnel.id, tunnelName: tunnel.name, hostnames: routes.map((r) => r.hostname) });
}

async function enroll({ d, req, res }: Call): Promise<void> {
  const { store } = d;
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
  send(res, 200, { credential: issueAccountCredential(d, account.id, account.name), accountId: account.id, accountName: account.name });
}

// ---- operator ---------------------------------------------------------------------------

async function approve({ d, req, res, params }: Call): Promise<void> {
  const body = z.object({ account: NameSchema.default('default') }).parse(await readJson(req));
  send(res, 200, await approveLogin(d, params.code!, body.account));
}

async function createAccount({ d, req, res }: Call): Promise<void> {
  const body = z.object({ name: NameSchema, reusable: z.boolean().default(false) }).parse(await readJson(req));
  const account = await ensureAccount(d.store, body.name);
  send(res, 201, { account, enrollToken: issueEnrollToken(d.keys, account.id, undefined, body.reusable) });
}

// ---- account ----------------------------------------------------------------------------

type AccountCall = Call & { who: AccountClaims };

/** A still-valid account credential is exchanged for a fresh one; the old one is revoked at once (cert.json holds only the new one). */
async function refreshAccount({ d, res, who }: AccountCall): Promise<void> {
  const account = await d.store.getAccount(who.accountId);
  const credential = issueAccountCredential(d, who.accountId, account?.name ?? who.accountName);
  await d.store.revoke(who.jti, expiryMs(who.exp));
  d.log.info({ event: 'account-credential-refreshed', accountId: who.accountId, oldTokenId: who.jti }, 'account credential refreshed');
  send(res, 200, { credential, accountId: who.accountId, accountName: account?.name ?? who.accountName });
}

/** `tunnel logout`: the credential in cert.json stops working fleet-wide, not only on this machine. */
async function logout({ d, res, who }: AccountCall): Promise<void> {
  await d.store.revoke(who.jti, expiryMs(who.exp));
  d.log.info({ event: 'account-logout', accountId: who.accountId, tokenId: who.jti }, 'account credential revoked by its holder (logout)');
  send(res, 200, { revoked: who.jti });
}

async function listTunnels({ d, res, who }: AccountCall): Promise<void> {
  const tunnels = await d.store.listTunnels(who.accountId);
  const presence = await d.store.listPresence();
  send(res, 200, { tunnels: tunnels.map((t) => ({ ...t, connections: presence.filter((x) => x.tunnelId === t.id).length })) });
}

async function createTunnel({ d, req, res, who }: AccountCall): Promise<void> {
  const body = z.object({ name: NameSchema }).parse(await readJson(req));
  if (await d.store.getTunnelByName(who.accountId, body.name)) throw new ApiError(409, 'tunnel_exists', `you already have a tunnel named ${body.name}`);
  const tunnel = await d.store.createTunnel(who.accountId, body.name);
  send(res, 201, { tunnel, credentials: await credentialsFor(d, tunnel) });
}

async function showTunnel(c: AccountCall): Promise<void> {
  const tunnel = await findTunnel(c);
  const [routes, presence] = await Promise.all([c.d.store.listRoutes({ tunnelId: tunnel.id }), c.d.store.listPresence({ tunnelId: tunnel.id })]);
  send(c.res, 200, { tunnel, routes, connectors: groupConnectors(presence) });
}

async function deleteTunnel(c: AccountCall): Promise<void> {
  const { d, url, res, who } = c;
  const tunnel = await findTunnel(c);
  const presence = await d.store.listPresence({ tunnelId: tunnel.id });
  if (presence.length > 0 && url.searchParams.get('force') !== 'true') {
    throw new ApiError(409, 'tunnel_has_connectors', `tunnel ${tunnel.name} has ${presence.length} active connection(s); stop its connectors or use --force`);
  }
  await d.store.deleteTunnel(tunnel.id, tombstoneLifetimeMs(policyOf(d).tunnelSeconds));
  d.log.info({ event: 'tunnel-deleted', tunnelId: tunnel.id, accountId: who.accountId }, 'tunnel deleted');
  send(res, 200, { deleted: tunnel.id });
}

/**
 * Stateless tokens: the caller names the token to retire (its current
 * credentials file). It must be this fleet's, for this tunnel; expired is
 * fine (it is dead anyway). It stays valid for the grace period, so a
 * running connector can move to the new one without a failed request.
 */
async function rotateToken(c: AccountCall): Promise<void> {
  const { d, req, res, who } = c;
  const tunnel = await findTunnel(c);
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
    await d.store.revoke(old.jti, Math.max(expiryMs(old.exp), revokesAt), revokesAt);
    retired = { tokenId: old.jti, revokesAt };
  }
  d.log.info({ event: 'tunnel-token-rotated', tunnelId: tunnel.id, accountId: who.accountId, oldTokenId: retired?.tokenId ?? null, revokesAt: retired?.revokesAt ?? null }, 'tunnel token rotated');
  send(res, 200, { credentials: await credentialsFor(d, tunnel), retired });
}

async function addRoute(c: AccountCall): Promise<void> {
  const { d, req, res, who } = c;
  const body = z.object({ hostname: HostnameSchema, tunnel: z.string().min(1).max(64) }).parse(await readJson(req));
  const tunnel = await findTunnel(c, body.tunnel);
  await checkRoute(d.store, who.accountId, body.hostname);
  const existing = await d.store.getRoute(body.hostname);
  if (existing && existing.tunnelId !== tunnel.id) {
    throw new ApiError(409, 'hostname_taken', existing.accountId === who.accountId ? `${body.hostname} is already routed to another of your tunnels (${existing.tunnelId}); delete that route first` : `${body.hostname} is already routed by another account`);
  }
  try {
    const route = await d.store.addRoute({ hostname: body.hostname, tunnelId: tunnel.id, accountId: who.accountId });
    send(res, 201, { route });
  } catch (e) {
    if (e instanceof StoreError && e.code === 'CONFLICT') throw new ApiError(409, 'hostname_taken', `${body.hostname} is already routed to another tunnel`);
    throw e;
  }
}

async function deleteRoute({ d, res, who, params }: AccountCall): Promise<void> {
  const hostname = params.hostname!.toLowerCase();
  const route = await d.store.getRoute(hostname);
  if (!route || route.accountId !== who.accountId) throw new ApiError(404, 'route_not_found', `you have no route for ${hostname}`);
  await d.store.deleteRoute(hostname);
  send(res, 200, { deleted: hostname });
}

/** A DNS TXT challenge for a zone (`verify`: check it was published, then grant the zone). */
async function claimZone({ d, req, res, who }: AccountCall, verify: boolean): Promise<void> {
  if (!d.zoneClaims) throw new ApiError(403, 'zone_claims_disabled', 'this fleet does not take zone claims: ask the operator (tunnel-relay zone add ZONE --account NAME)');
  const body = z.object({ zone: z.string().min(1).max(253) }).parse(await readJson(req));
  const v = zoneVerdict(body.zone, who.accountId, await d.store.listZones(), await d.store.listRoutes());
  if (!v.ok) throw refusalError(v.refusal);
  const zone = v.value;
  const token = challengeToken(d.keys.secretKey, who.accountId, zone);
  if (!verify) return send(res, 200, { zone, record: challengeRecord(zone), type: 'TXT', value: token });
  const check = await d.zoneClaims.checks.run(() => checkClaim(zone, token, d.zoneClaims));
  if (!check) throw new ApiError(429, 'zone_claims_busy', `this relay is already checking ${d.zoneClaims.checks.max} zone claim(s); try again in a few seconds`);
  if (!check.found) throw new ApiError(403, 'challenge_not_found', `${check.reason}; publish TXT ${challengeRecord(zone)} = "${token}" and try again`);
  const granted = await grantZone(d.store, who.accountId, zone, 'dns');
  d.log.info({ event: 'zone-claimed', zone, accountId: who.accountId }, 'zone granted by DNS challenge');
  send(res, 201, { zone: granted });
}

// ---- helpers ------------------------------------------------------------------------------

/** One signed relay list per control API (it caches its signature). */
const relayLists = new WeakMap<ControlApiDeps, SignedRelayList>();
function relayList(d: ControlApiDeps): SignedRelayList {
  let l = relayLists.get(d);
  if (!l) relayLists.set(d, (l = new SignedRelayList(d.store, d.keys)));
  return l;
}

/** The caller's tunnel named by id or name (`ref`, else the path's `:tunnel`). */
async function findTunnel({ d, who, params }: AccountCall, ref = params.tunnel!): Promise<Tunnel> {
  const byId = await d.store.getTunnel(ref);
  if (byId && byId.accountId === who.accountId) return byId;
  const byName = await d.store.getTunnelByName(who.accountId, ref);
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
