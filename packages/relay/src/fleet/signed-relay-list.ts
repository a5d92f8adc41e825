import { signToken, TokenKind, RELAY_LIST_TTL_SECONDS, type RelayListClaims, type RelayListEntry } from '@tunnel/protocol';
import type { Store } from '../store/types.js';
import type { FleetKeys } from '../control/keys.js';

/** Re-sign at most this often: anyone may ask, and a JS Ed25519 signature costs milliseconds. */
const RESIGN_AFTER_MS = 1_000;

/**
 * `GET /v1/relays`: the live relays, plus the same list signed with the fleet
 * key so a connector can tell the fleet's list from one an attacker serves
 * (a lying relay, a man in the middle of plain HTTP, a poisoned cache).
 */
export class SignedRelayList {
  private cached: { at: number; body: { relays: RelayListEntry[]; signed: string } } | null = null;
  private pending: Promise<{ relays: RelayListEntry[]; signed: string }> | null = null;

  constructor(
    private readonly store: Store,
    private readonly keys: FleetKeys,
  ) {}

  current(): Promise<{ relays: RelayListEntry[]; signed: string }> {
    if (this.cached && Date.now() - this.cached.at < RESIGN_AFTER_MS) return Promise.resolve(this.cached.body);
    // Concurrent askers share one store read and one signature.
    this.pending ??= this.build().finally(() => (this.pending = null));
    return this.pending;
  }

  private async build(): Promise<{ relays: RelayListEntry[]; signed: string }> {
    const members = await this.store.listRelays();
    const relays: RelayListEntry[] = members.map((r) => ({ id: r.id, region: r.region, connectUrl: r.connectUrl, controlUrl: r.controlUrl, publicUrl: r.publicUrl, draining: r.draining }));
    const now = Math.floor(Date.now() / 1000);
    const claims: RelayListClaims = { relays: relays.map(({ id, connectUrl, controlUrl, draining }) => ({ id, connectUrl, controlUrl, draining })), iat: now, exp: now + RELAY_LIST_TTL_SECONDS };
    const body = { relays, signed: signToken(TokenKind.RelayList, claims, this.keys.secretKey) };
    this.cached = { at: Date.now(), body };
    return body;
  }
}
