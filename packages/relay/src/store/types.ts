// The relay fleet's state behind one interface. Two implementations share a
// contract test suite: `file-store.ts` (embedded, `file:DIR`) and
// `redis-store.ts` (`redis://…`, any number of relays).
//
// Times are milliseconds since the Unix epoch. Ids are random UUIDs.

import { z } from 'zod';
import type { AccessRecord } from './access-records.js';
import type { RelayHistoryStore } from './relay-history.js';

export interface Account {
  readonly id: string;
  readonly name: string;
  readonly createdAt: number;
}

export interface Tunnel {
  readonly id: string;
  readonly accountId: string;
  readonly name: string;
  readonly createdAt: number;
  /** The last operator disconnect: every relay drops this tunnel's connections made before it (the connectors reconnect). */
  readonly disconnectedAt?: number;
}

/** A hostname routed to one tunnel. `hostname` is lower-case: exact
 *  (`app.example.com`) or a wildcard (`*.example.com`). */
export interface Route {
  readonly hostname: string;
  readonly tunnelId: string;
  readonly accountId: string;
  readonly createdAt: number;
}

export interface NewRoute {
  readonly hostname: string;
  readonly tunnelId: string;
  readonly accountId: string;
}

/** How an account came to hold a zone (for operators reading `zone list`). */
export type ZoneSource = 'operator' | 'dns' | 'adopt';

/**
 * A DNS name an account holds (DESIGN §12): it may route `zone` itself and
 * any name under it (exact or wildcard). `zone` is lower-case, never a
 * wildcard, never a public suffix; zones of different accounts never nest.
 */
export interface Zone {
  readonly zone: string;
  readonly accountId: string;
  readonly source: ZoneSource;
  readonly createdAt: number;
}

export interface NewZone {
  readonly zone: string;
  readonly accountId: string;
  readonly source: ZoneSource;
}

/**
 * What is left of a deleted tunnel: lets a relay tell a tunnel that was
 * deleted (the connector should stop) from one the store merely does not
 * know (an empty or wiped store: the connector should keep retrying).
 */
export interface Tombstone {
  readonly tunnelId: string;
  readonly accountId: string;
  readonly name: string;
  readonly deletedAt: number;
  /**
   * When the store may drop it: the tunnel's tokens have all expired by
   * then, so the tombstone has nothing left to tell apart (a connector with
   * one is refused as expired). Absent on tombstones written before they
   * expired: those are kept.
   */
  readonly expiresAt?: number;
}

export interface Revocation {
  readonly tokenId: string;
  /** When the revoked token expires anyway; the record may be dropped after. */
  readonly expiresAt: number;
  /** From when the token is refused: later than the record's creation for a rotation's grace period. */
  readonly revokedAt: number;
}

interface LoginSessionBase {
  /** The short code shown to the user. */
  readonly code: string;
  /** The CLI's nacl box public key (base64); the credential is sealed to it. */
  readonly boxPublicKey: string;
  readonly createdAt: number;
  readonly expiresAt: number;
}

export interface PendingLoginSession extends LoginSessionBase {
  readonly state: 'pending';
}

export interface ApprovedLoginSession extends LoginSessionBase {
  readonly state: 'approved';
  readonly accountId: string;
  /** The account credential sealed to `boxPublicKey` (base64). */
  readonly sealedCredential: string;
}

/** The operator refused it: the waiting `tunnel login` is told so (not "unknown or expired"). */
export interface DeniedLoginSession extends LoginSessionBase {
  readonly state: 'denied';
  readonly deniedAt: number;
}

/** Approved-without-credential is not representable. */
export type LoginSession = PendingLoginSession | ApprovedLoginSession | DeniedLoginSession;

export interface NewLoginSession {
  readonly code: string;
  readonly boxPublicKey: string;
  readonly expiresAt: number;
  /** Defaults to now. */
  readonly createdAt?: number;
}

export interface RelayMember {
  readonly id: string;
  readonly region: string;
  readonly controlUrl: string;
  readonly connectUrl: string;
  readonly publicUrl: string;
  readonly peerUrl: string;
  readonly startedAt: number;
  readonly lastSeen: number;
  readonly draining: boolean;
}

/** One connector connection held by one relay. */
export interface Presence {
  readonly connectionId: string;
  readonly relayId: string;
  readonly tunnelId: string;
  readonly connectorId: string;
  readonly connIndex: number;
  readonly version: string;
  readonly clientIp: string;
  readonly connectedAt: number;
  /** The connector host's name as it reported it (absent from older connectors). */
  readonly host?: string;
}

