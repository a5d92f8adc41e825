import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { YamuxStream } from '@tunnel/protocol';
import { RelayConnection, type CloseReason, type RelayConnOptions } from './relay-connection.js';
import { systemClock, type Clock, type ClockTimer } from './clock.js';

export interface HAOptions {
  relays: string[];
  haConnections: number;
  token: string;
  connectorId: string;
  version: string;
  log: Logger;
  onStream(stream: YamuxStream): void;
  /** How long a replaced connection may finish its in-flight streams. */
  gracePeriodMs: number;
  rebalanceEveryMs?: number;
  /** Back-offs, jitter and rebalancing run on this clock (tests pass a fake one); also handed to each connection. */
  clock?: Clock;
  /** Handed to each connection (tests shorten the heartbeat). */
  keepalive?: RelayConnOptions['keepalive'];
}

/** A relay as the HA manager sees it; `avoidUntil` grows with consecutive failures. */
interface RelayHealth {
  url: string;
  failures: number;
  avoidUntil: number;
  lastError: string;
}

/** One of the `haConnections` positions; may briefly hold two connections while moving (make-before-break). */
interface Slot {
  index: number;
  current: RelayConnection | null;
  pending: RelayConnection | null;
  failures: number;
  /** Kind of failure last logged at info: a retry that fails the same way again is logged at debug. */
  failingWith: CloseReason['kind'] | null;
  /** What the slot's timer waits for: a spread-out replacement is hurried when the tunnel loses its last connection. */
  timer: { kind: 'retry' | 'spread'; handle: ClockTimer; lostFrom: string } | null;
}

export interface HAEvents {
  change: [];
  fatal: [reason: Extract<CloseReason, { kind: 'refused' | 'revoked' }>];
  /** Every connection event that is also logged (for metrics). */
  connection: [e: ConnectionEvent];
}

export interface ConnectionEvent {
  event: 'dial' | 'registered' | 'goaway' | 'lost' | 'dial-failed' | 'backoff' | 'drained' | 'refused';
  connIndex: number;
  relayUrl: string;
  relayId: string;
  /** Why it ended (lost, dial-failed, backoff, refused): the CloseReason kind. */
  reason?: CloseReason['kind'];
  conn: RelayConnection;
}

export interface ConnectionInfo {
  index: number;
  relayUrl: string;
  relayId: string;
  region: string;
  connectionId: string;
  state: string;
  since: number;
  streams: number;
  rttMs: number;
}

type ManagerState = 'idle' | 'running' | 'draining' | 'stopped';

const MAX_BACKOFF_MS = 15_000;
/** A lost connection of a tunnel with no other live one is replaced within this (jitter only). */
const FAST_REPLACE_MS = 50;
/**
 * A lost connection of a tunnel that still has a live one is replaced within
 * this window: when a relay dies, every connector of the fleet loses its
 * connections to it at the same instant, and redialling them all within
 * 50 ms would ask the survivors for more registrations than they can do.
 */
const SPREAD_REPLACE_MS = 5_000;
/** Jitter added to a relay's Retry-After, so the connectors it refused together come back apart. */
const RETRY_AFTER_JITTER_MS = 1_000;

/**
 * Keeps `haConnections` registered connections spread round-robin over the
 * known relays (two distinct relays whenever two are up), replaces a lost one
 * at once on another relay, retries failures with exponential backoff and
 * jitter forever (a network outage heals by itself), and moves connections
 * back when a relay returns.
 */
export class HAManager extends EventEmitter<HAEvents> {
  private readonly slots: Slot[];
  private relays: RelayHealth[];
  private state: ManagerState = 'idle';
  private rebalanceTimer: ClockTimer | null = null;
  private warnedSingleRelay = false;
  /** Relay ids learned from registrations, so a dial line can name the relay it goes to. */
  private readonly relayIds = new Map<string, string>();
  reconnects = 0;
  /** The credential new connections present; replaced by a rotation. */
  private token: string;
  /** A rotation in progress: slots still on the old credential, replaced one at a time. */
  private rotation: { queue: number[]; previous: string } | null = null;
  private readonly clock: Clock;

