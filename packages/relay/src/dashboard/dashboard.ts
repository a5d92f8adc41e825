// The operator dashboard on the control port (the control API's `extra`
// hook): routes /dashboard/… to the login form, the page and its assets, the
// live state (JSON and server-sent events), the peers' stats endpoint and the
// operator actions. Sessions and CSRF are session.ts; the fleet state is
// fleet-state.ts; the actions are operator-actions.ts.

import type http from 'node:http';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { Store } from '../store/types.js';
import type { CountsByTunnel } from '../store/relay-history.js';
import type { FleetKeys } from '../control/keys.js';
import type { TunnelConnections } from '../connectors/tunnel-connections.js';
import type { OperatorKeyGuard } from '../control/operator-key-guard.js';
import type { CredentialPolicy } from '../connectors/credential-check.js';
import type { PeerAuth } from '../fleet/peer-auth.js';
import type { QuickTunnels } from '../quick/quick-tunnels.js';
import type { AcmeSummary } from '../tls/certificate-manager.js';
import { ApiError, decodeSegment } from '../control/api-error.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import { DashboardSessions, checkSameOrigin, type Session } from './session.js';
import { RelayStatsClient, STATS_PATH, type RelayStats } from './relay-stats.js';
import { RateTracker, buildFleetState, type DashboardState } from './fleet-state.js';
import { LiveUpdates } from './live-updates.js';
import { OperatorActions } from './operator-actions.js';
import { asset, html, json, readJsonObject, readText } from './responses.js';
import { dashboardHtml, loginHtml } from './page.js';
import { APP_CSS } from './page-style.js';
import { APP_JS } from './page-script.js';

export type { DashboardState } from './fleet-state.js';
export type { RelayStats } from './relay-stats.js';

export interface DashboardDeps {
  store: Store;
  keys: FleetKeys;
  log: Logger;
  relayId: string;
  region: string;
  operatorKey?: string;
  /** Every operator-key check goes through it (absent when there is no key). */
  operatorGuard?: OperatorKeyGuard;
  controlUrl(): string;
  connections: TunnelConnections;
  /** This relay's cumulative request counts per tunnel (its relay history). */
  history: { counts(): CountsByTunnel };
  /** Set when the relay has certificates: stats are asked of https:// peers only, verified with this. */
  peerTls?: { dispatcher?: Dispatcher };
  /** The fleet's relay-to-relay signatures (the same scheme as peer forwarding). */
  peerAuth: PeerAuth;
  policy?: CredentialPolicy;
  /** The relay's quick tunnels (null: off): listed as their own group, killed through the operator API's kill. */
  quick?: Pick<QuickTunnels, 'kill' | 'list'> | null;
  /** This relay's ACME certificates, renewals and failures (absent or null: no ACME). */
  acme?: () => AcmeSummary | null;
  /** How often snapshots are pushed to open dashboards. */
  tickMs?: number;
  /** A relay whose heartbeat is older than this is shown as stale. */
  staleAfterMs?: number;
}

const NO_KEY = 'This relay has no operator key configured: start it with --operator-key-file FILE (or TUNNEL_RELAY_OPERATOR_KEY) to use the dashboard.';

export class Dashboard {
  private readonly sessions: DashboardSessions | null;
  private readonly stats: RelayStatsClient;
  private readonly rates = new RateTracker();
  private readonly live: LiveUpdates;
  private readonly actions: OperatorActions;
  private last: { at: number; state: DashboardState } | null = null;
  private building: Promise<DashboardState> | null = null;

  constructor(private readonly d: DashboardDeps) {
    this.sessions = d.operatorKey && d.operatorGuard ? new DashboardSessions(d.operatorKey) : null;
    this.stats = new RelayStatsClient({ ...d, counts: () => d.history.counts() });
    this.live = new LiveUpdates((age) => this.snapshot(age), d.log, d.tickMs ?? 1_000);
    this.actions = new OperatorActions(d);
  }

  /** The control API's `extra` hook: true when the request was ours. */
  async handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<boolean> {
    const p = url.pathname;
    if (p !== '/dashboard' && !p.startsWith('/dashboard/')) return false;
    const m = req.method ?? 'GET';
    if (p === '/dashboard') {
      res.writeHead(302, { location: '/dashboard/' + url.search });
      res.end();
      return true;
    }
    if (p === '/dashboard/app.js' && m === 'GET') return asset(res, 'text/javascript; charset=utf-8', APP_JS);
    if (p === '/dashboard/app.css' && m === 'GET') return asset(res, 'text/css; charset=utf-8', APP_CSS);
    if (p === STATS_PATH && m === 'GET') {
      if (!(await this.stats.authorized(req))) throw new ApiError(401, 'unauthorized', 'relay stats need a fleet signature or the operator key');
      return json(res, 200, this.stats.local());
    }
    if (p === '/dashboard/login' && m === 'POST') return this.login(req, res);
    if (p === '/dashboard/logout' && m === 'POST') {
      res.writeHead(303, { location: '/dashboard/', 'cache-control': 'no-store', ...(this.sessions ? { 'set-cookie': this.sessions.end(req) } : {}) });
      res.end();
      return true;
    }

    const session = this.sessions?.current(req) ?? null;
    if (p === '/dashboard/' && m === 'GET') {
      if (!this.sessions) return html(res, 403, loginHtml({ error: NO_KEY, disabled: true }));
      if (!session) return html(res, 200, loginHtml({}));
      return html(res, 200, dashboardHtml({ relayId: this.d.relayId, region: this.d.region, csrf: this.sessions.csrfToken(session) }));
    }
    if (!p.startsWith('/dashboard/api/')) throw new ApiError(404, 'not_found', `no such page ${p}`);
    if (!session || !this.sessions) throw new ApiError(401, 'login_required', 'log in to the dashboard with the operator key');

    if (m === 'GET' && p === '/dashboard/api/state') return json(res, 200, await this.snapshot(0));
    if (m === 'GET' && p === '/dashboard/api/events') return this.live.open(res, session.exp);
    if (m === 'POST') return this.action(req, res, p, session);
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
  }

