import { request } from 'undici';
import type { Logger } from 'pino';
import { verifyToken, TokenError, TokenKind, type RelayListClaims } from '@tunnel/protocol';
import { relayTrust } from '../origin/ca-trust.js';

export interface DiscoveryOptions {
  /**
   * The fleet public key the credential came with: only lists signed with it
   * are followed. Null: discovery is off (a credential from before signed
   * lists), and the connector keeps to the relays it was given.
   */
  fleetKey: string | null;
  /** The connector started on wss://: never follow a ws:// relay or an http:// control API. */
  secureOnly: boolean;
  everyMs?: number;
}

/** Why a list was not followed; each is warned about once per control URL. */
type Refusal = 'unsigned' | 'bad-signature' | 'expired' | 'stale' | 'malformed';

/**
 * Learns the live relay list from any relay's control API (`GET /v1/relays`)
 * so connections follow the fleet: new relays are used, draining ones avoided.
 * Seeds come from the credential; every relay listed becomes another place to ask.
 *
 * The list is followed only when it is signed with the fleet key (whoever
 * answered: a plain-HTTP hop, a lying relay or a cache can hand us anything),
 * is newer than the last one followed, and, for a connector that started on
 * wss://, only its wss:// relays. Anything else is logged once and ignored:
 * the current relays stay.
 */
export class RelayDiscovery {
  private readonly controlUrls: string[];
  private timer: NodeJS.Timeout | null = null;
  private lastIssuedAt = 0;
  private readonly warned = new Set<string>();
  /** Lists fetched, by what became of them (`followed` or a Refusal), for /metrics. */
  readonly outcomes = new Map<'followed' | Refusal, number>();

  constructor(
    seeds: string[],
    private readonly onRelays: (connectUrls: string[]) => void,
    private readonly log: Logger,
    private readonly o: DiscoveryOptions,
  ) {
    this.controlUrls = [...new Set(seeds.filter((u) => u && this.schemeAllowed(u, 'control')))];
    this.droppedSeeds = seeds.filter((u) => u && !this.controlUrls.includes(u));
  }

  private readonly droppedSeeds: string[];

  start(): void {
    if (this.droppedSeeds.length > 0) {
      this.log.warn({ event: 'discovery-seed-refused', controlUrls: this.droppedSeeds }, 'not asking a plain-HTTP control API for relays: this connector runs on wss://');
    }
    if (this.controlUrls.length === 0) return;
    if (this.o.fleetKey === null) {
      this.log.warn(
        { event: 'discovery-off', reason: 'no-fleet-key' },
        'relay discovery is off: the credential carries no fleet key to verify relay lists with (it predates signed lists); using only the relays it names. Get a new one with `tunnel token NAME`, or pass --fleet-key',
      );
      return;
    }
    void this.poll();
    this.timer = setInterval(() => void this.poll(), this.o.everyMs ?? 5_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private schemeAllowed(url: string, kind: 'connect' | 'control'): boolean {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return false;
    }
    const secure = kind === 'connect' ? 'wss:' : 'https:';
    const plain = kind === 'connect' ? 'ws:' : 'http:';
    return u.protocol === secure || (!this.o.secureOnly && u.protocol === plain);
  }

  private refuse(base: string, why: Refusal, detail: string): void {
    this.outcomes.set(why, (this.outcomes.get(why) ?? 0) + 1);
    const key = `${base} ${why}`;
    const fields = { event: 'relay-list-refused', controlUrl: base, reason: why, detail };
    if (this.warned.has(key)) return void this.log.debug(fields, 'relay list ignored again');
    this.warned.add(key);
    this.log.warn(fields, `relay list from ${base} ignored (${detail}); keeping the current relays`);
  }

  async poll(): Promise<string[] | null> {
    const fleetKey = this.o.fleetKey;
    if (fleetKey === null) return null;
    for (const base of this.controlUrls) {
      let body: unknown;
      try {
        const r = await request(base.replace(/\/+$/, '') + '/v1/relays', { headersTimeout: 3_000, bodyTimeout: 3_000, dispatcher: relayTrust.dispatcher() });
        if (r.statusCode !== 200) {
          await r.body.dump();
          continue;
        }
        body = await r.body.json();
      } catch (e) {
        this.log.debug({ controlUrl: base, err: (e as Error).message }, 'relay discovery failed here; trying the next');
        continue;
      }
      const signed = (body as { signed?: unknown } | null)?.signed;
      if (typeof signed !== 'string') {
        this.refuse(base, 'unsigned', 'it is not signed by the fleet');
        continue;
      }
      let claims: RelayListClaims;
      try {
        claims = verifyToken(TokenKind.RelayList, signed, fleetKey).claims as unknown as RelayListClaims;
      } catch (e) {
        const code = e instanceof TokenError ? e.code : 'MALFORMED';
        this.refuse(base, code === 'EXPIRED' ? 'expired' : code === 'MALFORMED' ? 'malformed' : 'bad-signature', `its signature does not verify with the fleet key (${code.toLowerCase()})`);
        continue;
      }
      if (!Array.isArray(claims.relays) || typeof claims.iat !== 'number') {
        this.refuse(base, 'malformed', 'the signed list has no relays');
        continue;
      }
      // A replayed older list (still within its validity) never undoes a newer one.
      if (claims.iat < this.lastIssuedAt) {
        this.refuse(base, 'stale', 'it is older than the list already followed');
        continue;
      }
      this.lastIssuedAt = claims.iat;
      this.outcomes.set('followed', (this.outcomes.get('followed') ?? 0) + 1);
      const relays = claims.relays.filter((x) => x && typeof x.connectUrl === 'string' && this.schemeAllowed(x.connectUrl, 'connect'));
      for (const x of claims.relays) {
        if (x && typeof x.controlUrl === 'string' && this.schemeAllowed(x.controlUrl, 'control') && !this.controlUrls.includes(x.controlUrl)) this.controlUrls.push(x.controlUrl);
      }
      const live = relays.filter((x) => !x.draining).map((x) => x.connectUrl);
      if (live.length > 0) this.onRelays(live);
      return live;
    }
    return null;
  }
}
