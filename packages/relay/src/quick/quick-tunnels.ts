// Quick tunnels (DESIGN §13, `tunnel --url`): anonymous tunnels under the
// operator's quick zone. Each one is an ordinary tunnel of the reserved
// QUICK_ACCOUNT with one route, so routing, presence, peer forwarding,
// revocation and deletion are the named-tunnel machinery; what is added here
// is issuing them, renewing their short-lived tokens, and freeing idle ones.

import type { Logger } from 'pino';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { RateLimiterRes } from 'rate-limiter-flexible';
import type { TunnelClaims } from '@tunnel/protocol';
import { ApiError } from '../control/api-error.js';
import { checkTunnelCredential, type CredentialPolicy } from '../connectors/credential-check.js';
import type { FleetKeys } from '../control/keys.js';
import { relayUrls, signTunnelToken } from '../control/provisioning.js';
import { fleetRateLimiter, type SharedRedis } from '../rate-limiter.js';
import type { LimitHits, RelayLimits } from '../relay-limits.js';
import { StoreError, type Presence, type Store, type Tunnel } from '../store/types.js';
import { checkRoute, grantZone } from '../zones/zone-grants.js';
import { isWithin } from '../zones/zone-rules.js';
import { QUICK_ACCOUNT, randomLabel } from './quick-names.js';
import { tombstoneLifetimeMs } from '../store/tombstone-lifetime.js';

export interface QuickSettings {
  /** The zone quick hostnames are made under (`--quick-zone`). */
  zone: string;
  /** Lifetime of a quick token (`--quick-token-ttl`, default 8 h); the live connector renews it. */
  tokenSeconds: number;
  /** A response header every quick tunnel's answers carry (`--quick-banner`), if set. */
  banner?: string;
}

export const DEFAULT_QUICK_TOKEN_SECONDS = 8 * 3600;
/** A renewed token's predecessor stays valid this long, so the connector can move its connections to the new one. */
const RENEW_GRACE_MS = 120_000;
/** Retry-After of a full per-IP live ceiling: a slot frees when one of that address's tunnels ends, which no clock predicts. */
const LIVE_SLOT_RETRY_S = 30;
/** Label collisions are 2^-80 events; a few tries cover a racing duplicate without looping on a broken store. */
const CREATE_TRIES = 5;

export interface QuickDeps {
  store: Store;
  keys: FleetKeys;
  log: Logger;
  policy: CredentialPolicy;
  limits: Pick<RelayLimits, 'quickTunnels' | 'quickTunnelsPerIp' | 'quickPerIpWindowMs' | 'quickLivePerIp' | 'quickIdleMs'>;
  hits: LimitHits;
  /** This relay's public URL (`http://host:port`): quick URLs take its scheme and port. */
  publicUrl(): string;
  controlUrl(): string;
  /** Whether this relay holds a connection of the tunnel now (the store's presence lags by up to a heartbeat). */
  heldHere(tunnelId: string): boolean;
  redis?: SharedRedis;
}

/** What `POST /v1/quick` answers. */
export interface QuickGrant {
  hostname: string;
  url: string;
  tunnelId: string;
  token: string;
  expiresAt: number;
  relays: string[];
  controlUrl: string;
  fleetKey: string;
}

/** One quick tunnel as operators see it (`GET /v1/operator/quick`, dashboard). */
export interface QuickTunnelInfo {
  tunnelId: string;
  hostname: string;
  createdAt: number;
  ageSeconds: number;
  /** Addresses its connector's connections come from. */
  clientIps: string[];
  connections: number;
}

export class QuickTunnels {
  private accountId = '';
  private readonly perIp: RateLimiterAbstract | null;
  /** Tunnel id → when this relay last saw a connection of it (or started watching it). */
  private readonly lastSeen = new Map<string, number>();
  private readonly startedAt = Date.now();
  private sweeper: NodeJS.Timeout | null = null;
  private sweeping = false;

  constructor(
    readonly settings: QuickSettings,
    private readonly d: QuickDeps,
  ) {
    const l = d.limits;
    this.perIp = l.quickTunnelsPerIp > 0 ? fleetRateLimiter({ points: l.quickTunnelsPerIp, durationS: l.quickPerIpWindowMs / 1000, keyPrefix: 'quick-per-ip', redis: d.redis }) : null;
  }

  /** The reserved account's id (known once start() has run). */
  get account(): string {
    return this.accountId;
  }

