// The file store's records on disk: their shapes, the collections they live
// in, and the file name each is stored under (see file-store.ts for the layout).

import { createHash } from 'node:crypto';
import { z } from 'zod';
import {
  StoreError,
  accountSchema,
  relayMemberSchema,
  presenceSchema,
  revocationSchema,
  routeSchema,
  tombstoneSchema,
  tunnelSchema,
  zoneSchema,
  type Account,
  type Revocation,
  type Route,
  type Tunnel,
  type Tombstone,
  type Zone,
} from '../types.js';
import { accessKey, accessRecordSchema, type AccessRecord } from '../access-records.js';

export const FORMAT = 1;
export const TMP_PREFIX = '.tmp-';
export const STALE_TMP_MS = 10 * 60_000;

// --- record shapes on disk -------------------------------------------------

const loginFileSchema = z.strictObject({
  code: z.string().min(1),
  boxPublicKey: z.string().min(1),
  createdAt: z.number().int().nonnegative(),
  expiresAt: z.number().int().nonnegative(),
});
export type LoginFile = z.infer<typeof loginFileSchema>;

// The operator's decision on a login, approve or deny: one file per session,
// created at most once, so a login is never both approved and denied.
const approvalFileSchema = z.union([
  z.strictObject({
    code: z.string().min(1),
    /** The createdAt of the session it approves (binds it to that session, not a later one with the same code). */
    createdAt: z.number().int().nonnegative(),
    accountId: z.string().min(1),
    sealedCredential: z.string().min(1),
    approvedAt: z.number().int().nonnegative(),
  }),
  z.strictObject({
    code: z.string().min(1),
    createdAt: z.number().int().nonnegative(),
    deniedAt: z.number().int().nonnegative(),
  }),
]);
export type ApprovalFile = z.infer<typeof approvalFileSchema>;

const relayFileSchema = z.object({ member: relayMemberSchema, expiresAt: z.number() });
export type RelayFile = z.infer<typeof relayFileSchema>;

// Tolerant of fields a newer relay adds, like the connections in it (types.ts).
const presenceFileSchema = z.object({
  relayId: z.string().min(1),
  expiresAt: z.number(),
  presences: z.array(presenceSchema),
});
export type PresenceFile = z.infer<typeof presenceFileSchema>;

export interface Records {
  accounts: Account;
  zones: Zone;
  tombstones: Tombstone;
  tunnels: Tunnel;
  routes: Route;
  revocations: Revocation;
  logins: LoginFile;
  'login-approvals': ApprovalFile;
  relays: RelayFile;
  presence: PresenceFile;
  access: AccessRecord;
}
export type Collection = keyof Records;

// Tombstones before tunnels: a scan that sees a tunnel gone has already seen
// its tombstone, so a deletion is not mistaken for a wiped store.
export const COLLECTIONS: readonly Collection[] = [
  'accounts',
  'zones',
  'tombstones',
  'tunnels',
  'routes',
  'revocations',
  'logins',
  'login-approvals',
  'relays',
  'presence',
  'access',
];

export const schemas: { [C in Collection]: z.ZodType<Records[C]> } = {
  accounts: accountSchema,
  zones: zoneSchema,
  tombstones: tombstoneSchema,
  tunnels: tunnelSchema,
  routes: routeSchema,
  revocations: revocationSchema,
  logins: loginFileSchema,
  'login-approvals': approvalFileSchema,
  relays: relayFileSchema,
  presence: presenceFileSchema,
  access: accessRecordSchema,
};

/** The unique key a record's file is named by. */
export const keyOf: { [C in Collection]: (v: Records[C]) => string } = {
  accounts: (a) => a.name,
  zones: (z) => z.zone,
  tombstones: (t) => t.tunnelId,
  tunnels: (t) => `${t.accountId}\n${t.name}`,
  routes: (r) => r.hostname,
  revocations: (r) => r.tokenId,
  logins: (l) => l.code,
  'login-approvals': (a) => a.code,
  relays: (r) => r.member.id,
  presence: (p) => p.relayId,
  access: accessKey,
};

/** File-name-safe, reversible-enough encoding: [A-Za-z0-9_.-] kept, the rest %XX; never a leading dot. */
function encodeKey(key: string): string {
  let out = '';
  for (const byte of Buffer.from(key, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9_.-]/.test(c) && !(c === '.' && out === '')) out += c;
    else out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

export function fileNameForKey(key: string): string {
  const enc = encodeKey(key);
  if (enc.length <= 200) return `${enc}.json`;
  // Too long for a file name: keep a readable head and make it unique with a hash.
  return `${enc.slice(0, 150)}~${createHash('sha256').update(key).digest('hex').slice(0, 32)}.json`;
}

export interface Entry<T> {
  /** ino:size:mtime of the file as last read ('' when written locally and not yet seen by a scan). */
  sig: string;
  text: string;
  value: T;
}

export type Mirror = { [C in Collection]: Map<string, Entry<Records[C]>> };

export class CorruptRecord extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
  }
}

export function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

export function unavailable(what: string, err: unknown): StoreError {
  return new StoreError('UNAVAILABLE', `file store: ${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

