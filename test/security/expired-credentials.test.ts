import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { TokenKind, peekClaims, randomId, signToken } from '@tunnel/protocol';
import { loadKeyFile } from '../../packages/relay/src/keys.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { CONNECTOR_CLI, runCli } from '../harness/procs.js';
import { connectRaw } from '../harness/evil-connector.js';

// Credentials signed by the fleet's own key but past their `exp` are
// refused with a reason on every path (forged and revoked ones are covered
// in test/provisioning.test.ts): a tunnel token at the connector endpoint
// (401 before the upgrade; the stock connector exits 2), an account
// credential on the control API, an enrollment token.

describe('security: expired credentials', () => {
  let fleet: Fleet;
  let origin: Origin;
  const past = () => Math.floor(Date.now() / 1000) - 60;

  beforeAll(async () => {
    origin = await startOrigin((_q, s) => s.end('ok'));
    fleet = await startFleet({ relays: 1 });
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  const sign = (kind: string, claims: object) => signToken(kind, claims, loadKeyFile(fleet.keys).secretKey);

  it('an expired tunnel token: 401 with the reason before the upgrade, and the stock connector exits 2', async () => {
    const { kind: _kind, ...claims } = peekClaims(fleet.token)!;
    const expired = sign(TokenKind.Tunnel, { ...claims, jti: randomId(12), exp: past() });
    const up = await connectRaw(fleet.relays[0]!.connectUrl, expired);
    expect(up.ok).toBe(false);
    if (up.ok) return;
    expect(up.status).toBe(401);
    expect(JSON.parse(up.body)).toEqual({ error: { code: 'invalid_credential', message: 'tunnel credential has expired' } });
    const run = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url, '--relay', fleet.relays[0]!.connectUrl], { TUNNEL_TOKEN: expired, TUNNEL_HOME: fleet.dir });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/expired/);
  });

  it('an expired account credential is refused by the control API', async () => {
    const cred = sign(TokenKind.Account, { jti: randomId(12), accountId: 'acct-x', accountName: 'x', controlUrl: fleet.relays[0]!.controlUrl, iat: past() - 60, exp: past() });
    const r = await request(`${fleet.relays[0]!.controlUrl}/v1/tunnels`, { headers: { authorization: `Bearer ${cred}` } });
    const body = (await r.body.json()) as { error: { code: string; message: string } };
    expect(r.statusCode).toBe(401);
    expect(body.error.code).toBe('invalid_credential');
    expect(body.error.message).toMatch(/expired/);
  });

  it('an expired enrollment token is refused with enroll_expired', async () => {
    const tok = sign(TokenKind.Enroll, { jti: randomId(12), accountId: 'acct-x', iat: past() - 60, exp: past() });
    const r = await request(`${fleet.relays[0]!.controlUrl}/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: tok }) });
    const body = (await r.body.json()) as { error: { code: string } };
    expect(r.statusCode).toBe(401);
    expect(body.error.code).toBe('enroll_expired');
  });
});