export interface RouteFilter {
  readonly accountId?: string;
  readonly tunnelId?: string;
}

export interface PresenceFilter {
  readonly tunnelId?: string;
  readonly relayId?: string;
}

/**
 * Change notifications. They are hints to re-read (the record is not
 * carried); a subscriber may see an event more than once. Events caused by
 * any process sharing the store reach every subscriber within 1 s.
 *
 * - `route`: the route for `hostname` was added or deleted.
 * - `tunnel`: a tunnel was created or disconnected. `tunnel-deleted`: a tunnel (and its routes)
 *   was deleted (a tombstone records it). `tunnel-vanished`: a tunnel is gone
 *   from the store without a tombstone (the store was wiped or replaced).
 * - `zone`: the zone was granted or removed.
 * - `account`: an account was created.
 * - `revoked`: a token id was revoked.
 * - `login`: a login session was created, approved, denied or deleted.
 * - `relay`: a relay joined, changed its draining flag, or was removed
 *   (expiry by TTL is not announced: `listRelays` filters by time).
 * - `presence`: a relay's set of connections changed (expiry is not announced).
 * - `access`: the Access record under `key` (access-records.ts) was put or deleted.
 */
export type StoreEvent =
  | { readonly type: 'account'; readonly accountId: string }
  | { readonly type: 'tunnel'; readonly tunnelId: string }
  | { readonly type: 'tunnel-deleted'; readonly tunnelId: string; readonly accountId: string }
  | { readonly type: 'tunnel-vanished'; readonly tunnelId: string; readonly accountId: string }
  | { readonly type: 'zone'; readonly zone: string }
  | { readonly type: 'route'; readonly hostname: string }
  | { readonly type: 'revoked'; readonly tokenId: string }
  | { readonly type: 'login'; readonly code: string }
  | { readonly type: 'relay'; readonly relayId: string }
  | { readonly type: 'presence'; readonly relayId: string }
  | { readonly type: 'access'; readonly key: string };

export type StoreEventListener = (event: StoreEvent) => void;

export type StoreErrorCode = 'CONFLICT' | 'NOT_FOUND' | 'CORRUPT' | 'UNAVAILABLE';

export class StoreError extends Error {
  override readonly name = 'StoreError';
  readonly code: StoreErrorCode;
  /** For CORRUPT: the file (file store) or key (redis store) at fault. */
  readonly file: string | undefined;

  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown; file?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.file = options?.file;
  }
}

export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}

/** Relay history (relay-history.ts): every relay that joined, down ones included, with its counts. */
export interface Store extends RelayHistoryStore {
  /** `file` or `redis`, for logs and metrics. */
  readonly kind: 'file' | 'redis';

  // accounts
  /** CONFLICT if the name is taken. */
  createAccount(name: string): Promise<Account>;
  getAccount(id: string): Promise<Account | undefined>;
  getAccountByName(name: string): Promise<Account | undefined>;
  listAccounts(): Promise<Account[]>;

  // tunnels
  /** NOT_FOUND if the account does not exist; CONFLICT if the account already has a tunnel of that name. */
  createTunnel(accountId: string, name: string): Promise<Tunnel>;
  /** Served from memory (per-request read). */
  getTunnel(id: string): Promise<Tunnel | undefined>;
  getTunnelByName(accountId: string, name: string): Promise<Tunnel | undefined>;
  listTunnels(accountId?: string): Promise<Tunnel[]>;
  /**
   * Deletes the tunnel and its routes and leaves a tombstone that the store
   * drops `keepTombstoneMs` later: as long as the longest-lived token of the
   * tunnel can still be presented (tombstone-lifetime.ts). NOT_FOUND if
   * there is no such tunnel.
   */
  deleteTunnel(id: string, keepTombstoneMs: number): Promise<void>;
  /**
   * Records an operator disconnect (disconnectedAt = now) and announces the
   * tunnel (`tunnel` event): each relay drops the tunnel's connections made
   * before it. The tunnel, its routes and credentials stay. NOT_FOUND if there is no such tunnel.
   */
  disconnectTunnel(id: string): Promise<Tunnel>;
  /** The tombstone of a deleted tunnel (read from the store, not a cache); undefined once it expired. */
  getTombstone(tunnelId: string): Promise<Tombstone | undefined>;
  /** Unexpired tombstones of an account's tunnels (for /metrics: what deleted tunnels still cost the store). */
  countTombstones(accountId: string): Promise<number>;
  /**
   * A ceiling on live tunnels per `group` (quick tunnels per client IP):
   * records `tunnelId` under `group` and answers true when fewer than `max`
   * tunnels recorded there still exist; false (nothing recorded) when the
   * group is full. Members whose tunnel is gone are dropped as it counts, so
   * deleting a tunnel frees its slot with no further call. Atomic fleet-wide
   * on Redis; the file store counts in this process. The group's record
   * lives `ttlMs` after its last claim.
   */
  claimTunnelSlot(group: string, tunnelId: string, max: number, ttlMs: number): Promise<boolean>;