  constructor(private readonly o: HAOptions) {
    super();
    this.clock = o.clock ?? systemClock;
    this.token = o.token;
    if (o.relays.length === 0) throw new Error('no relays to connect to');
    this.relays = dedupe(o.relays).map((url) => ({ url, failures: 0, avoidUntil: 0, lastError: '' }));
    this.slots = Array.from({ length: o.haConnections }, (_, index) => ({ index, current: null, pending: null, failures: 0, failingWith: null, timer: null }));
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    for (const slot of this.slots) this.dial(slot, this.pickRelay(slot));
    this.rebalanceTimer = this.clock.setInterval(() => this.rebalance(), this.o.rebalanceEveryMs ?? 2_000);
    this.rebalanceTimer.unref();
  }

  /** Replace the relay list (fleet discovery); connections to relays no longer listed move. */
  setRelays(urls: string[]): void {
    const next = dedupe(urls);
    if (next.length === 0) return;
    const old = new Map(this.relays.map((r) => [r.url, r]));
    this.relays = next.map((url) => old.get(url) ?? { url, failures: 0, avoidUntil: 0, lastError: '' });
  }

  get readyConnections(): number {
    let n = 0;
    for (const s of this.slots) if (s.current?.state === 'registered') n++;
    return n;
  }

  connections(): ConnectionInfo[] {
    const out: ConnectionInfo[] = [];
    for (const s of this.slots) {
      for (const c of [s.current, s.pending]) {
        if (!c) continue;
        out.push({
          index: s.index,
          relayUrl: c.opts.relayUrl,
          relayId: c.relayId,
          region: c.region,
          connectionId: c.connectionId,
          state: c.state,
          since: c.registeredAt,
          streams: c.streams,
          rttMs: c.rtt,
        });
      }
    }
    return out;
  }

  relayHealth(): ReadonlyArray<Readonly<RelayHealth>> {
    return this.relays;
  }

  /**
   * A rotated credential: every connection is replaced by one presenting the
   * new credential, one slot at a time and make-before-break (the old one
   * finishes its streams after the new one registers), so no request fails.
   */
  rotateToken(token: string): void {
    if (token === this.token || this.state !== 'running') return;
    const previous = this.rotation?.previous ?? this.token;
    this.token = token;
    this.rotation = { queue: this.slots.map((s) => s.index), previous };
    this.o.log.info({ event: 'credential-rotating', connections: this.slots.length }, 'new tunnel credential: replacing connections one at a time');
    this.rotateNext();
  }

  private rotateNext(): void {
    const r = this.rotation;
    if (!r || this.state !== 'running') return;
    for (let i = r.queue.shift(); i !== undefined; i = r.queue.shift()) {
      const slot = this.slots[i]!;
      const cur = slot.current;
      // Empty or already moving slots dial with the new credential anyway.
      if (!cur || slot.pending || cur.opts.token === this.token || cur.state !== 'registered') continue;
      this.dial(slot, cur.opts.relayUrl);
      const conn = slot.pending as RelayConnection | null;
      if (!conn) continue;
      const next = () => {
        conn.off('registered', next);
        conn.off('closed', next);
        setImmediate(() => this.rotateNext());
      };
      conn.on('registered', next);
      conn.on('closed', next);
      return;
    }
    this.rotation = null;
    this.o.log.info({ event: 'credential-rotated' }, 'every connection now uses the new tunnel credential');
  }

