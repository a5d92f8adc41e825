import { readFileSync } from 'node:fs';

/**
 * Every ceiling the relay enforces against clients and connectors. Each is
 * a `tunnel-relay serve` flag and a `limits:` key in relay.yml, is counted in
 * `tunnel_relay_limit_hits_total{limit}` when hit, and 0 turns it off.
 */
export interface RelayLimits {
  /** Open public (client) connections on this relay; past it new ones get a 503. */
  publicConnections: number;
  /** Open public connections from one client IP; past it a 429. */
  publicConnectionsPerIp: number;
  /** Live connector sessions (connections) on this relay per tunnel token; past it a 429 before the upgrade. */
  sessionsPerToken: number;
  /** Live connector sessions on this relay per connector id (within a tunnel). */
  sessionsPerConnector: number;
  /** Longest wait between two request-body bytes (not for upgrades); past it 408, or an abort once answering. */
  bodyIdleTimeoutMs: number;
  /** Pending `tunnel login` sessions created through this relay. */
  pendingLogins: number;
  /** Pending `tunnel login` sessions per client IP. */
  pendingLoginsPerIp: number;
  /** Wrong operator keys per client IP within `operatorKeyWindowMs`, on any path that takes the key. */
  operatorKeyFailures: number;
  operatorKeyWindowMs: number;
  /** Per connector session (yamux): see packages/protocol SessionOptions. */
  sessionMaxQueuedBytes: number;
  sessionStallTimeoutMs: number;
  sessionPingRate: number;
  sessionRefusalRate: number;
  /** Public listener: time to receive a whole request head, and idle time of a kept-alive connection. */
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** Time a connector has, once upgraded, to send its register message; past it the session is closed. */
  registerTimeoutMs: number;
  /** Connector registrations in progress on this relay (upgrade request to `registered`); past it a 503 with Retry-After. */
  pendingRegistrations: number;
  /** Access logins talking to an identity provider at once on this relay; past it a 503. */
  accessPendingLogins: number;
  /** HTTP/2 on the public HTTPS listener: streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  h2MaxConcurrentStreams: number;
  /** HTTP/2: bytes of one request's header list (names + values + 32 per field, RFC 9113 §6.5.2); past it a 431. */
  h2MaxHeaderListSize: number;
  /** HTTP/2: streams the client resets per connection per second before the connection gets GOAWAY (CVE-2023-44487). */
  h2ResetRate: number;
  /** Relays the fleet history remembers (the dashboard's down relays) until an operator forgets them. */
  relayHistory: number;
  /** Quick tunnels (`--quick-zone`, quick/): live ones in the fleet, in total. */
  quickTunnels: number;
  /** Quick tunnels one client IP may create per `quickPerIpWindowMs` (fleet-wide on Redis). */
  quickTunnelsPerIp: number;
  quickPerIpWindowMs: number;
  /** Live quick tunnels created from one client IP (fleet-wide on Redis); past it a 429 until one ends. */
  quickLivePerIp: number;
  /** Requests in flight to one quick tunnel through this relay; past it a 429. */
  quickStreams: number;
  /** Requests in flight to all quick tunnels together through this relay; past it a 503 with Retry-After. */
  quickStreamsTotal: number;
  /** Requests per second to one quick tunnel (fleet-wide on Redis); past it a 429 with Retry-After. */
  quickRequestRate: number;
  /** Request body bytes to a quick tunnel; past it a 413 (or an abort once answering). */
  quickBodyBytes: number;
  /** A quick tunnel with no connector connection this long is deleted and its hostname freed. */
  quickIdleMs: number;
}

