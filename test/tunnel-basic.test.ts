import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';
import { runCli, createTunnel, startConnector, CONNECTOR_CLI, type Proc } from './harness/procs.js';
import { req } from './harness/http.js';

describe('tunnel: two relays, one connector, four connections', () => {
  let fleet: Fleet;
  let origin: Origin;
  let connector: Proc;

  beforeAll(async () => {
    origin = await startOrigin((req, res) => {
      res.setHeader('x-seen-host', req.headers.host ?? '');
      res.setHeader('x-seen-xff', String(req.headers['x-forwarded-for'] ?? ''));
      res.setHeader('x-seen-proto', String(req.headers['x-forwarded-proto'] ?? ''));
      res.setHeader('x-seen-fwd-host', String(req.headers['x-forwarded-host'] ?? ''));
      res.setHeader('x-seen-cip', String(req.headers['tunnel-connecting-ip'] ?? ''));
      res.setHeader('x-seen-rid', String(req.headers['tunnel-request-id'] ?? ''));
      res.end(`hello ${req.method} ${req.url}`);
    });
    fleet = await startFleet({ relays: 2 });
    connector = await fleet.connector({ url: origin.url });
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  it('spreads four connections over both relays', async () => {
    const regs = connector.logs.filter((l) => l.event === 'registered');
    expect(regs).toHaveLength(4);
    expect(new Set(regs.map((l) => l.relayId)).size).toBe(2);
  });

  it('serves a request through each relay with forwarding headers', async () => {
    for (const r of fleet.relays) {
      const res = await req(`${r.publicUrl}/path?q=1`, { host: fleet.hostname, headers: { 'x-forwarded-for': '10.9.8.7' } });
      expect(res.status).toBe(200);
      expect(res.text).toBe('hello GET /path?q=1');
      const rid = res.header('tunnel-request-id');
      expect(rid).toMatch(/^[0-9a-f]{21}$/);
      expect(res.header('x-seen-rid')).toBe(rid);
      expect(res.header('x-seen-host')).toBe(fleet.hostname);
      expect(res.header('x-seen-xff')).toBe('10.9.8.7, 127.0.0.1');
      expect(res.header('x-seen-proto')).toBe('http');
      expect(res.header('x-seen-fwd-host')).toBe(fleet.hostname);
      expect(res.header('x-seen-cip')).toBe('127.0.0.1');
    }
  });

  it('answers 404 for an unknown hostname, as JSON or HTML', async () => {
    const r = fleet.relays[0]!;
    const j = await req(r.publicUrl, { host: 'nope.test', headers: { accept: 'application/json' } });
    expect(j.status).toBe(404);
    expect(j.header('tunnel-error')).toBe('unknown_hostname');
    expect(j.json<{ error: { code: string } }>().error.code).toBe('unknown_hostname');
    const h = await req(r.publicUrl, { host: 'nope.test', headers: { accept: 'text/html' } });
    expect(h.header('content-type')).toContain('text/html');
    expect(h.text).toContain('<h1>404');
  });

  it('answers 502 origin_refused (source: origin) when the origin is down', async () => {
    const dead = await startOrigin((_q, s) => s.end());
    await dead.close();
    const token = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'dead', hostnames: ['dead.test'] });
    const c2 = await startConnector({ token, relays: fleet.relays.map((r) => r.connectUrl), url: dead.url, ha: 2 });
    const res = await waitFor(async () => {
      const r = await req(`${fleet.relays[0]!.publicUrl}/x`, { host: 'dead.test', headers: { accept: 'application/json' } });
      return r.status === 404 ? null : r; // the new route reaches every relay within a second
    }, 5_000);
    expect(res.status).toBe(502);
    expect(res.header('tunnel-error')).toBe('origin_refused');
    expect(res.header('tunnel-error-source')).toBe('origin');
    expect(res.json<{ error: { source: string } }>().error.source).toBe('origin');
    await c2.stop();
    const off = await req(`${fleet.relays[1]!.publicUrl}/x`, { host: 'dead.test', headers: { accept: 'application/json' } });
    expect(off.status).toBe(530);
    expect(off.header('tunnel-error')).toBe('tunnel_offline');
  });

  it('refuses a tampered credential before the upgrade, and exits non-zero', async () => {
    const bad = fleet.token.slice(0, -4) + (fleet.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const r = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url, '--relay', fleet.relays[0]!.connectUrl, '--log-format', 'json'], { TUNNEL_TOKEN: bad });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid_credential/);
  });
});