  /** SIGTERM: every connection drains (no new streams, in-flight finish within the grace period). */
  async drain(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'draining') return;
    this.state = 'draining';
    this.clearTimers();
    const conns = this.slots.flatMap((s) => [s.current, s.pending]).filter((c): c is RelayConnection => c !== null);
    await Promise.all(conns.map((c) => c.drain(this.o.gracePeriodMs)));
    this.state = 'stopped';
  }

  stop(): void {
    this.state = 'stopped';
    this.clearTimers();
    for (const s of this.slots) {
      s.current?.abort({ kind: 'local', message: 'stopped' });
      s.pending?.abort({ kind: 'local', message: 'stopped' });
    }
  }

  private clearTimers(): void {
    if (this.rebalanceTimer) this.clock.clear(this.rebalanceTimer);
    for (const s of this.slots) if (s.timer) this.clock.clear(s.timer.handle);
  }

  private slotsOn(url: string): number {
    let n = 0;
    for (const s of this.slots) {
      const c = s.pending ?? s.current;
      if (c && c.opts.relayUrl === url && c.state !== 'draining' && c.state !== 'closed') n++;
    }
    return n;
  }

  /** Healthy relays first, then the least used, then the slot's round-robin relay. */
  private pickRelay(slot: Slot, avoid?: string): string {
    const now = this.clock.now();
    const preferred = this.relays[slot.index % this.relays.length]!.url;
    let best: RelayHealth | null = null;
    let bestScore = Infinity;
    for (const r of this.relays) {
      const score =
        (r.url === avoid ? 1e9 : 0) +
        (r.avoidUntil > now ? 1e6 + (r.avoidUntil - now) : 0) +
        this.slotsOn(r.url) * 10 +
        (r.url === preferred ? 0 : 1);
      if (score < bestScore) {
        bestScore = score;
        best = r;
      }
    }
    return best!.url;
  }

  private dial(slot: Slot, relayUrl: string): void {
    if (this.state !== 'running') return;
    const conn = new RelayConnection({
      relayUrl,
      token: this.token,
      connectorId: this.o.connectorId,
      connIndex: slot.index,
      version: this.o.version,
      log: this.o.log,
      onStream: this.o.onStream,
      clock: this.clock,
      ...(this.o.keepalive ? { keepalive: this.o.keepalive } : {}),
    });
    slot.pending = conn;
    const { log } = this.o;
    // Retries during an outage are debug lines: the state change was logged once already.
    log[slot.failures === 0 ? 'info' : 'debug']({ event: 'dial', connIndex: slot.index, relayId: this.relayIds.get(relayUrl) ?? null, relay: relayUrl }, 'dialing relay');
    this.note('dial', slot, conn, relayUrl);
    conn.on('registered', (info) => {
      this.relayIds.set(relayUrl, info.relayId);
      const health = this.relays.find((r) => r.url === relayUrl);
      if (health) {
        health.failures = 0;
        health.avoidUntil = 0;
      }
      slot.failures = 0;
      slot.failingWith = null;
      const old = slot.current;
      slot.current = conn;
      if (slot.pending === conn) slot.pending = null;
      log.info(
        { event: 'registered', connIndex: slot.index, relayId: info.relayId, region: info.region, connectionId: info.connectionId, relay: relayUrl },
        'connection registered',
      );
      this.note('registered', slot, conn, relayUrl);
      // Make-before-break: the connection this one replaces finishes its streams, then leaves.
      if (old && old !== conn) void old.drain(this.o.gracePeriodMs);
      this.emit('change');
    });
    conn.on('goaway', () => {
      // The relay is draining: move now, let the old connection finish in-flight streams.
      const health = this.relays.find((r) => r.url === relayUrl);
      if (health) health.avoidUntil = this.clock.now() + 5_000;
      this.note('goaway', slot, conn, relayUrl, 'goaway');
      if (slot.current === conn && !slot.pending) {
        this.reconnects++;
        this.dial(slot, this.pickRelay(slot, relayUrl));
      }
      this.hurryIfNoneLive();
      this.emit('change');
    });
    conn.on('closed', (reason) => this.onClosed(slot, conn, relayUrl, reason));
  }

  private onClosed(slot: Slot, conn: RelayConnection, relayUrl: string, reason: CloseReason): void {
    const wasCurrent = slot.current === conn;
    const wasPending = slot.pending === conn;
    if (wasCurrent) slot.current = null;
    if (wasPending) slot.pending = null;
    const { log } = this.o;
    const relayId = conn.relayId || this.relayIds.get(relayUrl) || null;
    if (!wasCurrent && !wasPending) {
      // An old connection (replaced, or moved off a draining relay) that finished its streams.
      log.info({ event: 'drained', connIndex: slot.index, relayId, relay: relayUrl, reason: reason.message }, 'connection drained');
      this.note('drained', slot, conn, relayUrl, reason.kind);
      return;
    }
    if ((reason.kind === 'refused' || reason.kind === 'revoked') && this.rotation && conn.opts.token === this.token && this.token !== this.rotation.previous && slot.current?.state === 'registered') {
      // The new credential is refused while the old one still serves: keep the old one.
      log.error({ event: 'credential-rotation-refused', connIndex: slot.index, relay: relayUrl, code: reason.code }, `relay refused the new tunnel credential (${reason.message}); keeping the current one`);
      this.token = this.rotation.previous;
      this.rotation = null;
      return;
    }
    if (reason.kind === 'refused' || reason.kind === 'revoked') {
      log.error({ event: 'refused', connIndex: slot.index, relayId, relay: relayUrl, code: reason.code }, `relay refused the credential: ${reason.message}`);
      this.note('refused', slot, conn, relayUrl, reason.kind);
      if (this.state === 'running') {
        this.stop();
        this.emit('fatal', reason);
      }
      return;
    }
    if (this.state !== 'running') {
      if (conn.registeredAt !== 0) {
        log.info({ event: 'drained', connIndex: slot.index, relayId, relay: relayUrl, reason: reason.message }, 'connection drained');
        this.note('drained', slot, conn, relayUrl, reason.kind);
      }
      return;
    }
    this.emit('change');
    const health = this.relays.find((r) => r.url === relayUrl);
    const neverRegistered = conn.registeredAt === 0;
    const askedToWait = reason.kind === 'relay-unavailable' ? reason.retryAfterMs : undefined;
    if (health && neverRegistered) {
      health.failures++;
      health.lastError = reason.message;
      health.avoidUntil = this.clock.now() + Math.max(backoff(health.failures, this.clock), askedToWait ?? 0);
    }
    if (wasCurrent && !neverRegistered) {
      log.warn({ event: 'lost', connIndex: slot.index, relayId, relay: relayUrl, reasonKind: reason.kind, reason: reason.message }, 'connection lost');
      this.note('lost', slot, conn, relayUrl, reason.kind);
    } else if (neverRegistered) {
      log.debug({ event: 'dial-failed', connIndex: slot.index, relayId, relay: relayUrl, reasonKind: reason.kind, reason: reason.message }, 'connection attempt failed');
      this.note('dial-failed', slot, conn, relayUrl, reason.kind);
    }
    if (slot.current && slot.current.state === 'registered') return; // a replacement is already serving
    if (slot.pending) return;
    this.reconnects++;
    // A failed dial backs off, and never redials sooner than the relay's Retry-After. A lost
    // registered connection is replaced on another relay: at once when the tunnel has no
    // other live connection, else spread out (see SPREAD_REPLACE_MS).
    const kind = neverRegistered || this.readyConnections === 0 ? 'retry' : 'spread';
    let delay: number;
    if (neverRegistered) {
      delay = backoff(++slot.failures, this.clock);
      if (askedToWait !== undefined) delay = Math.max(delay, askedToWait + Math.floor(this.clock.random() * RETRY_AFTER_JITTER_MS));
    } else {
      delay = Math.floor(this.clock.random() * (kind === 'spread' ? SPREAD_REPLACE_MS : FAST_REPLACE_MS));
    }
    if (slot.failures > 0) {
      const changed = slot.failingWith !== reason.kind;
      slot.failingWith = reason.kind;
      log[changed ? 'info' : 'debug']({ event: 'backoff', connIndex: slot.index, relayId, relay: relayUrl, delayMs: delay, failures: slot.failures, reason: reason.message }, 'retrying connection');
      this.note('backoff', slot, conn, relayUrl, reason.kind);
    }
    this.schedule(slot, kind, delay, relayUrl);
    this.hurryIfNoneLive();
  }

  private schedule(slot: Slot, kind: 'retry' | 'spread', delay: number, lostFrom: string): void {
    if (slot.timer) this.clock.clear(slot.timer.handle);
    const handle = this.clock.setTimeout(() => {
      slot.timer = null;
      // Another relay first, also after a failed dial: the relay's own back-off may end
      // at the same moment as the slot's, and a relay that is up should not wait for it.
      this.dial(slot, this.pickRelay(slot, lostFrom));
    }, delay);
    // Not unref'd: a connector with every connection down must stay alive to retry.
    slot.timer = { kind, handle, lostFrom };
  }

  /**
   * A relay's connections close one event at a time: the first lost one may
   * still see the others as live and wait in the spread window. Once none is
   * live, the waiting ones are replaced at once.
   */
  private hurryIfNoneLive(): void {
    if (this.readyConnections > 0) return;
    for (const s of this.slots) {
      if (s.timer?.kind !== 'spread') continue;
      this.schedule(s, 'retry', Math.floor(this.clock.random() * FAST_REPLACE_MS), s.timer.lostFrom);
    }
  }

  private note(event: ConnectionEvent['event'], slot: Slot, conn: RelayConnection, relayUrl: string, reason?: CloseReason['kind']): void {
    if (this.listenerCount('connection') === 0) return;
    this.emit('connection', { event, connIndex: slot.index, relayUrl, relayId: conn.relayId || this.relayIds.get(relayUrl) || '', ...(reason ? { reason } : {}), conn });
  }

  /**
   * Warn once when every registered connection is on one relay because no
   * other is up (the fleet lists one, or the others fail to connect): there
   * is no relay redundancy. Not again until connections were really spread:
   * each retry of a dead relay is not a new episode.
   */
  private warnIfOnOneRelay(): void {
    const inUse = new Set(this.slots.filter((s) => s.current?.state === 'registered').map((s) => s.current!.opts.relayUrl));
    if (inUse.size >= 2) {
      this.warnedSingleRelay = false;
      return;
    }
    if (inUse.size === 0 || this.warnedSingleRelay) return;
    const [relay] = inUse;
    const others = this.relays.filter((r) => r.url !== relay);
    if (others.length > 0 && !others.every((r) => r.failures > 0)) return; // another may still come up
    this.warnedSingleRelay = true;
    const message =
      others.length > 0
        ? `only one of ${this.relays.length} relays is reachable: all connections are on it`
        : 'only one relay is up: all connections are on it (no relay redundancy)';
    this.o.log.warn({ event: 'single-relay', relays: this.relays.length, relay, unreachable: others.map((r) => r.url) }, message);
  }

  /** Spread connections over relays again after one came back (or a new one joined). */
  private rebalance(): void {
    if (this.state !== 'running') return;
    const now = this.clock.now();
    const usable = this.relays.filter((r) => r.avoidUntil <= now);
    this.warnIfOnOneRelay();
    // One move at a time, and none while a lost slot waits to be replaced (it picks the least used relay).
    if (this.slots.some((s) => s.pending || s.timer?.kind === 'spread')) return;
    // A relay the fleet no longer lists (it left, or was forgotten) keeps no connection,
    // once a listed one is up to take it.
    const listed = new Set(this.relays.map((r) => r.url));
    const stray = this.slots.find((s) => s.current?.state === 'registered' && !listed.has(s.current.opts.relayUrl));
    if (stray && usable.length > 0) {
      const from = stray.current!.opts.relayUrl;
      const to = this.pickRelay(stray, from);
      this.o.log.info({ event: 'rebalance', connIndex: stray.index, from, to, reason: 'relay no longer listed' }, 'moving a connection off a relay the fleet no longer lists');
      this.dial(stray, to);
      return;
    }
    if (usable.length <= 1) return;
    const counts = usable.map((r) => ({ r, n: this.slotsOn(r.url) }));
    counts.sort((a, b) => a.n - b.n);
    const least = counts[0]!;
    const most = counts[counts.length - 1]!;
    // Only a difference of two or more is worth a move (4,0 → 3,1 → 2,2).
    if (most.n - least.n < 2) return;
    const slot = this.slots.find((s) => s.current?.opts.relayUrl === most.r.url && s.current.state === 'registered');
    if (!slot) return;
    this.o.log.info({ event: 'rebalance', connIndex: slot.index, from: most.r.url, to: least.r.url }, 'moving a connection to spread over relays');
    this.dial(slot, least.r.url);
  }
}

function backoff(failures: number, clock: Clock): number {
  const base = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(failures - 1, 10));
  return Math.floor(base / 2 + clock.random() * (base / 2));
}

function dedupe(urls: string[]): string[] {
  return [...new Set(urls.map((u) => u.trim()).filter(Boolean))];
}
