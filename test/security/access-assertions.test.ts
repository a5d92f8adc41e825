import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { SignJWT, UnsecuredJWT } from 'jose';
import { fleetIssuer } from '@tunnel/protocol';
import { loadKeyFile } from '../../packages/relay/src/control/keys.js';
import { AccessKeys } from '../../packages/relay/src/access/signing-keys.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { startConnector, type Proc } from '../harness/procs.js';
import { FakeRelay, type RelayAnswer } from './peers.js';

// Issue 15: a connector whose config says `originRequest.access.required`
// trusts no relay to have checked anything. A relay that lies (here a fake
// one the connector dialled) sends forged, expired, unsigned, wrongly
// addressed and over-long assertions: each is a 403 from the connector, the
// origin never sees the request, and the connector serves on.

describe('the connector refuses every assertion the fleet did not sign for this origin', () => {
  let fleet: Fleet;
  let origin: Origin;
  let relay: FakeRelay;
  let connector: Proc;
  let keys: AccessKeys;
  let issuer: string;
  let reached = 0;
  const AUD = 'aud-good';

  beforeAll(async () => {
    origin = await startOrigin((q, s) => {
      reached++;
      s.end(`ok ${q.headers['tunnel-access-jwt-assertion'] ? 'with' : 'without'} assertion`);
    });
    // One real relay: its control API serves the fleet JWKS the connector fetches.
    fleet = await startFleet({ relays: 1 });
    const fleetKeys = loadKeyFile(fleet.keys);
    keys = new AccessKeys(fleetKeys.secretKey);
    issuer = fleetIssuer(fleetKeys.publicKey);
    const config = path.join(fleet.dir, 'access-config.yml');
    writeFileSync(config, `ingress:\n  - hostname: app.test\n    service: ${origin.url}\n    originRequest:\n      access:\n        required: true\n        audTag: [${AUD}, aud-other]\n  - service: http_status:404\n`);
    relay = await FakeRelay.start();
    connector = await startConnector({ token: fleet.token, relays: [relay.url], config, ha: 1, extraArgs: ['--no-discover'] });
    await relay.ready();
  });
  afterAll(async () => {
    await relay?.close();
    await fleet?.close();
    await origin?.close();
  });

  const now = () => Math.floor(Date.now() / 1000);
  const fleetSigned = (o: { aud?: string; iss?: string; iat?: number; exp?: number; kid?: string } = {}) => {
    const k = keys.current();
    return new SignJWT({ email: 'alice@alice.test' })
      .setProtectedHeader({ alg: 'EdDSA', kid: o.kid ?? k.kid })
      .setIssuer(o.iss ?? issuer)
      .setAudience(o.aud ?? AUD)
      .setSubject('alice')
      .setIssuedAt(o.iat ?? now())
      .setExpirationTime(o.exp ?? now() + 60)
      .sign(k.privateKey);
  };
  const send = (assertion?: string) =>
    relay.request({ host: 'app.test', headers: [['Host', 'app.test'], ...(assertion === undefined ? [] : ([['Tunnel-Access-Jwt-Assertion', assertion]] as Array<[string, string]>))] });
  const refused = (r: RelayAnswer | 'reset', why: RegExp) => {
    expect(r).not.toBe('reset');
    const a = r as RelayAnswer;
    expect(a.status).toBe(403);
    expect(a.headers.find(([k]) => k.toLowerCase() === 'tunnel-error')?.[1]).toBe('access_assertion_refused');
    expect(a.body).toMatch(why);
  };

  it('a fleet-signed assertion for one of the audTags reaches the origin (the control case)', async () => {
    const before = reached;
    const r = (await send(await fleetSigned())) as RelayAnswer;
    expect(r.status).toBe(200);
    expect(r.body).toBe('ok with assertion');
    expect(reached).toBe(before + 1);
    expect(((await send(await fleetSigned({ aud: 'aud-other' }))) as RelayAnswer).status).toBe(200);
  });

  it('missing, forged, expired, alg:none, HS256, wrong aud, wrong iss, over 5 minutes, oversized: 403 each, the origin untouched', async () => {
    const other = generateKeyPairSync('ed25519').privateKey;
    const pub = keys.current().publicJwk;
    const cases: Array<[string, string | undefined, RegExp]> = [
      ['missing', undefined, /no Tunnel-Access-Jwt-Assertion/],
      ['forged with the fleet kid', await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA', kid: keys.current().kid }).setIssuer(issuer).setAudience(AUD).setSubject('x').setIssuedAt().setExpirationTime('1m').sign(other), /bad signature/],
      ['forged with an unknown kid', await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA', kid: 'nope' }).setIssuer(issuer).setAudience(AUD).setSubject('x').setIssuedAt().setExpirationTime('1m').sign(other), /key the fleet does not publish/],
      ['expired', await fleetSigned({ iat: now() - 400, exp: now() - 100 }), /expired/],
      ['alg none', new UnsecuredJWT({ sub: 'x' }).setIssuer(issuer).setAudience(AUD).setIssuedAt().setExpirationTime('1m').encode(), /algorithm|invalid/],
      ['HS256 keyed with the public key', await new SignJWT({}).setProtectedHeader({ alg: 'HS256', kid: keys.current().kid }).setIssuer(issuer).setAudience(AUD).setSubject('x').setIssuedAt().setExpirationTime('1m').sign(Buffer.from(String(pub.x))), /algorithm/],
      ['wrong aud', await fleetSigned({ aud: 'someone-else' }), /aud/],
      ['wrong iss', await fleetSigned({ iss: 'urn:tunnel:fleet:other' }), /iss/],
      ['valid for an hour', await fleetSigned({ exp: now() + 3600 }), /longer than 5 minutes/],
      ['oversized', 'a'.repeat(12_000), /too large/],
      ['garbage', 'not.a.jwt', /invalid/],
    ];
    const before = reached;
    for (const [name, assertion, why] of cases) {
      const r = await send(assertion);
      expect(r, name).not.toBe('reset');
      refused(r, why);
    }
    expect(reached).toBe(before);
    expect(connector.running).toBe(true);
    expect(((await send(await fleetSigned())) as RelayAnswer).status).toBe(200);
  });

  it('a WebSocket upgrade without an assertion is refused the same way', async () => {
    const before = reached;
    const r = await relay.request({ kind: 'websocket', path: '/ws', host: 'app.test', headers: [['Host', 'app.test'], ['Upgrade', 'websocket'], ['Connection', 'Upgrade']] });
    refused(r, /no Tunnel-Access-Jwt-Assertion/);
    expect(reached).toBe(before);
  });
});
