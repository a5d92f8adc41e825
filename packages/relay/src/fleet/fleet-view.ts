import type { Logger } from 'pino';
import type { Store, StoreEvent, RelayMember } from '../store/types.js';

/**
 * This relay's picture of the fleet, for forwarding: which live relays hold a
 * connection for which tunnel. Kept in memory (a request never waits on the
 * store), refreshed on store events and on a timer so it heals after a store
 * outage.
 */
export class FleetView {
  private members = new Map<string, RelayMember>();
  private holders = new Map<string, Set<string>>(); // tunnelId → relay ids
  private byRelay = new Map<string, Set<string>>(); // relayId → tunnel ids
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private rr = 0;
  private retired: ((m: RelayMember) => void) | null = null;

  constructor(
    private readonly store: Store,
    private readonly selfId: string,
    private readonly log: Logger,
    private readonly refreshMs = 2_000,
    /** 'https': a relay with certificates never forwards a request (or its secrets) in clear. */
    private readonly peerScheme: 'https' | 'any' = 'any',
    /** A peer whose last heartbeat is older than this is not forwarded to: the membership TTL the relays publish with. */
    private readonly memberTtlMs = 6_000,
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.unsubscribe = this.store.subscribe((e) => this.onEvent(e));
    this.timer = setInterval(() => void this.refresh(), this.refreshMs);
    this.timer.unref();
  }

  /** Told once for each peer that was forwarded to and now drains, changed its peer URL or left. */
  onRetired(fn: (m: RelayMember) => void): void {
    this.retired = fn;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
  }

  /** Live, non-draining peers that hold a connection of `tunnelId`, rotated for spread. */
  peersFor(tunnelId: string): RelayMember[] {
    const ids = this.holders.get(tunnelId);
    if (!ids) return [];
    const now = Date.now();
    const out: RelayMember[] = [];
    for (const id of ids) {
      if (id === this.selfId) continue;
      const m = this.members.get(id);
      if (m && m.peerUrl && !m.draining && m.lastSeen + this.memberTtlMs > now && (this.peerScheme === 'any' || m.peerUrl.startsWith('https://'))) out.push(m);
    }
    if (out.length > 1) {
      const k = this.rr++ % out.length;
      return [...out.slice(k), ...out.slice(0, k)];
    }
    return out;
  }

  private async refresh(): Promise<void> {
    try {
      const [members, presence] = await Promise.all([this.store.listRelays(), this.store.listPresence()]);
      const before = this.members;
      this.members = new Map(members.map((m) => [m.id, m]));
      for (const [id, was] of before) {
        const now = this.members.get(id);
        if (was.peerUrl && !was.draining && (!now || now.draining || now.peerUrl !== was.peerUrl)) this.retired?.(was);
      }
      const byRelay = new Map<string, Set<string>>();
      for (const p of presence) {
        let s = byRelay.get(p.relayId);
        if (!s) byRelay.set(p.relayId, (s = new Set()));
        s.add(p.tunnelId);
      }
      this.byRelay = byRelay;
      this.rebuild();
    } catch (e) {
      this.log.debug({ err: (e as Error).message }, 'fleet view refresh failed; keeping the last one');
    }
  }

  private async refreshRelay(relayId: string): Promise<void> {
    try {
      const presence = await this.store.listPresence({ relayId });
      this.byRelay.set(relayId, new Set(presence.map((p) => p.tunnelId)));
      this.rebuild();
    } catch {
      /* next full refresh */
    }
  }

  private rebuild(): void {
    const holders = new Map<string, Set<string>>();
    for (const [relayId, tunnels] of this.byRelay) {
      for (const t of tunnels) {
        let s = holders.get(t);
        if (!s) holders.set(t, (s = new Set()));
        s.add(relayId);
      }
    }
    this.holders = holders;
  }

  private onEvent(e: StoreEvent): void {
    if (e.type === 'presence' && e.relayId !== this.selfId) void this.refreshRelay(e.relayId);
    else if (e.type === 'relay') void this.refresh();
  }
}