  /**
   * Creates the reserved account and reserves the zone for it through the
   * ordinary zone rules: a zone another account holds (or nests with) stops
   * the relay here, with the reason.
   */
  async start(): Promise<void> {
    const { store } = this.d;
    let account = await store.getAccountByName(QUICK_ACCOUNT);
    if (!account) {
      try {
        account = await store.createAccount(QUICK_ACCOUNT);
      } catch (e) {
        if (!(e instanceof StoreError && e.code === 'CONFLICT')) throw e;
        account = await store.getAccountByName(QUICK_ACCOUNT);
        if (!account) throw e;
      }
    }
    this.accountId = account.id;
    try {
      await grantZone(store, account.id, this.settings.zone, 'operator');
    } catch (e) {
      if (e instanceof ApiError) throw new Error(`--quick-zone ${this.settings.zone}: ${e.message}`);
      throw e;
    }
    const every = Math.min(30_000, Math.max(250, Math.floor(this.lifetimeMs / 4)));
    this.sweeper = setInterval(() => void this.sweep(), every);
    this.sweeper.unref();
    this.d.log.info({ event: 'quick-enabled', zone: this.settings.zone, tokenSeconds: this.settings.tokenSeconds, idleMs: this.d.limits.quickIdleMs }, `quick tunnels enabled under ${this.settings.zone}`);
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }

  /**
   * How long a quick tunnel lives with no connection: the idle expiry, and
   * in any case no longer than a token lifetime: by then every token of it
   * has expired (renewal needs a connection), so nobody can serve it again.
   */
  private get lifetimeMs(): number {
    const tokenMs = this.settings.tokenSeconds * 1000;
    const idle = this.d.limits.quickIdleMs;
    return idle > 0 ? Math.min(idle, tokenMs) : tokenMs;
  }

  /** Live quick tunnels and the tombstones of deleted ones still in the store (for /metrics). */
  async storeCounts(): Promise<{ live: number; deleted: number }> {
    const [tunnels, deleted] = await Promise.all([this.d.store.listTunnels(this.accountId), this.d.store.countTombstones(this.accountId)]);
    return { live: tunnels.length, deleted };
  }

  /** A route belongs to a quick tunnel. */
  isQuick(accountId: string): boolean {
    return accountId === this.accountId && this.accountId !== '';
  }

  async create(ip: string, connectorId: string): Promise<QuickGrant> {
    const { store, log, limits, hits } = this.d;
    if (this.perIp) {
      try {
        await this.perIp.consume(ip);
      } catch (e) {
        if (!(e instanceof RateLimiterRes)) throw e;
        hits.hit('quick_tunnels_per_ip');
        const retry = Math.max(1, Math.ceil(e.msBeforeNext / 1000));
        log.warn({ event: 'quick-refused', ip, limit: 'quick_tunnels_per_ip' }, 'quick tunnel refused: too many from this address');
        throw new ApiError(429, 'too_many_quick_tunnels', `this address has created ${limits.quickTunnelsPerIp} quick tunnels within ${Math.round(limits.quickPerIpWindowMs / 1000)} s (the limit): retry in ${retry} s`, retry);
      }
    }
    if (limits.quickTunnels > 0) {
      const live = (await store.listTunnels(this.accountId)).length;
      if (live >= limits.quickTunnels) {
        hits.hit('quick_tunnels');
        log.warn({ event: 'quick-refused', ip, limit: 'quick_tunnels', live }, 'quick tunnel refused: the fleet is full');
        throw new ApiError(429, 'quick_tunnels_full', `this fleet already runs ${live} quick tunnels (the limit): retry later`, 60);
      }
    }
    let tunnel: Tunnel | undefined;
    for (let i = 0; i < CREATE_TRIES && !tunnel; i++) {
      try {
        tunnel = await store.createTunnel(this.accountId, randomLabel());
      } catch (e) {
        if (!(e instanceof StoreError && e.code === 'CONFLICT')) throw e;
      }
    }
    if (!tunnel) throw new ApiError(503, 'quick_name_unavailable', 'could not find a free quick hostname; retry');
    const hostname = `${tunnel.name}.${this.settings.zone}`;
    try {
      await this.claimLiveSlot(ip, tunnel.id);
      // The zone rules, as for any route: the hostname lies inside the zone this account holds.
      await checkRoute(store, this.accountId, hostname);
      await store.addRoute({ hostname, tunnelId: tunnel.id, accountId: this.accountId });
    } catch (e) {
      // No token was issued for it: its tombstone has nothing to answer for.
      await store.deleteTunnel(tunnel.id, 0).catch(() => {});
      throw e;
    }
    this.lastSeen.set(tunnel.id, Date.now());
    const grant = await this.grant(tunnel, hostname, connectorId);
    log.info({ event: 'quick-created', tunnelId: tunnel.id, hostname, ip, connectorId }, `quick tunnel ${hostname} created`);
    return grant;
  }

