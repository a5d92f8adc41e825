// Fleet membership history: every relay that ever joined, with its last
// heartbeat and its cumulative request counts per tunnel, kept after it stops
// or dies until an operator forgets it. Membership (`listRelays`) forgets a
// relay three heartbeats after its last one; the dashboard reads this instead
// to show a dead relay as down and to keep its requests in the fleet's totals.
//
// Both stores keep it (file: one JSON file per relay; Redis: one hash). Every
// record is read back through `parseHistoryRecord`: it is bounded (size,
// tunnels per relay, counts) and validated, and one bad record is skipped
// with a reason, never the whole listing.

import { z } from 'zod';

/** Requests and 5xx answers a relay served for one tunnel ('' = no route matched). */
export interface TunnelCounts {
  readonly requests: number;
  readonly errors: number;
}

export type CountsByTunnel = Readonly<Record<string, TunnelCounts>>;

export interface RelayHistory {
  readonly id: string;
  readonly region: string;
  readonly publicUrl: string;
  readonly controlUrl: string;
  /** When this relay process started (a restart under the same id changes it). */
  readonly startedAt: number;
  /** The first time this id was recorded. */
  readonly firstSeen: number;
  /** Its last heartbeat: a relay that is no longer a member has been down since then. */
  readonly lastSeen: number;
  /** Whether it was draining at its last heartbeat: gone after that is a clean stop, not a crash. */
  readonly draining: boolean;
  /** Cumulative since the id was first recorded (a restart under the same id carries on). */
  readonly counts: CountsByTunnel;
}

/** Ceilings on what the history accepts and reads back (the store is a hostile-input boundary too). */
export const HISTORY_LIMITS = {
  /** Relays remembered at once (down ones included, until forgotten): `--max-relay-history`. */
  relays: 256,
  /** Tunnels counted per relay: past it the least-used are dropped from the record. */
  tunnelsPerRelay: 2_000,
  /** Bytes of one serialized record (2,000 tunnels take ~150 KiB). */
  recordBytes: 256 * 1024,
} as const;

const RELAY_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const ms = z.number().int().nonnegative();
const tunnelCounts = z.strictObject({ requests: count, errors: count });
const countsSchema = z
  .record(z.string().max(64), tunnelCounts)
  .refine((c) => Object.keys(c).length <= HISTORY_LIMITS.tunnelsPerRelay, `more than ${HISTORY_LIMITS.tunnelsPerRelay} tunnels`);

export const relayHistorySchema = z.strictObject({
  id: z.string().regex(RELAY_ID, 'relay ids are 1-128 letters, digits, . _ : -'),
  region: z.string().max(128),
  publicUrl: z.string().max(2048),
  controlUrl: z.string().max(2048),
  startedAt: ms,
  firstSeen: ms,
  lastSeen: ms,
  draining: z.boolean(),
  counts: countsSchema,
});

export const retiredCountsSchema = countsSchema;

export function isRelayHistoryId(id: string): boolean {
  return RELAY_ID.test(id);
}

type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Stored JSON read back through its schema, size-capped first: the value, or why it was refused. */
function parseStored<T>(text: string, schema: z.ZodType<T>): Parsed<T> {
  if (Buffer.byteLength(text) > HISTORY_LIMITS.recordBytes) return { ok: false, reason: `over ${HISTORY_LIMITS.recordBytes} bytes` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  const r = schema.safeParse(json);
  return r.success ? { ok: true, value: r.data } : { ok: false, reason: r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') };
}

/** A parsed record, or why it was refused. */
export function parseHistoryRecord(text: string): Parsed<RelayHistory> {
  return parseStored(text, relayHistorySchema);
}

/** The retired counts (none stored yet: empty), or why they were refused. */
export function parseRetired(text: string | null): Parsed<CountsByTunnel> {
  return text === null ? { ok: true, value: {} } : parseStored(text, retiredCountsSchema);
}

/**
 * The record to write: validated like one read back, its counts trimmed to
 * the most-used tunnels when there are too many. Throws a TypeError for a
 * record no store should hold (a caller bug, not input).
 */
export function historyRecord(h: RelayHistory): string {
  let counts = h.counts;
  const keys = Object.keys(counts);
  if (keys.length > HISTORY_LIMITS.tunnelsPerRelay) {
    const kept = keys.sort((a, b) => counts[b]!.requests - counts[a]!.requests).slice(0, HISTORY_LIMITS.tunnelsPerRelay);
    counts = Object.fromEntries(kept.map((k) => [k, counts[k]!]));
  }
  const rec = relayHistorySchema.safeParse({ ...h, counts });
  if (!rec.success) throw new TypeError(`relay history record refused: ${rec.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const text = JSON.stringify(rec.data);
  if (Buffer.byteLength(text) > HISTORY_LIMITS.recordBytes) throw new TypeError(`relay history record over ${HISTORY_LIMITS.recordBytes} bytes`);
  return text;
}

/** a + b, per tunnel (saturating at MAX_SAFE_INTEGER). */
export function addCounts(a: CountsByTunnel, b: CountsByTunnel): Record<string, TunnelCounts> {
  const out: Record<string, TunnelCounts> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const p = out[k];
    out[k] = p ? { requests: Math.min(Number.MAX_SAFE_INTEGER, p.requests + v.requests), errors: Math.min(Number.MAX_SAFE_INTEGER, p.errors + v.errors) } : v;
  }
  return out;
}

export type RecordOutcome = 'recorded' | 'full';

/** What both stores implement (part of `Store`). */
export interface RelayHistoryStore {
  /**
   * Records (or refreshes) a relay's history. 'full' when the history
   * already holds `HISTORY_LIMITS.relays` other relays: nothing is written.
   */
  recordRelayHistory(h: RelayHistory): Promise<RecordOutcome>;
  /** Every remembered relay, sorted by id; unreadable records are skipped (and logged). */
  listRelayHistory(): Promise<RelayHistory[]>;
  /**
   * Forgets a relay: its record goes, its counts are added to the retired
   * totals (so the fleet's totals keep them). NOT_FOUND if it is not remembered.
   */
  forgetRelay(id: string): Promise<void>;
  /** Counts of forgotten relays, per tunnel. */
  retiredCounts(): Promise<CountsByTunnel>;
}
