import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { TokenKind, randomId, signToken } from '@tunnel/protocol';
import { loadKeyFile } from '../../packages/relay/src/control/keys.js';
import { startFleet, type Fleet } from '../harness/fleet.js';

// An enrollment token signed by the fleet's own key but past its `exp` is
// refused with its own code. (Expired tunnel tokens and account credentials
// are in credential-expiry.test.ts; forged and revoked ones in
// provisioning.test.ts.)

describe('security: expired enrollment token', () => {
  let fleet: Fleet;
  const past = () => Math.floor(Date.now() / 1000) - 60;

  beforeAll(async () => {
    fleet = await startFleet({ relays: 1 });
  });
  afterAll(async () => {
    await fleet?.close();
  });

  it('an expired enrollment token is refused with enroll_expired', async () => {
    const tok = signToken(TokenKind.Enroll, { jti: randomId(12), accountId: 'acct-x', iat: past() - 60, exp: past() }, loadKeyFile(fleet.keys).secretKey);
    const r = await request(`${fleet.relays[0]!.controlUrl}/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: tok }) });
    const body = (await r.body.json()) as { error: { code: string; message: string } };
    expect(r.statusCode).toBe(401);
    expect(body.error.code).toBe('enroll_expired');
    expect(body.error.message).toMatch(/expired/);
  });
});
