// Quick tunnels in /metrics: what they hold of this relay now, and what
// they keep in the fleet store (live records, and tombstones of deleted ones
// until they expire), so an operator sees the store return to its size.

import { Gauge, type Registry } from 'prom-client';
import type { Logger } from 'pino';

export interface QuickMetricsSource {
  inFlight(): number;
  storeCounts(): Promise<{ live: number; deleted: number }>;
}

export function registerQuickMetrics(registry: Registry, source: QuickMetricsSource, log: Logger): void {
  const registers = [registry];
  new Gauge({
    name: 'tunnel_relay_quick_requests_in_flight',
    help: 'Requests (and WebSockets) in flight to quick tunnels through this relay (ceiling: --max-quick-streams-total).',
    registers,
    collect() {
      this.set(source.inFlight());
    },
  });
  new Gauge({
    name: 'tunnel_relay_quick_tunnel_records',
    help: 'Quick-tunnel records in the fleet store: live tunnels, and deleted ones whose tombstone has not expired yet (it lives one quick token lifetime).',
    labelNames: ['state'],
    registers,
    async collect() {
      try {
        const c = await source.storeCounts();
        this.labels('live').set(c.live);
        this.labels('deleted').set(c.deleted);
      } catch (e) {
        // The store is unreachable: the last counts stay, the rest of the scrape is answered.
        log.debug({ event: 'quick-metrics-unavailable', err: (e as Error).message }, 'quick tunnel counts unavailable');
      }
    },
  });
}