  // zones
  /**
   * Grants a zone. Idempotent for the same account (returns the existing
   * record). CONFLICT if another account holds exactly this zone. Nesting
   * with other accounts' zones is checked by the caller (zone-rules.ts).
   */
  addZone(zone: NewZone): Promise<Zone>;
  /** Served from memory. */
  getZone(zone: string): Promise<Zone | undefined>;
  listZones(filter?: { readonly accountId?: string }): Promise<Zone[]>;
  /** NOT_FOUND if nobody holds it. */
  deleteZone(zone: string): Promise<void>;

  // routes
  /**
   * Routes a hostname to a tunnel. Idempotent for the same tunnel (returns the
   * existing route). CONFLICT if the hostname is routed to another tunnel (the
   * owner is named only when it is the same account). NOT_FOUND if the tunnel
   * does not exist or belongs to another account.
   */
  addRoute(route: NewRoute): Promise<Route>;
  /** Exact lookup (a wildcard route is looked up as `*.domain`), served from memory. */
  getRoute(hostname: string): Promise<Route | undefined>;
  listRoutes(filter?: RouteFilter): Promise<Route[]>;
  /** NOT_FOUND if the hostname has no route. */
  deleteRoute(hostname: string): Promise<void>;

  // revocations
  /**
   * Idempotent. The record is kept at least until `expiresAtMs`. The token
   * is refused from `effectiveAtMs` (default now: a rotation passes the end
   * of its grace period); of two revocations of one token the earlier
   * effective time and the later expiry win.
   */
  revoke(tokenId: string, expiresAtMs: number, effectiveAtMs?: number): Promise<void>;
  /**
   * Revokes now, atomically, only if the token has no revocation yet: true
   * for the one caller that did (single-use enrollment tokens).
   */
  revokeOnce(tokenId: string, expiresAtMs: number): Promise<boolean>;
  /** Whether the token is refused now. Served from memory (per-request read). */
  isRevoked(tokenId: string): Promise<boolean>;
  listRevocations(): Promise<Revocation[]>;

  // login sessions
  /** CONFLICT if an unexpired session has the same code. */
  createLoginSession(session: NewLoginSession): Promise<PendingLoginSession>;
  /** Undefined for unknown and expired codes. */
  getLoginSession(code: string): Promise<LoginSession | undefined>;
  /** NOT_FOUND for unknown or expired codes, CONFLICT if already approved. */
  approveLoginSession(code: string, accountId: string, sealedCredential: string): Promise<ApprovedLoginSession>;
  /** NOT_FOUND for unknown or expired codes, CONFLICT if already approved; idempotent once denied. */
  denyLoginSession(code: string): Promise<DeniedLoginSession>;
  /** Idempotent. */
  deleteLoginSession(code: string): Promise<void>;
  /** Pending, unexpired sessions. */
  listLoginSessions(): Promise<PendingLoginSession[]>;

  // relay membership
  /** Records (or refreshes) a relay; it is listed until `ttlMs` after the last heartbeat. */
  heartbeatRelay(member: RelayMember, ttlMs: number): Promise<void>;
  /** Removes the relay and its presence. Idempotent. */
  removeRelay(id: string): Promise<void>;
  /** Relays whose last heartbeat has not expired. */
  listRelays(): Promise<RelayMember[]>;

  // connection presence
  /** Replaces the relay's whole set of connections and refreshes its TTL. */
  putPresence(relayId: string, presences: readonly Presence[], ttlMs: number): Promise<void>;
  /**
   * Extends the TTL of the relay's set as last written, without rewriting it (a heartbeat with
   * nothing changed is O(1), not O(connections)). False when there is no unexpired set to extend
   * (expired, removed, store wiped): the caller then writes it with putPresence.
   */
  refreshPresence(relayId: string, ttlMs: number): Promise<boolean>;
  /** Unexpired presence, optionally filtered. */
  listPresence(filter?: PresenceFilter): Promise<Presence[]>;

