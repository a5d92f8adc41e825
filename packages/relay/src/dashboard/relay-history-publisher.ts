import type { Logger } from 'pino';
import type { Store, StoreEvent } from '../store/types.js';
import type { CountsByTunnel, TunnelCounts } from '../store/relay-history.js';
import type { LimitHits } from '../relay-limits.js';

export interface RelayHistoryPublisherDeps {
  store: Store;
  log: Logger;
  hits: LimitHits;
  relayId: string;
  region: string;
  startedAt: number;
  urls(): { publicUrl: string; controlUrl: string };
  draining(): boolean;
  /** This process's requests per tunnel since it started (RelayMetrics.trafficByTunnel). */
  traffic(): Iterable<{ readonly tunnelId: string; readonly total: number; readonly errors: number }>;
  /** How often the record is refreshed (the relay's heartbeat period). */
  everyMs?: number;
}

/**
 * Writes this relay's entry in the fleet's relay history on every heartbeat:
 * its URLs, its last heartbeat, whether it is draining, and its request
 * counts per tunnel. The counts are cumulative for the relay id: a relay
 * restarted under the same id carries on from the counts it had recorded,
 * so the fleet's totals never go back. Counts of deleted tunnels are dropped.
 */
export class RelayHistoryPublisher {
  private base: Record<string, TunnelCounts> = {};
  private firstSeen = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private warnedFull = false;
  private stopping = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly d: RelayHistoryPublisherDeps) {}

  async start(): Promise<void> {
    try {
      const [mine, tunnels] = await Promise.all([this.d.store.listRelayHistory().then((l) => l.find((h) => h.id === this.d.relayId)), this.d.store.listTunnels()]);
      if (mine) {
        const live = new Set(tunnels.map((t) => t.id));
        this.firstSeen = mine.firstSeen;
        this.base = Object.fromEntries(Object.entries(mine.counts).filter(([id]) => id === '' || live.has(id)));
      }
    } catch (e) {
      this.d.log.warn({ err: (e as Error).message }, 'relay history: cannot read this relay\'s earlier counts; counting from 0');
    }
    this.unsubscribe = this.d.store.subscribe((e: StoreEvent) => {
      if (e.type === 'tunnel-deleted') delete this.base[e.tunnelId];
    });
    await this.publish();
    this.timer = setInterval(() => void this.publish(), this.d.everyMs ?? 2_000);
    this.timer.unref();
  }

  /** Cumulative counts per tunnel: what was recorded before this process, plus what it served. */
  counts(): CountsByTunnel {
    const out: Record<string, TunnelCounts> = { ...this.base };
    for (const t of this.d.traffic()) {
      const b = out[t.tunnelId];
      out[t.tunnelId] = b ? { requests: b.requests + t.total, errors: b.errors + t.errors } : { requests: t.total, errors: t.errors };
    }
    return out;
  }

  /** Writes are queued: a call during a write waits for it and then writes the newer counts. */
  publish(): Promise<void> {
    const run = async (): Promise<void> => {
      const now = Date.now();
      const { publicUrl, controlUrl } = this.d.urls();
      try {
        const outcome = await this.d.store.recordRelayHistory({
          id: this.d.relayId,
          region: this.d.region,
          publicUrl,
          controlUrl,
          startedAt: this.d.startedAt,
          firstSeen: Math.min(this.firstSeen, now),
          lastSeen: now,
          draining: this.stopping || this.d.draining(),
          counts: this.counts(),
        });
        if (outcome === 'full') {
          this.d.hits.hit('relay_history');
          if (!this.warnedFull) {
            this.warnedFull = true;
            this.d.log.warn({ event: 'relay-history-full', relayId: this.d.relayId }, 'the fleet history is full (--max-relay-history): this relay is not remembered; forget relays that are gone from the dashboard');
          }
        } else {
          this.warnedFull = false;
        }
      } catch (e) {
        // While stopping, the store closes under the last ticks: not worth a warning.
        if (this.stopping) this.d.log.debug({ err: (e as Error).message }, 'relay history: record failed while stopping');
        else this.d.log.warn({ err: (e as Error).message }, 'relay history: record failed');
      }
    };
    const next = this.chain.then(run);
    this.chain = next;
    return next;
  }

  /**
   * The relay is about to drain and stop (SIGTERM): recorded now, so once it
   * is gone the dashboard shows it stopped, not down.
   */
  async markStopping(): Promise<void> {
    this.stopping = true;
    await this.publish();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }
}
