// What an operator can do from the dashboard, each a POST under
// /dashboard/api/ behind the session and its CSRF token (dashboard.ts checks
// both before calling these): approve or deny a `tunnel login` code, revoke a
// credential, disconnect a tunnel (its connectors reconnect) or delete it (they stop),
// forget a relay that is down, kill a quick tunnel. Every input is checked here; every action is
// logged with what it did.

import type { Logger } from 'pino';
import { TokenError, TokenKind, verifyToken } from '@tunnel/protocol';
import { ApiError } from '../control/api-error.js';
import { approveLogin, denyLogin, normalizeCode } from '../control/control-api.js';
import type { FleetKeys } from '../control/keys.js';
import { forgetDownRelay } from '../fleet/relay-roster.js';
import { disconnectTunnel } from '../fleet/tunnel-disconnect.js';
import type { Store } from '../store/types.js';
import { DEFAULT_CREDENTIAL_POLICY, type CredentialPolicy } from '../connectors/credential-check.js';
import { tombstoneLifetimeMs } from '../store/tombstone-lifetime.js';
import type { QuickTunnels } from '../quick/quick-tunnels.js';

export interface OperatorActionDeps {
  store: Store;
  keys: FleetKeys;
  log: Logger;
  controlUrl(): string;
  policy?: CredentialPolicy;
  /** Null or absent: quick tunnels are off on this relay. */
  quick?: Pick<QuickTunnels, 'kill' | 'list'> | null;
}

