import type http from 'node:http';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { request } from 'undici';
import type { Logger } from 'pino';
import type { Store, Presence, RelayMember } from '../store/types.js';
import type { FleetKeys } from '../control/keys.js';
import type { TunnelConnections } from '../connectors/tunnel-connections.js';
import type { RelayMetrics } from '../metrics.js';
import { approveLogin } from '../control/control-api.js';
import { ApiError, decodeSegment } from '../control/api-error.js';
import { bearer, tooManyKeyFailures } from '../control/control-auth.js';
import type { OperatorKeyGuard } from '../control/operator-key-guard.js';
import { stripV4Mapped } from '../edge/request-proxy.js';
import { APP_CSS, APP_JS, dashboardHtml, loginHtml } from './dashboard-page.js';
import { readBody } from '../control/read-body.js';
import { PeerAuth, headersDigest, readSignedRequest, type SignedRequest } from '../fleet/peer-auth.js';

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
  metrics: RelayMetrics;
  connections: TunnelConnections;
  /** Set when the relay has certificates: stats are asked of https:// peers only, verified with this. */
  peerTls?: { dispatcher?: import('undici').Dispatcher };
  /** The fleet's relay-to-relay signatures (the same scheme as peer forwarding). */
  peerAuth: PeerAuth;
  /** How often snapshots are pushed to open dashboards. */
  tickMs?: number;
  /** A relay whose heartbeat is older than this is shown as stale. */
  staleAfterMs?: number;
}

/** What one relay knows only about itself: request counts and streams in flight per connection. */
export interface RelayStats {
  relayId: string;
  at: number;
  tunnels: Record<string, { requests: number; errors: number }>;
  connections: Record<string, { streams: number; state: string }>;
}

export interface DashboardState {
  at: number;
  self: { relayId: string; region: string };
  relays: Array<{
    id: string;
    region: string;
    health: 'healthy' | 'draining' | 'stale';
    lastSeenAgoMs: number;
    startedAt: number;
    publicUrl: string;
    controlUrl: string;
    connections: number;
    stats: boolean;
  }>;
  tunnels: Array<{
    id: string;
    name: string;
    account: string;
    hostnames: string[];
    requests: number;
    errors: number;
    rps: number;
    eps: number;
    connectors: Array<{
      connectorId: string;
      version: string;
      clientIp: string;
      connections: Array<{ connIndex: number; relayId: string; connectionId: string; connectedAt: number; streams: number | null; state: string }>;
    }>;
  }>;
  unrouted: { requests: number; rps: number };
  logins: Array<{ code: string; createdAt: number; expiresAt: number }>;
  totals: { rps: number; eps: number; connectors: number; connections: number };
}

const COOKIE = 'tunnel_dash';
const SESSION_MS = 12 * 3600 * 1000;
const STATS_PATH = '/dashboard/api/relay-stats';
/** The digest of "no forwarded headers": a stats call signs none. */
const NO_HEADERS = headersDigest([]);
const MAX_FORM = 8 * 1024;

/**
 * The operator dashboard on the control port: a login form (operator key →
 * HttpOnly SameSite=Strict session cookie), one HTML page, and a server-sent
 * event stream that pushes a fresh fleet snapshot every second to every open
 * page (built once per tick, whatever the number of viewers).
 *
 * Fleet-wide figures: the store says which relays, tunnels, routes,
 * connections and login codes exist; request counts and streams in flight
 * are only known to the relay that served or holds them, so each tick asks
 * every live peer for its own (a fleet-signed request to the same endpoint).
 */
export class Dashboard {
  private readonly sessionKey: Buffer | null;
  private readonly subscribers = new Set<{ res: http.ServerResponse; exp: number }>();
  private readonly loggedOut = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private last: { at: number; state: DashboardState } | null = null;
  private building: Promise<DashboardState> | null = null;
  /** Per relay and tunnel: the last request/error counts seen, for rates. */
  private prev = new Map<string, { at: number; requests: number; errors: number }>();
  private rates = new Map<string, { rps: number; eps: number }>();

