// Every refusal of the one credential checker, for both kinds it checks
// (tunnel tokens and account credentials), against a real file store: each
// says why (status, code, and the words the CLI prints), in the order the
// checks run — signature and kind, shape, legacy, revocation, subject.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKeyPair, signToken, TokenKind } from '@tunnel/protocol';
import { checkAccountCredential, checkTunnelCredential, LegacyCredentials, type CredentialPolicy } from '../src/connectors/credential-check.js';
import { openStore } from '../src/store/open.js';
import type { Account, Store, Tunnel } from '../src/store/types.js';

const keys = generateSigningKeyPair();
const other = generateSigningKeyPair();
const accept: CredentialPolicy = { accountSeconds: 3600, tunnelSeconds: 3600, legacy: 'accept' };
const refuse: CredentialPolicy = { ...accept, legacy: 'refuse', legacySeen: new LegacyCredentials(pino({ level: 'silent' })) };
const later = () => Math.floor(Date.now() / 1000) + 3600;
const TUNNEL_AGAIN = 'get a new one with `tunnel token --rotate NAME` (or `tunnel token NAME`)';

describe('credential check: one checker, two kinds', () => {
  let dir: string;
  let store: Store;
  let account: Account;
  let tunnel: Tunnel;
  let deleted: Tunnel;

  const tunnelToken = (claims: Record<string, unknown>, key = keys.secretKey) =>
    signToken(TokenKind.Tunnel, { jti: `t-${Math.random()}`, accountId: account.id, tunnelId: tunnel.id, exp: later(), ...claims }, key);
  const accountToken = (claims: Record<string, unknown>, key = keys.secretKey) => signToken(TokenKind.Account, { jti: `a-${Math.random()}`, accountId: account.id, exp: later(), ...claims }, key);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tunnel-credential-check-'));
    store = await openStore(`file:${dir}`, { watch: false });
    account = await store.createAccount('cred');
    tunnel = await store.createTunnel(account.id, 'live');
    deleted = await store.createTunnel(account.id, 'gone');
    await store.deleteTunnel(deleted.id, 60_000);
  });
  afterAll(async () => {
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('tunnel credentials: each refusal says why', async () => {
    const revoked = tunnelToken({ jti: 'revoked-t' });
    await store.revoke('revoked-t', Date.now() + 3_600_000);
    const cases: Array<[string, CredentialPolicy, string, number, string]> = [
      ['', accept, 'missing_credential', 401, 'no tunnel credential (Authorization: Bearer …)'],
      ['garbage', accept, 'invalid_credential', 401, 'tunnel credential is malformed'],
      [tunnelToken({}, other.secretKey), accept, 'invalid_credential', 401, 'tunnel credential signature does not verify (tampered, or issued by another fleet)'],
      [accountToken({}), accept, 'invalid_credential', 401, 'this is not a tunnel credential'],
      [tunnelToken({ exp: 1 }), accept, 'credential_expired', 401, `tunnel credential has expired: ${TUNNEL_AGAIN}`],
      [tunnelToken({ tunnelId: 7 }), accept, 'invalid_credential', 401, 'tunnel credential lacks tunnel, account or id'],
      [tunnelToken({ exp: undefined }), refuse, 'credential_no_expiry', 401, `this tunnel credential has no expiry and this relay no longer accepts such: ${TUNNEL_AGAIN}`],
      [revoked, accept, 'credential_revoked', 403, 'tunnel credential has been revoked'],
      [tunnelToken({ tunnelId: 'never-was' }), accept, 'tunnel_unknown', 503, "the relay's store does not know tunnel never-was (store empty or wiped?); retry later"],
      [tunnelToken({ tunnelId: deleted.id }), accept, 'tunnel_deleted', 403, `tunnel ${deleted.id} no longer exists`],
      [tunnelToken({ accountId: 'someone-else' }), accept, 'tunnel_deleted', 403, `tunnel ${tunnel.id} no longer exists`],
    ];
    for (const [token, policy, code, status, message] of cases) {
      expect(await checkTunnelCredential(token, keys.publicKey, store, policy), code).toEqual({ status, code, message });
    }
    const ok = await checkTunnelCredential(tunnelToken({ jti: 'fine-t' }), keys.publicKey, store, accept);
    expect('claims' in ok && ok.claims.jti).toBe('fine-t');
    // A legacy one is accepted under `accept`, and noted once.
    const legacy = await checkTunnelCredential(tunnelToken({ exp: undefined }), keys.publicKey, store, accept);
    expect('claims' in legacy).toBe(true);
  });

  it('account credentials: each refusal says why', async () => {
    const revoked = accountToken({ jti: 'revoked-a' });
    await store.revoke('revoked-a', Date.now() + 3_600_000);
    const cases: Array<[string, CredentialPolicy, string, number, string]> = [
      ['', accept, 'missing_credential', 401, 'no account credential: run `tunnel login` first'],
      ['garbage', accept, 'invalid_credential', 401, 'account credential is malformed'],
      [accountToken({}, other.secretKey), accept, 'invalid_credential', 401, 'account credential signature does not verify (tampered, or issued by another fleet)'],
      [tunnelToken({}), accept, 'invalid_credential', 401, 'this is not an account credential'],
      [accountToken({ exp: 1 }), accept, 'credential_expired', 401, 'account credential has expired: run `tunnel login` again'],
      [accountToken({ jti: 5 }), accept, 'invalid_credential', 401, 'account credential lacks its account'],
      [accountToken({ exp: undefined }), refuse, 'credential_no_expiry', 401, 'this account credential has no expiry and this relay no longer accepts such: run `tunnel login` again'],
      [revoked, accept, 'credential_revoked', 403, 'this account credential has been revoked: run `tunnel login` again'],
      [accountToken({ accountId: 'never-was' }), accept, 'account_deleted', 403, 'the account of this credential no longer exists'],
    ];
    for (const [token, policy, code, status, message] of cases) {
      expect(await checkAccountCredential(token, keys.publicKey, store, policy), code).toEqual({ status, code, message });
    }
    const ok = await checkAccountCredential(accountToken({ jti: 'fine-a' }), keys.publicKey, store, accept);
    expect('claims' in ok && ok.claims.jti).toBe('fine-a');
  });

  it('legacy credentials are counted once each, per kind', async () => {
    const seen = new LegacyCredentials(pino({ level: 'silent' }));
    const policy: CredentialPolicy = { ...accept, legacySeen: seen };
    const t = tunnelToken({ jti: 'same', exp: undefined });
    const a = accountToken({ jti: 'same', exp: undefined });
    for (let i = 0; i < 2; i++) {
      expect('claims' in (await checkTunnelCredential(t, keys.publicKey, store, policy))).toBe(true);
      expect('claims' in (await checkAccountCredential(a, keys.publicKey, store, policy))).toBe(true);
    }
    expect(seen.count).toBe(2);
  });
});