/** Names used as the `limit` label of tunnel_relay_limit_hits_total. */
export const LIMIT_NAMES = [
  'public_connections',
  'public_connections_per_ip',
  'sessions_per_token',
  'sessions_per_connector',
  'connector_streams',
  'body_idle_timeout',
  'pending_logins',
  'pending_logins_per_ip',
  'operator_key_failures',
  'session_outbound_queue',
  'session_outbound_stall',
  'session_ping_rate',
  'session_refusal_rate',
  'register_timeout',
  'pending_registrations',
  'access_pending_logins',
  'h2_header_list_size',
  'h2_reset_rate',
  'h2_concurrent_streams',
  'relay_history',
  'quick_tunnels',
  'quick_tunnels_per_ip',
  'quick_live_per_ip',
  'quick_streams',
  'quick_streams_total',
  'quick_request_rate',
  'quick_body',
  'quick_idle_expiry',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

/** Where a ceiling reports a hit (RelayMetrics in production). */
export interface LimitHits {
  hit(limit: LimitName): void;
}
export const NO_LIMIT_HITS: LimitHits = { hit() {} };

/**
 * The defaults: far above what a healthy tenant uses (the stock connector
 * opens 4 connections; a browser 6 per host), far below what exhausts the
 * process. Public connections in total default to 3/4 of the descriptor
 * limit, so the relay answers 503 while it still has descriptors left for
 * its connectors, its store and its control API.
 */
export function defaultLimits(): RelayLimits {
  return {
    publicConnections: Math.max(256, Math.floor(descriptorLimit() * 0.75)),
    publicConnectionsPerIp: 4096,
    sessionsPerToken: 16,
    sessionsPerConnector: 8,
    bodyIdleTimeoutMs: 60_000,
    pendingLogins: 1024,
    pendingLoginsPerIp: 16,
    operatorKeyFailures: 10,
    operatorKeyWindowMs: 60_000,
    sessionMaxQueuedBytes: 32 * 1024 * 1024,
    sessionStallTimeoutMs: 30_000,
    sessionPingRate: 64,
    sessionRefusalRate: 128,
    headersTimeoutMs: 30_000,
    keepAliveTimeoutMs: 65_000,
    registerTimeoutMs: 10_000,
    // A 2-core relay registers a few hundred connections a second: 64 in progress keeps each well inside the connector's 10 s.
    pendingRegistrations: 64,
    accessPendingLogins: 256,
    h2MaxConcurrentStreams: 100,
    h2MaxHeaderListSize: 64 * 1024,
    h2ResetRate: 100,
    relayHistory: 256,
    quickTunnels: 1000,
    quickTunnelsPerIp: 10,
    quickPerIpWindowMs: 3_600_000,
    quickLivePerIp: 5,
    quickStreams: 100,
    // Anonymous traffic may take a share of the relay, not all of it: named tunnels keep the rest.
    quickStreamsTotal: 2000,
    quickRequestRate: 100,
    // Cloudflare's free plan takes request bodies up to 100 MB.
    quickBodyBytes: 100 * 1024 * 1024,
    quickIdleMs: 600_000,
  };
}

/** The soft RLIMIT_NOFILE (Linux), else a conservative 20,000. */
function descriptorLimit(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    /* not Linux */
  }
  return 20_000;
}

/**
 * How each limit is set: `--FLAG` on `tunnel-relay serve` and `limits.KEY`
 * in relay.yml (the same name); durations take units (`30s`, `500ms`) in both.
 */