  constructor(private readonly d: DashboardDeps) {
    this.sessionKey = d.operatorKey ? createHash('sha256').update('tunnel-dashboard-session/v1\n').update(d.operatorKey).digest() : null;
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
    if (p === '/dashboard/app.js' && m === 'GET') return this.asset(res, 'text/javascript; charset=utf-8', APP_JS);
    if (p === '/dashboard/app.css' && m === 'GET') return this.asset(res, 'text/css; charset=utf-8', APP_CSS);
    if (p === STATS_PATH && m === 'GET') {
      if (!(await this.statsAuthorized(req))) throw new ApiError(401, 'unauthorized', 'relay stats need a fleet signature or the operator key');
      return json(res, 200, this.localStats());
    }
    if (p === '/dashboard/login' && m === 'POST') return this.login(req, res);
    if (p === '/dashboard/logout' && m === 'POST') {
      const s = this.session(req);
      if (s) this.loggedOut.set(s.nonce, s.exp);
      res.writeHead(303, { location: '/dashboard/', 'set-cookie': this.cookie('', 0, req), 'cache-control': 'no-store' });
      res.end();
      return true;
    }

    const session = this.session(req);
    if (p === '/dashboard/' && m === 'GET') {
      if (!this.d.operatorKey) return html(res, 403, loginHtml({ error: 'This relay has no operator key configured: start it with --operator-key-file FILE (or TUNNEL_RELAY_OPERATOR_KEY) to use the dashboard.', disabled: true }));
      if (!session) return html(res, 200, loginHtml({}));
      return html(res, 200, dashboardHtml({ relayId: this.d.relayId, region: this.d.region }));
    }
    if (!p.startsWith('/dashboard/api/')) throw new ApiError(404, 'not_found', `no such page ${p}`);
    if (!session) throw new ApiError(401, 'login_required', 'log in to the dashboard with the operator key');

    if (p === '/dashboard/api/state' && m === 'GET') return json(res, 200, await this.snapshot(0));
    if (p === '/dashboard/api/events' && m === 'GET') return this.events(res, session.exp);
    const approve = /^\/dashboard\/api\/logins\/([^/]+)\/approve$/.exec(p);
    if (approve && m === 'POST') {
      this.sameOrigin(req);
      const body = await readForm(req, MAX_FORM);
      let account = 'default';
      if (body.length) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(body);
        } catch {
          throw new ApiError(400, 'bad_json', 'request body is not valid JSON');
        }
        const a = (parsed as { account?: unknown }).account;
        if (a !== undefined && a !== '') {
          if (typeof a !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(a)) throw new ApiError(400, 'bad_request', 'account: names are 1-63 letters, digits, dot, dash, underscore');
          account = a;
        }
      }
      const r = await approveLogin(this.d, decodeSegment(approve[1]!), account);
      this.d.log.info({ event: 'login-approved', code: r.approved, account: r.account, via: 'dashboard' }, 'login approved from the dashboard');
      this.last = null;
      void this.broadcast();
      return json(res, 200, r);
    }
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const s of this.subscribers) s.res.end();
    this.subscribers.clear();
  }

  // ---- login and sessions -----------------------------------------------------------

  private async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
    this.sameOrigin(req);
    const ip = stripV4Mapped(req.socket.remoteAddress ?? '');
    const form = new URLSearchParams(await readForm(req, MAX_FORM));
    const next = safeNext(form.get('next') ?? '');
    if (!this.d.operatorKey || !this.sessionKey || !this.d.operatorGuard) {
      return html(res, 403, loginHtml({ error: 'This relay has no operator key configured: start it with --operator-key-file FILE (or TUNNEL_RELAY_OPERATOR_KEY) to use the dashboard.', disabled: true }));
    }
    const key = (form.get('key') ?? '').trim();
    const check = await this.d.operatorGuard.check(ip, key);
    const now = Date.now();
    if (!check.ok && check.status === 429) {
      res.setHeader('retry-after', String(check.retryAfterS));
      return html(res, 429, loginHtml({ error: `Too many wrong keys from your address: wait ${check.retryAfterS} s and try again.` }));
    }
    if (!check.ok) {
      this.d.log.warn({ event: 'dashboard-login-refused', ip }, 'dashboard login refused: wrong operator key');
      return html(res, 401, loginHtml({ error: key ? 'Wrong operator key: access refused.' : 'Enter the operator key.' }));
    }
    const exp = now + SESSION_MS;
    const nonce = randomBytes(12).toString('base64url');
    const value = `${exp}.${nonce}.${this.mac(`${exp}.${nonce}`)}`;
    this.d.log.info({ event: 'dashboard-login', ip }, 'operator logged in to the dashboard');
    res.writeHead(303, { location: `/dashboard/${next}`, 'set-cookie': this.cookie(value, SESSION_MS / 1000, req), 'cache-control': 'no-store' });
    res.end();
    return true;
  }

  private mac(s: string): string {
    return createHmac('sha256', this.sessionKey!).update(s).digest('base64url');
  }

  private cookie(value: string, maxAge: number, req: http.IncomingMessage): string {
    const secure = (req.socket as { encrypted?: boolean }).encrypted || req.headers['x-forwarded-proto'] === 'https';
    return `${COOKIE}=${value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure ? '; Secure' : ''}`;
  }

  private session(req: http.IncomingMessage): { exp: number; nonce: string } | null {
    if (!this.sessionKey) return null;
    const raw = cookieValue(req.headers.cookie, COOKIE);
    if (!raw) return null;
    const [expS, nonce, mac] = raw.split('.');
    if (!expS || !nonce || !mac) return null;
    const want = Buffer.from(this.mac(`${expS}.${nonce}`));
    const got = Buffer.from(mac);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return null;
    const exp = Number(expS);
    if (!(exp > Date.now()) || this.loggedOut.has(nonce)) return null;
    return { exp, nonce };
  }

  /** State-changing requests must come from this origin (on top of SameSite=Strict). */
  private sameOrigin(req: http.IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let host: string;
    try {
      host = new URL(origin).host;
    } catch {
      host = '';
    }
    if (host !== req.headers.host) throw new ApiError(403, 'cross_origin', 'cross-origin request refused');
  }

  // ---- relay-to-relay stats ---------------------------------------------------------

  /**
   * A peer's call signed with the fleet's relay-to-relay scheme (method,
   * Host, path and query, a nonce claimed in the replay cache), or the
   * operator key.
   */
  private async statsAuthorized(req: http.IncomingMessage): Promise<boolean> {
    const op = bearer(req.headers.authorization);
    if (this.d.operatorGuard && op) {
      const check = await this.d.operatorGuard.check(stripV4Mapped(req.socket.remoteAddress ?? ''), op);
      if (!check.ok && check.status === 429) throw tooManyKeyFailures(check.retryAfterS);
      return check.ok;
    }
    const read = readSignedRequest(req);
    if (typeof read === 'string') return false;
    // A stats call carries no client, headers or body: only those exact values verify.
    const { fields, sig } = read;
    if (fields.clientIp !== '' || fields.scheme !== '' || fields.body.kind !== 'none') return false;
    const why = await this.d.peerAuth.verify({ ...fields, headers: NO_HEADERS }, sig);
    if (why) this.d.log.debug({ from: fields.from, why }, 'relay stats call refused');
    return why === null;
  }

  private statsHeaders(url: URL): Record<string, string> {
    const fields: SignedRequest = {
      from: this.d.relayId,
      time: Date.now(),
      nonce: PeerAuth.nonce(),
      requestId: '',
      method: 'GET',
      host: url.host,
      target: url.pathname + url.search,
      clientIp: '',
      scheme: '',
      headers: NO_HEADERS,
      body: { kind: 'none' },
    };
    const pairs = this.d.peerAuth.headerPairs(fields, this.d.peerAuth.sign(fields));
    const out: Record<string, string> = {};
    for (let i = 0; i < pairs.length; i += 2) out[pairs[i]!] = pairs[i + 1]!;
    return out;
  }

  localStats(): RelayStats {
    const tunnels: RelayStats['tunnels'] = {};
    for (const t of this.d.metrics.trafficByTunnel().values()) tunnels[t.tunnelId] = { requests: t.total, errors: t.errors };
    const connections: RelayStats['connections'] = {};
    for (const c of this.d.connections.list()) connections[c.id.connectionId] = { streams: c.inflight, state: c.state };
    return { relayId: this.d.relayId, at: Date.now(), tunnels, connections };
  }

  private async peerStats(r: RelayMember): Promise<RelayStats | null> {
    if (!r.controlUrl) return null;
    // A relay with certificates never sends its stats signature in clear.
    if (this.d.peerTls && !r.controlUrl.startsWith('https://')) return null;
    try {
      const url = new URL(r.controlUrl.replace(/\/+$/, '') + STATS_PATH);
      const res = await request(url, {
        headers: this.statsHeaders(url),
        ...(this.d.peerTls?.dispatcher ? { dispatcher: this.d.peerTls.dispatcher } : {}),
        headersTimeout: 800,
        bodyTimeout: 800,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return null;
      }
      return (await res.body.json()) as RelayStats;
    } catch {
      return null;
    }
  }

  // ---- snapshots and live updates ---------------------------------------------------

  private events(res: http.ServerResponse, exp: number): boolean {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    res.write('retry: 2000\n\n');
    const sub = { res, exp };
    this.subscribers.add(sub);
    res.once('close', () => {
      this.subscribers.delete(sub);
      if (this.subscribers.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = null;
      }
    });
    if (!this.timer) {
      this.timer = setInterval(() => void this.broadcast(), this.d.tickMs ?? 1_000);
      this.timer.unref();
    }
    void this.snapshot(250).then(
      (s) => {
        if (!res.writableEnded && !res.destroyed) res.write(`event: state\ndata: ${JSON.stringify(s)}\n\n`);
      },
      () => {},
    );
    return true;
  }

  private async broadcast(): Promise<void> {
    if (this.subscribers.size === 0) return;
    let state: DashboardState;
    try {
      state = await this.snapshot(0);
    } catch (e) {
      this.d.log.warn({ err: (e as Error).message }, 'dashboard snapshot failed');
      return;
    }
    const frame = `event: state\ndata: ${JSON.stringify(state)}\n\n`;
    const now = Date.now();
    for (const s of this.subscribers) {
      if (s.res.writableEnded || s.res.destroyed) {
        this.subscribers.delete(s);
        continue;
      }
      if (s.exp <= now) {
        this.subscribers.delete(s);
        s.res.end('event: logout\ndata: {}\n\n');
        continue;
      }
      s.res.write(frame);
    }
  }

  /** A fresh snapshot (or the last one when younger than `maxAgeMs`); concurrent callers share one build. */
  async snapshot(maxAgeMs: number): Promise<DashboardState> {
    if (this.last && Date.now() - this.last.at <= maxAgeMs) return this.last.state;
    if (!this.building) {
      this.building = this.build().finally(() => {
        this.building = null;
      });
    }
    return this.building;
  }

  private async build(): Promise<DashboardState> {
    const { store } = this.d;
    const [relays, accounts, tunnels, routes, presence, logins] = await Promise.all([
      store.listRelays(),
      store.listAccounts(),
      store.listTunnels(),
      store.listRoutes(),
      store.listPresence(),
      store.listLoginSessions(),
    ]);
    const now = Date.now();
    const staleAfter = this.d.staleAfterMs ?? 5_000;
    const stats = new Map<string, RelayStats>();
    stats.set(this.d.relayId, this.localStats());
    await Promise.all(
      relays
        .filter((r) => r.id !== this.d.relayId && now - r.lastSeen < staleAfter * 2)
        .map(async (r) => {
          const s = await this.peerStats(r);
          if (s) stats.set(r.id, s);
        }),
    );

    // Rates: per relay and tunnel, from the last counts that relay reported.
    const nextPrev = new Map<string, { at: number; requests: number; errors: number }>();
    const rates = new Map<string, { rps: number; eps: number }>();
    const totals = new Map<string, { requests: number; errors: number }>();
    for (const s of stats.values()) {
      for (const [tunnelId, c] of Object.entries(s.tunnels)) {
        const key = `${s.relayId}\n${tunnelId}`;
        const p = this.prev.get(key);
        nextPrev.set(key, { at: s.at, requests: c.requests, errors: c.errors });
        const tot = totals.get(tunnelId) ?? { requests: 0, errors: 0 };
        tot.requests += c.requests;
        tot.errors += c.errors;
        totals.set(tunnelId, tot);
        if (!p || s.at <= p.at) continue;
        const dt = (s.at - p.at) / 1000;
        const dr = c.requests >= p.requests ? c.requests - p.requests : c.requests; // a restarted relay counts from 0
        const de = c.errors >= p.errors ? c.errors - p.errors : c.errors;
        const r = rates.get(tunnelId) ?? { rps: 0, eps: 0 };
        r.rps += dr / dt;
        r.eps += de / dt;
        rates.set(tunnelId, r);
      }
    }
    // A relay that missed this tick keeps its previous counts for the next one.
    for (const [k, v] of this.prev) if (!nextPrev.has(k) && now - v.at < 60_000) nextPrev.set(k, v);
    this.prev = nextPrev;
    this.rates = rates;

    const streamsOf = (p: Presence): { streams: number | null; state: string } => {
      const s = stats.get(p.relayId)?.connections[p.connectionId];
      return s ? { streams: s.streams, state: s.state } : { streams: null, state: 'active' };
    };
    const accountName = new Map(accounts.map((a) => [a.id, a.name]));
    const hostnames = new Map<string, string[]>();
    for (const r of routes) {
      const list = hostnames.get(r.tunnelId) ?? [];
      list.push(r.hostname);
      hostnames.set(r.tunnelId, list);
    }
    const byTunnel = new Map<string, Presence[]>();
    for (const p of presence) {
      const list = byTunnel.get(p.tunnelId) ?? [];
      list.push(p);
      byTunnel.set(p.tunnelId, list);
    }
    const connsByRelay = new Map<string, number>();
    for (const p of presence) connsByRelay.set(p.relayId, (connsByRelay.get(p.relayId) ?? 0) + 1);

    let trps = 0;
    let teps = 0;
    for (const r of this.rates.values()) {
      trps += r.rps;
      teps += r.eps;
    }
    const state: DashboardState = {
      at: now,
      self: { relayId: this.d.relayId, region: this.d.region },
      relays: relays
        .map((r) => ({
          id: r.id,
          region: r.region,
          health: r.draining ? ('draining' as const) : now - r.lastSeen > staleAfter ? ('stale' as const) : ('healthy' as const),
          lastSeenAgoMs: Math.max(0, now - r.lastSeen),
          startedAt: r.startedAt,
          publicUrl: r.publicUrl,
          controlUrl: r.controlUrl,
          connections: connsByRelay.get(r.id) ?? 0,
          stats: stats.has(r.id),
        }))
        .sort((a, b) => a.id.localeCompare(b.id)),
      tunnels: tunnels
        .map((t) => {
          const conns = byTunnel.get(t.id) ?? [];
          const connectors = new Map<string, DashboardState['tunnels'][number]['connectors'][number]>();
          for (const p of conns) {
            let c = connectors.get(p.connectorId);
            if (!c) connectors.set(p.connectorId, (c = { connectorId: p.connectorId, version: p.version, clientIp: p.clientIp, connections: [] }));
            c.connections.push({ connIndex: p.connIndex, relayId: p.relayId, connectionId: p.connectionId, connectedAt: p.connectedAt, ...streamsOf(p) });
          }
          for (const c of connectors.values()) c.connections.sort((a, b) => a.connIndex - b.connIndex);
          const tot = totals.get(t.id) ?? { requests: 0, errors: 0 };
          const rate = this.rates.get(t.id) ?? { rps: 0, eps: 0 };
          return {
            id: t.id,
            name: t.name,
            account: accountName.get(t.accountId) ?? t.accountId,
            hostnames: (hostnames.get(t.id) ?? []).sort(),
            requests: tot.requests,
            errors: tot.errors,
            rps: round(rate.rps),
            eps: round(rate.eps),
            connectors: [...connectors.values()],
          };
        })
        .sort((a, b) => a.account.localeCompare(b.account) || a.name.localeCompare(b.name)),
      unrouted: { requests: totals.get('')?.requests ?? 0, rps: round(this.rates.get('')?.rps ?? 0) },
      logins: logins.map((l) => ({ code: l.code, createdAt: l.createdAt, expiresAt: l.expiresAt })).sort((a, b) => a.createdAt - b.createdAt),
      totals: { rps: round(trps), eps: round(teps), connectors: new Set(presence.map((p) => p.connectorId)).size, connections: presence.length },
    };
    this.last = { at: now, state };
    // Forget logouts whose cookies have expired anyway.
    for (const [nonce, exp] of this.loggedOut) if (exp < now) this.loggedOut.delete(nonce);
    return state;
  }

  private asset(res: http.ServerResponse, type: string, body: string): boolean {
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
    res.end(body);
    return true;
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

function html(res: http.ServerResponse, status: number, body: string): boolean {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'same-origin',
    'x-frame-options': 'DENY',
  });
  res.end(body);
  return true;
}

function json(res: http.ServerResponse, status: number, body: unknown): boolean {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
  return true;
}

async function readForm(req: http.IncomingMessage, limit: number): Promise<string> {
  const body = await readBody(req, limit);
  if (body === null) throw new ApiError(413, 'body_too_large', 'request body too large');
  return body.toString('utf8');
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** Only a `#login=CODE` fragment survives the login redirect. */
function safeNext(s: string): string {
  return /^#login=[A-Za-z0-9-]{1,16}$/.test(s) ? s : '';
}
