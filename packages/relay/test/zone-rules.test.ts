// The hostname-ownership rules (DESIGN §12) as pure functions: what a zone
// may be, what a route may be, who owns a name, what adoption implies.

import { describe, expect, it } from 'vitest';
import type { Route, Zone } from '../src/store/types.js';
import { checkZoneName, impliedZone, routeVerdict, zoneOwner, zoneVerdict } from '../src/zones/zone-rules.js';

const zone = (z: string, accountId: string): Zone => ({ zone: z, accountId, source: 'operator', createdAt: 0 });
const route = (hostname: string, accountId: string): Route => ({ hostname, accountId, tunnelId: `t-${accountId}`, createdAt: 0 });
const code = (v: { ok: boolean; refusal?: { code: string } }) => (v.ok ? 'ok' : v.refusal!.code);

describe('zone names', () => {
  it('refuses public suffixes, bare TLDs, IP literals, localhost and wildcards', () => {
    for (const bad of ['com', 'test', 'co.uk', 'github.io', 'localhost', '127.0.0.1', '10.0.0.1', '192.168.1', 'example.123']) {
      expect(code(checkZoneName(bad)), bad).toBe('zone_not_allowed');
    }
    expect(code(checkZoneName('*.example.com'))).toBe('invalid_hostname');
    expect(code(checkZoneName('exa mple.com'))).toBe('invalid_hostname');
    expect(code(checkZoneName('-x.example.com'))).toBe('invalid_hostname');
  });

  it('accepts registrable domains and names under them, lower-cased, without a trailing dot', () => {
    expect(checkZoneName('Example.COM.')).toEqual({ ok: true, value: 'example.com' });
    for (const good of ['x.co.uk', 'me.github.io', 'alice.test', 'wild.alice.test', 'demo.localhost']) expect(code(checkZoneName(good)), good).toBe('ok');
  });
});

describe('who may hold a zone', () => {
  const zones = [zone('alice.test', 'alice'), zone('wild.carol.test', 'carol')];
  it('not one held by, inside, or covering another account’s zone', () => {
    expect(code(zoneVerdict('alice.test', 'bob', zones, []))).toBe('zone_owned_by_other_account');
    expect(code(zoneVerdict('x.alice.test', 'bob', zones, []))).toBe('zone_owned_by_other_account');
    expect(code(zoneVerdict('carol.test', 'bob', zones, []))).toBe('zone_owned_by_other_account');
    expect(code(zoneVerdict('bob.test', 'bob', zones, []))).toBe('ok');
    // Its own zones may nest.
    expect(code(zoneVerdict('app.alice.test', 'alice', zones, []))).toBe('ok');
  });
  it('not one covering another account’s routes (routes from before zones)', () => {
    const routes = [route('app.dave.test', 'dave'), route('*.erin.test', 'erin')];
    expect(code(zoneVerdict('dave.test', 'bob', [], routes))).toBe('hostname_routed_by_other_account');
    expect(code(zoneVerdict('x.erin.test', 'bob', [], routes))).toBe('hostname_routed_by_other_account');
    expect(code(zoneVerdict('dave.test', 'dave', [], routes))).toBe('ok');
  });
});

describe('who may route a hostname', () => {
  const zones = [zone('alice.test', 'alice'), zone('wild.alice2.test', 'alice'), zone('bob.test', 'bob')];
  it('the attacks of issue 10 are refused with their reason', () => {
    expect(code(routeVerdict('x.wild.alice2.test', 'bob', zones))).toBe('zone_owned_by_other_account');
    expect(code(routeVerdict('*.alice.test', 'bob', zones))).toBe('zone_owned_by_other_account');
    expect(code(routeVerdict('*.test', 'bob', zones))).toBe('zone_owned_by_other_account');
    expect(code(routeVerdict('com', 'bob', zones))).toBe('hostname_not_in_zone');
    expect(code(routeVerdict('*.com', 'bob', zones))).toBe('hostname_not_in_zone');
    expect(code(routeVerdict('localhost', 'bob', zones))).toBe('hostname_not_in_zone');
    expect(code(routeVerdict('127.0.0.1', 'bob', zones))).toBe('hostname_not_in_zone');
    expect(code(routeVerdict('bad host', 'bob', zones))).toBe('invalid_hostname');
  });
  it('inside a zone the account holds: exact, wildcard and the apex', () => {
    for (const h of ['bob.test', 'app.bob.test', '*.bob.test', '*.a.b.bob.test', 'APP.Bob.Test.']) expect(code(routeVerdict(h, 'bob', zones)), h).toBe('ok');
    expect(routeVerdict('APP.Bob.Test.', 'bob', zones)).toEqual({ ok: true, value: 'app.bob.test' });
    // No zone: nothing routes, not even a name nobody else holds.
    expect(code(routeVerdict('app.free.test', 'bob', zones))).toBe('hostname_not_in_zone');
    // A zone's look-alike is not inside it.
    expect(code(routeVerdict('evilbob.test', 'bob', zones))).toBe('hostname_not_in_zone');
  });
});

describe('zone owner of a name', () => {
  it('is the holder of the most specific zone containing it', () => {
    const map = new Map([zone('alice.test', 'alice'), zone('shop.alice.test', 'shop')].map((z) => [z.zone, z]));
    expect(zoneOwner('alice.test', map)).toBe('alice');
    expect(zoneOwner('a.b.alice.test', map)).toBe('alice');
    expect(zoneOwner('x.shop.alice.test', map)).toBe('shop');
    expect(zoneOwner('xalice.test', map)).toBeUndefined();
    expect(zoneOwner('test', map)).toBeUndefined();
    expect(zoneOwner('a.test', new Map())).toBeUndefined();
  });
});

describe('zones a legacy route implies (zone adopt)', () => {
  it('the registrable domain under a listed suffix, the name itself under an unlisted one, nothing for suffixes and IPs', () => {
    expect(impliedZone('app.example.com')).toBe('example.com');
    expect(impliedZone('*.a.b.example.co.uk')).toBe('example.co.uk');
    expect(impliedZone('me.github.io')).toBe('me.github.io');
    expect(impliedZone('app.alice.test')).toBe('app.alice.test');
    expect(impliedZone('*.wild.alice.test')).toBe('wild.alice.test');
    expect(impliedZone('demo.localhost')).toBe('demo.localhost');
    for (const h of ['*.test', 'com', '*.com', 'localhost', '127.0.0.1', '*.co.uk']) expect(impliedZone(h), h).toBeUndefined();
  });
});