const ACCOUNT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const LOGIN_CODE = /^[A-Z0-9]{4}-[A-Z0-9]{4}$/;
const TOKEN_ID = /^[A-Za-z0-9_-]{8,64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_TOKEN = 16_384;
/** A revocation of a bare id (expiry unknown) is kept this long, as `tunnel-relay revoke` does. */
const UNKNOWN_EXPIRY_MS = 10 * 365 * 24 * 3600 * 1000;

export class OperatorActions {
  constructor(private readonly d: OperatorActionDeps) {}

  async approveLogin(rawCode: string, body: Record<string, unknown>): Promise<{ approved: string; account: string; accountId: string }> {
    const code = loginCode(rawCode);
    let account = 'default';
    const a = body.account;
    if (a !== undefined && a !== '') {
      if (typeof a !== 'string' || !ACCOUNT_NAME.test(a)) throw new ApiError(400, 'bad_request', 'account: names are 1-63 letters, digits, dot, dash, underscore');
      account = a;
    }
    const r = await approveLogin(this.d, code, account);
    this.d.log.info({ event: 'login-approved', code: r.approved, account: r.account, via: 'dashboard' }, 'login approved from the dashboard');
    return r;
  }

  /** The CLI waiting on the code is told the operator denied it, and exits non-zero. */
  async denyLogin(rawCode: string): Promise<{ denied: string }> {
    const r = await denyLogin(this.d, loginCode(rawCode));
    this.d.log.info({ event: 'login-denied', code: r.denied, via: 'dashboard' }, 'login denied from the dashboard');
    return r;
  }

  /**
   * A credential of this fleet (tunnel token, account credential or
   * enrollment token; expired ones too) or a bare token id. A pasted token
   * must verify with the fleet key: a forged one revokes nothing.
   */
  async revokeToken(body: Record<string, unknown>): Promise<{ revoked: string; kind: string; expiresAt: number }> {
    const raw = typeof body.token === 'string' ? body.token.trim() : '';
    if (raw === '') throw new ApiError(400, 'bad_request', 'token: paste a credential (tunnel token, cert.json credential, enrollment token) or a token id');
    if (raw.length > MAX_TOKEN) throw new ApiError(400, 'bad_request', `token: over ${MAX_TOKEN} characters`);
    let jti: string;
    let kind = 'id';
    let expiresAt = Date.now() + UNKNOWN_EXPIRY_MS;
    if (raw.includes('.')) {
      const claims = verifiedClaims(raw, this.d.keys.publicKey);
      if (!claims) throw new ApiError(400, 'invalid_credential', 'token: not a credential of this fleet (its signature does not verify with the fleet key)');
      if (typeof claims.claims.jti !== 'string' || !TOKEN_ID.test(claims.claims.jti)) throw new ApiError(400, 'invalid_credential', 'token: this credential has no id to revoke');
      jti = claims.claims.jti;
      kind = claims.kind;
      if (typeof claims.claims.exp === 'number') expiresAt = claims.claims.exp * 1000;
    } else {
      if (!TOKEN_ID.test(raw)) throw new ApiError(400, 'bad_request', 'token: a token id is 8-64 letters, digits, - or _');
      jti = raw;
    }
    await this.d.store.revoke(jti, expiresAt);
    this.d.log.info({ event: 'token-revoked', tokenId: jti, kind, via: 'dashboard' }, 'credential revoked from the dashboard');
    return { revoked: jti, kind, expiresAt };
  }

  /** Deletes the tunnel and its routes; every relay ends its connections (tunnel_deleted) and its connectors stop. */
  async deleteTunnel(id: string): Promise<{ deleted: string; name: string }> {
    if (!UUID.test(id)) throw new ApiError(404, 'tunnel_not_found', 'no such tunnel');
    const t = await this.d.store.getTunnel(id);
    if (!t) throw new ApiError(404, 'tunnel_not_found', `no tunnel ${id}`);
    const connections = (await this.d.store.listPresence({ tunnelId: id })).length;
    await this.d.store.deleteTunnel(id, tombstoneLifetimeMs((this.d.policy ?? DEFAULT_CREDENTIAL_POLICY).tunnelSeconds));
    this.d.log.info({ event: 'tunnel-deleted', tunnelId: id, accountId: t.accountId, connections, via: 'dashboard' }, 'tunnel deleted from the dashboard');
    return { deleted: id, name: t.name };
  }

  /**
   * Drops the tunnel's connections on every relay (each relay ends those made
   * before now); the tunnel, its routes and its credential stay, and the
   * connectors reconnect — cloudflared's `tunnel cleanup`.
   */
  async disconnectTunnel(id: string): Promise<{ disconnected: string; name: string; connections: number }> {
    if (!UUID.test(id)) throw new ApiError(404, 'tunnel_not_found', 'no such tunnel');
    const t = await disconnectTunnel(this.d.store, id);
    this.d.log.info({ event: 'tunnel-disconnected', tunnelId: id, accountId: t.tunnel.accountId, connections: t.connections, via: 'dashboard' }, 'tunnel disconnected from the dashboard');
    return { disconnected: id, name: t.tunnel.name, connections: t.connections };
  }

  /** The operator API's kill (`DELETE /v1/operator/quick/HOST`): the hostname is gone fleet-wide and its connector stops. */
  async killQuick(ref: string): Promise<{ killed: string }> {
    if (!this.d.quick) throw new ApiError(404, 'quick_not_found', 'this relay does not offer quick tunnels');
    const hostname = await this.d.quick.kill(ref);
    this.d.log.info({ event: 'quick-killed', hostname, via: 'dashboard' }, `quick tunnel ${hostname} killed from the dashboard`);
    return { killed: hostname };
  }

  /** Only a relay that is no longer a member: a live one would record itself again at once. */
  async forgetRelay(id: string): Promise<{ forgotten: string }> {
    await forgetDownRelay(this.d.store, id);
    this.d.log.info({ event: 'relay-forgotten', relayId: id, via: 'dashboard' }, 'relay forgotten from the dashboard (its requests stay in the fleet totals)');
    return { forgotten: id };
  }
}

function loginCode(raw: string): string {
  const code = normalizeCode(raw);
  if (!LOGIN_CODE.test(code)) throw new ApiError(404, 'login_not_found', 'no pending login with that code');
  return code;
}

function verifiedClaims(token: string, publicKey: string): { kind: string; claims: Record<string, unknown> } | null {
  for (const kind of [TokenKind.Tunnel, TokenKind.Account, TokenKind.Enroll]) {
    try {
      // now: 0 — an expired credential may still be revoked (it is refused anyway, but says so).
      return { kind, claims: verifyToken(kind, token, publicKey, { now: 0 }).claims as Record<string, unknown> };
    } catch (e) {
      if (!(e instanceof TokenError)) throw e;
    }
  }
  return null;
}
