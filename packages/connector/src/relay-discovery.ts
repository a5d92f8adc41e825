import { request } from 'undici';
import type { Logger } from 'pino';

interface RelayListing {
  id: string;
  connectUrl: string;
  controlUrl: string;
  draining: boolean;
}

/**
 * Learns the live relay list from any relay's control API (`GET /v1/relays`)
 * so connections follow the fleet: new relays are used, draining ones avoided.
 * Seeds come from the credential; every relay listed becomes another place to ask.
 */
export class RelayDiscovery {
  private readonly controlUrls: string[];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    seeds: string[],
    private readonly onRelays: (connectUrls: string[]) => void,
    private readonly log: Logger,
    private readonly everyMs = 5_000,
  ) {
    this.controlUrls = [...new Set(seeds.filter(Boolean))];
  }

  start(): void {
    if (this.controlUrls.length === 0) return;
    void this.poll();
    this.timer = setInterval(() => void this.poll(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  async poll(): Promise<string[] | null> {
    for (const base of this.controlUrls) {
      try {
        const r = await request(base.replace(/\/+$/, '') + '/v1/relays', { headersTimeout: 3_000, bodyTimeout: 3_000 });
        if (r.statusCode !== 200) {
          await r.body.dump();
          continue;
        }
        const body = (await r.body.json()) as { relays?: RelayListing[] };
        const relays = (body.relays ?? []).filter((x) => typeof x.connectUrl === 'string' && x.connectUrl);
        for (const x of relays) if (x.controlUrl && !this.controlUrls.includes(x.controlUrl)) this.controlUrls.push(x.controlUrl);
        const live = relays.filter((x) => !x.draining).map((x) => x.connectUrl);
        if (live.length > 0) this.onRelays(live);
        return live;
      } catch (e) {
        this.log.debug({ controlUrl: base, err: (e as Error).message }, 'relay discovery failed here; trying the next');
      }
    }
    return null;
  }
}