  /**
   * The live ceiling per client IP. The tunnel exists before its slot is
   * claimed, so two creations racing for the last slot are settled by the
   * store (one Lua script on Redis), never both admitted. A slot is held
   * while the tunnel exists, for at most a token lifetime from its creation.
   */
  private async claimLiveSlot(ip: string, tunnelId: string): Promise<void> {
    const max = this.d.limits.quickLivePerIp;
    if (max <= 0) return;
    if (await this.d.store.claimTunnelSlot(`quick-ip:${ip}`, tunnelId, max, this.settings.tokenSeconds * 1000)) return;
    this.d.hits.hit('quick_live_per_ip');
    this.d.log.warn({ event: 'quick-refused', ip, limit: 'quick_live_per_ip' }, 'quick tunnel refused: this address already runs the most live quick tunnels');
    throw new ApiError(
      429,
      'too_many_live_quick_tunnels',
      `this address already runs ${max} live quick tunnels (the limit): stop one (Ctrl-C on its tunnel --url) and retry`,
      LIVE_SLOT_RETRY_S,
    );
  }

  /**
   * A fresh token for the same tunnel, only to the connector the token is
   * bound to, and only while it holds a connection: a copied token is no
   * way to keep a hostname alive from somewhere else.
   */
  async renew(token: string): Promise<QuickGrant> {
    const { claims, tunnel, hostname } = await this.verify(token);
    const presence = await this.d.store.listPresence({ tunnelId: tunnel.id });
    if (!presence.some((p) => p.connectorId === claims.quick!.connectorId)) {
      throw new ApiError(409, 'quick_not_connected', 'only the connector serving this quick tunnel can renew its token, while it is connected');
    }
    const grant = await this.grant(tunnel, hostname, claims.quick!.connectorId);
    const revokesAt = Date.now() + RENEW_GRACE_MS;
    await this.d.store.revoke(claims.jti, Math.max((claims.exp ?? 0) * 1000, revokesAt), revokesAt);
    this.d.log.info({ event: 'quick-renewed', tunnelId: tunnel.id, hostname, oldTokenId: claims.jti }, 'quick tunnel token renewed');
    return grant;
  }

  /** The connector's own removal (Ctrl-C): the hostname is gone fleet-wide at once. */
  async remove(token: string): Promise<string> {
    const { tunnel, hostname } = await this.verify(token);
    await this.delete(tunnel.id, 'connector');
    return hostname;
  }

  /** Operator kill, by hostname or tunnel id. */
  async kill(ref: string): Promise<string> {
    const all = await this.list();
    const hit = all.find((t) => t.tunnelId === ref || t.hostname === ref.toLowerCase());
    if (!hit) throw new ApiError(404, 'quick_not_found', `no quick tunnel ${ref}`);
    await this.delete(hit.tunnelId, 'operator');
    return hit.hostname;
  }

  async list(): Promise<QuickTunnelInfo[]> {
    const { store } = this.d;
    const [tunnels, routes, presence] = await Promise.all([store.listTunnels(this.accountId), store.listRoutes({ accountId: this.accountId }), store.listPresence()]);
    const byTunnel = new Map<string, Presence[]>();
    for (const p of presence) byTunnel.set(p.tunnelId, [...(byTunnel.get(p.tunnelId) ?? []), p]);
    const now = Date.now();
    return tunnels.map((t) => {
      const conns = byTunnel.get(t.id) ?? [];
      return {
        tunnelId: t.id,
        hostname: routes.find((r) => r.tunnelId === t.id)?.hostname ?? `${t.name}.${this.settings.zone}`,
        createdAt: t.createdAt,
        ageSeconds: Math.floor((now - t.createdAt) / 1000),
        clientIps: [...new Set(conns.map((c) => c.clientIp))],
        connections: conns.length,
      };
    });
  }