export const LIMIT_SETTINGS: ReadonlyArray<{ key: keyof RelayLimits; name: string; kind: 'count' | 'ms' | 'bytes' | 'rate'; help: string }> = [
  { key: 'publicConnections', name: 'max-public-connections', kind: 'count', help: 'open public connections before new ones get a 503 (default: 3/4 of the descriptor limit)' },
  { key: 'publicConnectionsPerIp', name: 'max-public-connections-per-ip', kind: 'count', help: 'open public connections per client IP before a 429' },
  { key: 'sessionsPerToken', name: 'max-sessions-per-token', kind: 'count', help: 'connector connections per tunnel token on this relay before a 429' },
  { key: 'sessionsPerConnector', name: 'max-sessions-per-connector', kind: 'count', help: 'connector connections per connector id on this relay before a 429' },
  { key: 'bodyIdleTimeoutMs', name: 'body-idle-timeout', kind: 'ms', help: 'longest pause between request-body bytes before a 408 or an abort' },
  { key: 'pendingLogins', name: 'max-pending-logins', kind: 'count', help: 'pending `tunnel login` sessions created through this relay' },
  { key: 'pendingLoginsPerIp', name: 'max-pending-logins-per-ip', kind: 'count', help: 'pending `tunnel login` sessions per client IP' },
  { key: 'operatorKeyFailures', name: 'operator-key-failures', kind: 'count', help: 'wrong operator keys per client IP per window before every try is a 429' },
  { key: 'operatorKeyWindowMs', name: 'operator-key-window', kind: 'ms', help: 'window of --operator-key-failures' },
  { key: 'sessionMaxQueuedBytes', name: 'session-max-queued', kind: 'bytes', help: 'bytes queued to a connector that does not read before the relay stops reading it' },
  { key: 'sessionStallTimeoutMs', name: 'session-stall-timeout', kind: 'ms', help: 'how long a connector session may stay over --session-max-queued before it is closed' },
  { key: 'sessionPingRate', name: 'session-ping-rate', kind: 'rate', help: 'pings answered per second per connector session' },
  { key: 'sessionRefusalRate', name: 'session-refusal-rate', kind: 'rate', help: 'refused stream opens per second per connector session before it is closed' },
  { key: 'headersTimeoutMs', name: 'headers-timeout', kind: 'ms', help: 'time a public client has to send a whole request head' },
  { key: 'keepAliveTimeoutMs', name: 'keep-alive-timeout', kind: 'ms', help: 'idle time before a kept-alive public connection is closed' },
  { key: 'registerTimeoutMs', name: 'register-timeout', kind: 'ms', help: 'time an upgraded connector has to send its register message before its session is closed' },
  { key: 'pendingRegistrations', name: 'max-pending-registrations', kind: 'count', help: 'connector registrations in progress before a connector upgrade gets a 503 with Retry-After' },
  { key: 'accessPendingLogins', name: 'max-access-pending-logins', kind: 'count', help: 'Access logins waiting on an identity provider at once before a 503' },
  { key: 'h2MaxConcurrentStreams', name: 'h2-max-concurrent-streams', kind: 'count', help: 'HTTP/2 streams open at once on one public connection (more are refused)' },
  { key: 'h2MaxHeaderListSize', name: 'h2-max-header-list-size', kind: 'bytes', help: 'bytes of one HTTP/2 request header list before a 431' },
  { key: 'h2ResetRate', name: 'h2-reset-rate', kind: 'rate', help: 'HTTP/2 streams a client may reset per connection per second before GOAWAY (rapid reset)' },
  { key: 'relayHistory', name: 'max-relay-history', kind: 'count', help: 'relays the fleet history remembers (down ones stay on the dashboard until forgotten); a new relay past it is not remembered' },
  { key: 'quickTunnels', name: 'max-quick-tunnels', kind: 'count', help: 'live quick tunnels in the fleet before POST /v1/quick gets a 429' },
  { key: 'quickTunnelsPerIp', name: 'max-quick-tunnels-per-ip', kind: 'count', help: 'quick tunnels one client IP may create per --quick-per-ip-window' },
  { key: 'quickPerIpWindowMs', name: 'quick-per-ip-window', kind: 'ms', help: 'window of --max-quick-tunnels-per-ip' },
  { key: 'quickLivePerIp', name: 'max-live-quick-tunnels-per-ip', kind: 'count', help: 'live quick tunnels created from one client IP (fleet-wide on Redis) before POST /v1/quick gets a 429' },
  { key: 'quickStreams', name: 'max-quick-streams', kind: 'count', help: 'requests in flight to one quick tunnel through this relay before a 429' },
  { key: 'quickStreamsTotal', name: 'max-quick-streams-total', kind: 'count', help: 'requests in flight to all quick tunnels together through this relay before a 503' },
  { key: 'quickRequestRate', name: 'quick-request-rate', kind: 'rate', help: 'requests per second to one quick tunnel before a 429 with Retry-After' },
  { key: 'quickBodyBytes', name: 'max-quick-body', kind: 'bytes', help: 'request body bytes to a quick tunnel before a 413' },
  { key: 'quickIdleMs', name: 'quick-idle-expiry', kind: 'ms', help: 'a quick tunnel with no connector connection this long is deleted and its hostname freed' },
];
