import { describe, expect, it } from 'vitest';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { generateSigningKeyPair } from '@tunnel/protocol';
import { AccessKeys } from '../src/access/signing-keys.js';
import { AssertionSigner } from '../src/access/assertion.js';
import { policyPath, underPrefix } from '../src/access/policy-table.js';
import { loopbackCallback, safeReturnPath } from '../src/access/access-gate.js';
import { CookieSealer } from '../src/access/session-cookie.js';

describe('Access keys: derived from the fleet secret, rotating with overlap', () => {
  const secret = generateSigningKeyPair().secretKey;
  const day = 1000;

  it('every relay derives the same keys; another fleet derives others', () => {
    const t = () => 5_500;
    expect(new AccessKeys(secret, day, t).jwks()).toEqual(new AccessKeys(secret, day, t).jwks());
    expect(new AccessKeys(generateSigningKeyPair().secretKey, day, t).current().kid).not.toBe(new AccessKeys(secret, day, t).current().kid);
  });

  it('an assertion signed before the epoch turns still verifies after it; the next key is published ahead', async () => {
    let now = 5_900;
    const keys = new AccessKeys(secret, day, () => now);
    const jwt = await new AssertionSigner(keys, 'urn:test', 300).sign({ kind: 'service-token', clientId: 'c', name: 'ci' }, 'aud', 'app.test');
    const before = keys.jwks();
    const next = before.keys[2]!.kid;
    now = 6_100; // the next epoch
    expect(keys.current().kid).toBe(next);
    await jwtVerify(jwt, createLocalJWKSet(keys.jwks()), { audience: 'aud', currentDate: new Date() });
    now = 8_100; // two epochs later: the old key is gone
    await expect(jwtVerify(jwt, createLocalJWKSet(keys.jwks()), { audience: 'aud' })).rejects.toThrow();
  });

  it('a sealed session opens only on its own hostname, and not at all once tampered with', async () => {
    const sealer = new CookieSealer(new AccessKeys(secret).cookieKey);
    const c = await sealer.sealSession({ host: 'app.test', accountId: 'a', sub: 's', email: 'e@x.test', emailVerified: true, groups: ['g'] }, 60);
    expect((await sealer.openSession(c, 'app.test'))?.email).toBe('e@x.test');
    expect(await sealer.openSession(c, 'other.test')).toBeNull();
    const flipped = c.slice(0, -5) + (c.at(-5) === 'A' ? 'B' : 'A') + c.slice(-4);
    expect(await sealer.openSession(flipped, 'app.test')).toBeNull();
    expect(await new CookieSealer(new AccessKeys(generateSigningKeyPair().secretKey).cookieKey).openSession(c, 'app.test')).toBeNull();
    // A login transaction is not a session.
    expect(await sealer.openSession(await sealer.sealLogin({ host: 'app.test', accountId: 'a', state: 's', nonce: 'n', verifier: 'v', returnTo: '/' }), 'app.test')).toBeNull();
  });
});

describe('Access paths', () => {
  it('policy paths are matched after decoding, dot segments and repeated slashes', () => {
    expect(policyPath('/%61dmin/x?y=1')).toBe('/admin/x');
    expect(policyPath('/public/../admin')).toBe('/admin');
    expect(policyPath('//admin')).toBe('/admin');
    expect(policyPath('/a\\..\\admin')).toBe('/admin');
    expect(underPrefix('/admin', '/admin')).toBe(true);
    expect(underPrefix('/admin/x', '/admin')).toBe(true);
    expect(underPrefix('/administrator', '/admin')).toBe(false);
    expect(underPrefix('/anything', '/')).toBe(true);
  });

  it('a login returns only to a path on the same host', () => {
    expect(safeReturnPath('/app?x=1')).toBe('/app?x=1');
    expect(loopbackCallback('http://127.0.0.1:5555/x?y=1')?.href).toBe('http://127.0.0.1:5555/');
    expect(loopbackCallback('http://localhost:5555/')?.href).toBe('http://localhost:5555/');
    for (const evil of ['http://evil.test:5555/', 'http://127.0.0.1.evil.test:5555/', 'https://127.0.0.1:5555/', 'http://127.0.0.1/', 'http://u:p@127.0.0.1:5555/', 'javascript:alert(1)', '']) {
      expect(loopbackCallback(evil), evil).toBeNull();
    }
    for (const evil of ['//evil.test/x', '/\\evil.test', 'https://evil.test/', 'evil.test', '/\r\nSet-Cookie: x', '/.tunnel/access/callback?code=1']) expect(safeReturnPath(evil)).toBe('/');
  });
});