  /**
   * Frees quick tunnels no relay has held a connection of for their
   * lifetime (lifetimeMs). Every relay sweeps; the first to delete wins, the others find
   * it gone. A relay counts idle time from when it started watching, so a
   * restart never frees a hostname early.
   */
  async sweep(now = Date.now()): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const { store } = this.d;
      const [tunnels, presence] = await Promise.all([store.listTunnels(this.accountId), store.listPresence()]);
      const connected = new Set(presence.map((p) => p.tunnelId));
      const known = new Set<string>();
      for (const t of tunnels) {
        known.add(t.id);
        if (connected.has(t.id) || this.d.heldHere(t.id)) {
          this.lastSeen.set(t.id, now);
          continue;
        }
        let since = this.lastSeen.get(t.id);
        if (since === undefined) this.lastSeen.set(t.id, (since = Math.max(t.createdAt, this.startedAt)));
        if (now - since < this.lifetimeMs) continue;
        if (await this.delete(t.id, 'idle')) this.d.hits.hit('quick_idle_expiry');
      }
      for (const id of this.lastSeen.keys()) if (!known.has(id)) this.lastSeen.delete(id);
    } catch (e) {
      this.d.log.warn({ event: 'quick-sweep-failed', err: (e as Error).message }, 'cannot check quick tunnels for idle expiry now');
    } finally {
      this.sweeping = false;
    }
  }

  /** True when this call deleted it (another relay may have been first). */
  private async delete(tunnelId: string, why: 'connector' | 'operator' | 'idle'): Promise<boolean> {
    try {
      await this.d.store.deleteTunnel(tunnelId, tombstoneLifetimeMs(this.settings.tokenSeconds));
    } catch (e) {
      if (e instanceof StoreError && e.code === 'NOT_FOUND') return false;
      throw e;
    }
    this.lastSeen.delete(tunnelId);
    this.d.log.info({ event: 'quick-deleted', tunnelId, reason: why }, `quick tunnel deleted (${why})`);
    return true;
  }

  /** The ordinary tunnel-credential check, then: a quick token of a live quick tunnel, for its own hostname. */
  private async verify(token: string): Promise<{ claims: TunnelClaims & { quick: NonNullable<TunnelClaims['quick']> }; tunnel: Tunnel; hostname: string }> {
    const checked = await checkTunnelCredential(token, this.d.keys.publicKey, this.d.store, this.d.policy);
    if ('code' in checked) throw new ApiError(checked.status, checked.code, checked.message);
    const { claims } = checked;
    const q = claims.quick;
    if (!q || typeof q.hostname !== 'string' || typeof q.connectorId !== 'string' || claims.accountId !== this.accountId) {
      throw new ApiError(403, 'not_a_quick_token', 'this is not a quick tunnel token: named tunnels are managed with an account credential');
    }
    const tunnel = await this.d.store.getTunnel(claims.tunnelId);
    const route = await this.d.store.getRoute(q.hostname);
    if (!tunnel || !route || route.tunnelId !== tunnel.id || !isWithin(q.hostname, this.settings.zone)) {
      throw new ApiError(403, 'tunnel_deleted', `quick tunnel ${q.hostname} no longer exists`);
    }
    return { claims: claims as TunnelClaims & { quick: NonNullable<TunnelClaims['quick']> }, tunnel, hostname: q.hostname };
  }

  private async grant(tunnel: Tunnel, hostname: string, connectorId: string): Promise<QuickGrant> {
    const relays = await relayUrls(this.d.store);
    const controlUrl = this.d.controlUrl();
    const token = signTunnelToken(this.d.keys, tunnel, relays, controlUrl, this.settings.tokenSeconds, { hostname, connectorId });
    return {
      hostname,
      url: quickUrl(hostname, this.d.publicUrl()),
      tunnelId: tunnel.id,
      token,
      expiresAt: (Math.floor(Date.now() / 1000) + this.settings.tokenSeconds) * 1000,
      relays,
      controlUrl,
      fleetKey: this.d.keys.publicKey,
    };
  }
}

/** `https://label.zone`, with the public listener's scheme and its port when that is not the scheme's own. */
export function quickUrl(hostname: string, publicUrl: string): string {
  let scheme = 'https:';
  let port = '';
  try {
    const u = new URL(publicUrl);
    scheme = u.protocol;
    port = u.port;
  } catch {
    /* no public listener known: the usual https */
  }
  return `${scheme}//${hostname}${port ? `:${port}` : ''}`;
}
