// Tunnels, routes, zones, accounts, tombstones and revocations live for months
// and are read by every relay of a fleet, old and new, during a rolling
// upgrade. A field a newer relay adds (as disconnectedAt and expiresAt were
// added) must not make an older reader call the record corrupt: a tunnel
// would vanish, and a deleted tunnel's tombstone would stop refusing its
// tokens as `tunnel_deleted`. Known fields keep their types. Against the real
// file store on disk, and the shared schemas the Redis mirror reads with.

import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/open.js';
import { accountSchema, relayMemberSchema, revocationSchema, routeSchema, tombstoneSchema, tunnelSchema, zoneSchema } from '../src/store/types.js';
import { accessPolicySchema } from '../src/store/access-records.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function addFieldsToEveryFile(dir: string, collection: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(path.join(dir, collection))) {
    if (!f.endsWith('.json')) continue;
    const p = path.join(dir, collection, f);
    const rec = JSON.parse(await readFile(p, 'utf8')) as object;
    await writeFile(p, JSON.stringify({ ...rec, labels: { tier: 'gold' }, v2Only: 7 }));
    n++;
  }
  return n;
}

describe('stored records with fields from a newer relay', () => {
  it('file store: a tunnel, its route and a tombstone with unknown fields are read with the fields this relay knows', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-record-compat-'));
    dirs.push(dir);
    const first = await openStore(`file:${dir}`);
    const acct = await first.createAccount('alice');
    const kept = await first.createTunnel(acct.id, 'kept');
    const gone = await first.createTunnel(acct.id, 'gone');
    await first.deleteTunnel(gone.id, 3_600_000);
    await first.close();

    expect(await addFieldsToEveryFile(dir, 'tunnels')).toBe(1);
    expect(await addFieldsToEveryFile(dir, 'tombstones')).toBe(1);
    expect(await addFieldsToEveryFile(dir, 'accounts')).toBe(1);

    const older = await openStore(`file:${dir}`);
    try {
      const t = await older.getTunnelByName(acct.id, 'kept');
      expect(t).toEqual({ id: kept.id, accountId: acct.id, name: 'kept', createdAt: kept.createdAt });
      expect(await older.getTunnel(kept.id)).toBeDefined();
      expect((await older.getTombstone(gone.id))?.name).toBe('gone');
      expect((await older.getAccountByName('alice'))?.id).toBe(acct.id);
    } finally {
      await older.close();
    }
  });

  it('every long-lived record schema drops unknown fields but still refuses a known field of the wrong type', () => {
    const extra = { fromTheFuture: true };
    const cases: Array<[string, { safeParse(v: unknown): { success: boolean; data?: unknown } }, Record<string, unknown>, string]> = [
      ['account', accountSchema, { id: 'a', name: 'alice', createdAt: 1 }, 'createdAt'],
      ['tunnel', tunnelSchema, { id: 't', accountId: 'a', name: 'x', createdAt: 1 }, 'createdAt'],
      ['route', routeSchema, { hostname: 'x.test', tunnelId: 't', accountId: 'a', createdAt: 1 }, 'tunnelId'],
      ['zone', zoneSchema, { zone: 'x.test', accountId: 'a', source: 'operator', createdAt: 1 }, 'source'],
      ['tombstone', tombstoneSchema, { tunnelId: 't', accountId: 'a', name: 'x', deletedAt: 1, expiresAt: 2 }, 'deletedAt'],
      ['revocation', revocationSchema, { tokenId: 'j', expiresAt: 2, revokedAt: 1 }, 'expiresAt'],
      [
        'relay member',
        relayMemberSchema,
        { id: 'r', region: '', controlUrl: 'u', connectUrl: 'u', publicUrl: 'u', peerUrl: 'u', startedAt: 1, lastSeen: 1, draining: false },
        'draining',
      ],
    ];
    for (const [name, schema, rec, key] of cases) {
      const parsed = schema.safeParse({ ...rec, ...extra });
      expect(parsed.success, name).toBe(true);
      expect(parsed.data, name).toEqual(rec);
      expect(schema.safeParse({ ...rec, [key]: ['wrong'] }).success, `${name}.${key} of the wrong type`).toBe(false);
    }
  });

  it('an Access policy with a field this relay cannot read is refused (fails closed), not widened', () => {
    const policy = {
      kind: 'policy',
      id: 'p',
      accountId: 'a',
      hostname: 'app.x.test',
      pathPrefix: '/',
      decision: 'allow',
      include: { emails: ['a@x.test'], domains: [], groups: [], serviceTokens: [] },
      audTag: 'aud',
      sessionSeconds: 3600,
      createdAt: 1,
    };
    expect(accessPolicySchema.safeParse(policy).success).toBe(true);
    // A newer relay's extra criterion inside `include` (say, source networks) would narrow who gets in; dropping it would widen the rule.
    expect(accessPolicySchema.safeParse({ ...policy, include: { ...policy.include, ipRanges: ['10.0.0.0/8'] } }).success).toBe(false);
    expect(accessPolicySchema.safeParse({ ...policy, requireMfa: true }).success).toBe(false);
  });
});