  // replay protection
  /**
   * True the first time `key` is claimed within `ttlMs`, false after. Redis:
   * `SET NX PX`, shared by the fleet; file store (one relay): a bounded map
   * in this process. Rejects when it cannot tell (callers refuse then).
   */
  claimNonce(key: string, ttlMs: number): Promise<boolean>;

  // access (policies, service tokens, identity providers: access-records.ts)
  /** Creates or replaces the record under its key. */
  putAccessRecord(record: AccessRecord): Promise<void>;
  /** Served from memory (per-request read). */
  getAccessRecord(key: string): Promise<AccessRecord | undefined>;
  listAccessRecords(): Promise<AccessRecord[]>;
  /** False when there was no such record. */
  deleteAccessRecord(key: string): Promise<boolean>;

  // events
  /** Returns the unsubscribe function. */
  subscribe(listener: StoreEventListener): () => void;

  close(): Promise<void>;
}

/** Logger shape the stores use (pino's Logger satisfies it). */
export interface StoreLogger {
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export const silentLogger: StoreLogger = {
  warn() {},
  info() {},
  debug() {},
};

// ---------------------------------------------------------------------------
// Record schemas: both implementations validate what they read back (a record
// that does not parse is CORRUPT, never silently dropped). Long-lived records
// take fields they do not know and drop them (z.object, not strictObject): in
// a rolling upgrade a newer relay writes fields an older one has never seen
// (as disconnectedAt and expiresAt once were), and calling those records
// corrupt would make a deleted tunnel's tombstone or a live tunnel vanish on
// the older relays. Known fields keep their types. Login decisions and Access
// records stay strict: a login is short-lived, and an Access rule with a
// criterion this relay cannot read must fail closed, not be widened.

const ms = z.number().int().nonnegative();
const str = z.string().min(1);

export const accountSchema = z.object({ id: str, name: str, createdAt: ms });
export const tunnelSchema = z.object({ id: str, accountId: str, name: str, createdAt: ms, disconnectedAt: ms.optional() });
export const routeSchema = z.object({ hostname: str, tunnelId: str, accountId: str, createdAt: ms });
export const zoneSchema = z.object({ zone: str, accountId: str, source: z.enum(['operator', 'dns', 'adopt']), createdAt: ms });
export const tombstoneSchema = z.object({ tunnelId: str, accountId: str, name: str, deletedAt: ms, expiresAt: ms.optional() });
export const revocationSchema = z.object({ tokenId: str, expiresAt: ms, revokedAt: ms });
const loginBase = { code: str, boxPublicKey: str, createdAt: ms, expiresAt: ms };
export const pendingLoginSchema = z.strictObject({ ...loginBase, state: z.literal('pending') });
export const loginSessionSchema = z.discriminatedUnion('state', [
  pendingLoginSchema,
  z.strictObject({ ...loginBase, state: z.literal('approved'), accountId: str, sealedCredential: str }),
  z.strictObject({ ...loginBase, state: z.literal('denied'), deniedAt: ms }),
]);
export const relayMemberSchema = z.object({
  id: str,
  region: z.string(),
  controlUrl: z.string(),
  connectUrl: z.string(),
  publicUrl: z.string(),
  peerUrl: z.string(),
  startedAt: ms,
  lastSeen: ms,
  draining: z.boolean(),
});
// Connection records are written by every relay of a fleet, and in a rolling
// upgrade a newer relay adds fields (as `host` once was): a reader keeps the
// fields it knows and drops the rest (z.object strips), where a strict schema
// would call the record corrupt and lose the connections. Known fields are
// still checked.
export const presenceSchema = z.object({
  connectionId: str,
  relayId: str,
  tunnelId: str,
  connectorId: z.string(),
  connIndex: z.number().int().nonnegative(),
  version: z.string(),
  clientIp: z.string(),
  connectedAt: ms,
  host: z.string().max(255).optional(),
});

/**
 * Lower-cases and checks a route hostname: exact (`app.example.com`) or a
 * wildcard (`*.example.com`); a trailing dot is dropped. Throws a
 * HostnameError (a TypeError) for anything else. The grammar is protocol's,
 * shared with the connector's ingress rules and the control API.
 */
export { normalizeHostname } from '@tunnel/protocol';

/** Sorts for stable listings. */
export function byKey<T>(key: (v: T) => string): (a: T, b: T) => number {
  return (a, b) => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };
}