  private async action(req: http.IncomingMessage, res: http.ServerResponse, p: string, session: Session): Promise<boolean> {
    const seg = p.slice('/dashboard/api/'.length).split('/');
    const route = `${seg[0]}/${seg.length === 3 ? `:id/${seg[2]}` : seg[1]}`;
    const known = ['logins/:id/approve', 'logins/:id/deny', 'tokens/revoke', 'tunnels/:id/delete', 'tunnels/:id/disconnect', 'relays/:id/forget', 'quick/:id/kill'];
    if (!known.includes(route)) throw new ApiError(404, 'not_found', `no such endpoint POST ${p}`);
    this.sessions!.checkAction(req, session);
    const id = seg.length === 3 ? decodeSegment(seg[1]!) : '';
    const body = await readJsonObject(req);
    let result: unknown;
    switch (route) {
      case 'logins/:id/approve':
        result = await this.actions.approveLogin(id, body);
        break;
      case 'logins/:id/deny':
        result = await this.actions.denyLogin(id);
        break;
      case 'tokens/revoke':
        result = await this.actions.revokeToken(body);
        break;
      case 'tunnels/:id/delete':
        result = await this.actions.deleteTunnel(id);
        break;
      case 'tunnels/:id/disconnect':
        result = await this.actions.disconnectTunnel(id);
        break;
      case 'relays/:id/forget':
        result = await this.actions.forgetRelay(id);
        break;
      case 'quick/:id/kill':
        result = await this.actions.killQuick(id);
        break;
    }
    // Every open page sees the change now, not at the next tick.
    this.last = null;
    void this.live.broadcast();
    return json(res, 200, result);
  }

  close(): void {
    this.live.close();
  }

  private async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
    checkSameOrigin(req);
    const ip = stripV4Mapped(req.socket.remoteAddress ?? '');
    const form = new URLSearchParams(await readText(req));
    const next = safeNext(form.get('next') ?? '');
    if (!this.sessions || !this.d.operatorGuard) return html(res, 403, loginHtml({ error: NO_KEY, disabled: true }));
    const key = (form.get('key') ?? '').trim();
    const check = await this.d.operatorGuard.check(ip, key);
    if (!check.ok && check.status === 429) {
      res.setHeader('retry-after', String(check.retryAfterS));
      return html(res, 429, loginHtml({ error: `Too many wrong keys from your address: wait ${check.retryAfterS} s and try again.` }));
    }
    if (!check.ok) {
      this.d.log.warn({ event: 'dashboard-login-refused', ip }, 'dashboard login refused: wrong operator key');
      return html(res, 401, loginHtml({ error: key ? 'Wrong operator key: access refused.' : 'Enter the operator key.' }));
    }
    this.d.log.info({ event: 'dashboard-login', ip }, 'operator logged in to the dashboard');
    res.writeHead(303, { location: `/dashboard/${next}`, 'set-cookie': this.sessions.create(req), 'cache-control': 'no-store' });
    res.end();
    return true;
  }

  /** A fresh snapshot (or the last one when younger than `maxAgeMs`); concurrent callers share one build. */
  async snapshot(maxAgeMs: number): Promise<DashboardState> {
    if (this.last && Date.now() - this.last.at <= maxAgeMs) return this.last.state;
    this.building ??= this.build().finally(() => {
      this.building = null;
    });
    return this.building;
  }

  private async build(): Promise<DashboardState> {
    const { store } = this.d;
    const [members, history, retired, accounts, tunnels, routes, zones, presence, logins, quick] = await Promise.all([
      store.listRelays(),
      // The history is the dashboard's own: when it cannot be read, show what is alive rather than nothing.
      store.listRelayHistory().catch((e: unknown) => {
        this.d.log.warn({ err: (e as Error).message }, 'dashboard: relay history unreadable');
        return [];
      }),
      store.retiredCounts().catch((e: unknown) => {
        this.d.log.warn({ err: (e as Error).message }, 'dashboard: retired relay counts unreadable');
        return {};
      }),
      store.listAccounts(),
      store.listTunnels(),
      store.listRoutes(),
      store.listZones(),
      store.listPresence(),
      store.listLoginSessions(),
      this.d.quick?.list() ?? [],
    ]);
    const now = Date.now();
    const staleAfterMs = this.d.staleAfterMs ?? 5_000;
    const stats = new Map<string, RelayStats>([[this.d.relayId, this.stats.local()]]);
    await Promise.all(
      members
        .filter((r) => r.id !== this.d.relayId && now - r.lastSeen < staleAfterMs * 2)
        .map(async (r) => {
          const s = await this.stats.peer(r);
          if (s) stats.set(r.id, s);
        }),
    );
    const state = buildFleetState(
      { now, self: { relayId: this.d.relayId, region: this.d.region }, members, history, retired, accounts, tunnels, routes, zones, presence, logins, quick, stats, staleAfterMs, acme: this.d.acme?.() ?? null },
      this.rates.update(stats.values(), now),
    );
    this.last = { at: now, state };
    return state;
  }
}

/** Only a `#login=CODE` fragment survives the login redirect. */
function safeNext(s: string): string {
  return /^#login=[A-Za-z0-9-]{1,16}$/.test(s) ? s : '';
}
