import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';
import type { Proc } from './harness/procs.js';
import { parsePromText, sumOf, type PromFamily } from './harness/prom-text.js';

// Both binaries' /metrics during a real run: the text parses strictly, and
// the request counters and histograms move by exactly the requests made.

async function scrape(url: string): Promise<{ fams: Map<string, PromFamily>; contentType: string }> {
  const r = await request(url);
  const text = await r.body.text();
  expect(r.statusCode).toBe(200);
  return { fams: parsePromText(text), contentType: String(r.headers['content-type']) };
}

describe('metrics: relay and connector /metrics', () => {
  let fleet: Fleet;
  let origin: Origin;
  let connector: Proc;
  let relayMetrics: string[];
  let connectorMetrics: string;
  let tunnelId: string;

  beforeAll(async () => {
    origin = await startOrigin((q, s) => {
      if (q.url?.startsWith('/missing')) {
        s.statusCode = 404;
        return s.end('no such page');
      }
      s.end(`ok ${q.url}`);
    });
    fleet = await startFleet({ relays: 2, relayArgs: ['--metrics', '127.0.0.1:0'] });
    relayMetrics = await Promise.all(
      fleet.relays.map(async (r) => {
        const l = await r.proc.waitForLog((x) => x.event === 'metrics-listening', 10_000);
        return `http://127.0.0.1:${l.port as number}/metrics`;
      }),
    );
    connector = await fleet.connector({ url: origin.url, extraArgs: ['--metrics', '127.0.0.1:0'] });
    const l = await connector.waitForLog((x) => x.event === 'metrics');
    connectorMetrics = `http://127.0.0.1:${l.port as number}/metrics`;
    const info = (await scrape(connectorMetrics)).fams.get('tunnel_info')!;
    tunnelId = info.samples[0]!.labels.tunnel!;
    // Presence reaches the store before the test counts connections.
    await waitFor(async () => {
      const all = await Promise.all(relayMetrics.map((u) => scrape(u)));
      return all.reduce((n, s) => n + sumOf(s.fams, 'tunnel_relay_connector_connections', { state: 'active' }), 0) === 4;
    }, 10_000);
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  it('the exposition checker is strict (it would catch a malformed scrape)', () => {
    const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 3\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1.5\nh_count 2\n';
    expect(sumOf(parsePromText(ok), 'a_total', { x: '1' })).toBe(3);
    for (const bad of [
      'a_total 1', // no final newline
      'a total 1\n', // name with a space
      'a{x="1} 1\n', // unterminated label value
      'a{x="\\q"} 1\n', // bad escape
      'a{1x="1"} 1\n', // bad label name
      'a 1 2 3\n', // extra fields
      'a one\n', // bad value
      '# TYPE a counter\na 1\na 2\n', // series repeated
      '# TYPE a counter\na -1\n', // negative counter
      '# TYPE a counter\na 1\n# TYPE b gauge\nb 1\n# TYPE a counter\n', // family not contiguous
      '# TYPE h histogram\nh 1\n', // sample not of its family's type
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n', // not cumulative
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\n', // no +Inf bucket
      '# TYPE a countr\n', // bad type
    ]) {
      expect(() => parsePromText(bad), JSON.stringify(bad)).toThrow();
    }
  });

  it('serves Prometheus text that parses strictly, with every documented family', async () => {
    const relay = await scrape(relayMetrics[0]!);
    expect(relay.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of [
      'tunnel_relay_info',
      'tunnel_relay_connector_connections',
      'tunnel_relay_tunnels_connected',
      'tunnel_relay_active_streams',
      'tunnel_relay_public_requests_in_flight',
      'tunnel_relay_connector_registrations_total',
      'tunnel_relay_connector_disconnects_total',
      'tunnel_relay_requests_total',
      'tunnel_relay_request_duration_seconds',
      'tunnel_relay_bytes_total',
      'tunnel_relay_forwarded_requests_total',
      'tunnel_relay_store_errors_total',
      'process_cpu_user_seconds_total',
      'nodejs_eventloop_lag_seconds',
    ]) {
      expect(relay.fams.has(name), name).toBe(true);
    }
    expect(relay.fams.get('tunnel_relay_request_duration_seconds')!.type).toBe('histogram');
    expect(relay.fams.get('tunnel_relay_requests_total')!.type).toBe('counter');

    const conn = await scrape(connectorMetrics);
    for (const name of [
      'tunnel_info',
      'tunnel_ha_connections',
      'tunnel_connections',
      'tunnel_active_streams',
      'tunnel_requests_total',
      'tunnel_origin_response_seconds',
      'tunnel_bytes_total',
      'tunnel_reconnects_total',
      'tunnel_connection_events_total',
    ]) {
      expect(conn.fams.has(name), name).toBe(true);
    }
    expect(sumOf(conn.fams, 'tunnel_ha_connections')).toBe(4);
    expect(sumOf(conn.fams, 'tunnel_connections', { state: 'registered' })).toBe(4);
    expect(sumOf(conn.fams, 'tunnel_connection_events_total', { event: 'registered' })).toBe(4);
    // Two relays, each holding its share of the four connections.
    const relaysSeen = conn.fams.get('tunnel_connections')!.samples.filter((s) => s.value > 0).map((s) => s.labels.relay);
    expect(new Set(relaysSeen)).toEqual(new Set(fleet.relays.map((r) => r.id)));
  });

  it('request counters and histograms move by exactly the requests made', async () => {
    const before = await Promise.all([...relayMetrics, connectorMetrics].map((u) => scrape(u)));
    const relayBefore = before.slice(0, 2).map((s) => s.fams);
    const connBefore = before[2]!.fams;
    const sumRelays = (fams: Array<Map<string, PromFamily>>, fam: string, match: Record<string, string> = {}, sample?: string) =>
      fams.reduce((n, f) => n + sumOf(f, fam, match, sample), 0);

    const OK = 20;
    const NOT_FOUND = 6;
    const UNROUTED = 3;
    const results = await Promise.all([
      ...Array.from({ length: OK }, (_, i) => req(`${fleet.relays[i % 2]!.publicUrl}/ok/${i}`, { host: fleet.hostname })),
      ...Array.from({ length: NOT_FOUND }, (_, i) => req(`${fleet.relays[i % 2]!.publicUrl}/missing/${i}`, { host: fleet.hostname })),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual([...Array(OK).fill(200), ...Array(NOT_FOUND).fill(404)]);
    for (let i = 0; i < UNROUTED; i++) expect((await req(`${fleet.relays[0]!.publicUrl}/`, { host: 'nobody.test' })).status).toBe(404);

    const delta = async () => {
      const now = await Promise.all([...relayMetrics, connectorMetrics].map((u) => scrape(u)));
      const r = now.slice(0, 2).map((s) => s.fams);
      const c = now[2]!.fams;
      const d = (fam: string, match: Record<string, string> = {}, sample?: string) => sumRelays(r, fam, match, sample) - sumRelays(relayBefore, fam, match, sample);
      const dc = (fam: string, match: Record<string, string> = {}, sample?: string) => sumOf(c, fam, match, sample) - sumOf(connBefore, fam, match, sample);
      return {
        relay2xx: d('tunnel_relay_requests_total', { tunnel: tunnelId, status_class: '2xx' }),
        relay4xx: d('tunnel_relay_requests_total', { tunnel: tunnelId, status_class: '4xx' }),
        relayUnrouted: d('tunnel_relay_requests_total', { tunnel: '', status_class: '4xx' }),
        relayHist: d('tunnel_relay_request_duration_seconds', {}, 'tunnel_relay_request_duration_seconds_count'),
        relayBytesIn: d('tunnel_relay_bytes_total', { side: 'public', direction: 'in' }),
        conn2xx: dc('tunnel_requests_total', { tunnel: tunnelId, status_class: '2xx' }),
        conn4xx: dc('tunnel_requests_total', { tunnel: tunnelId, status_class: '4xx' }),
        connHist: dc('tunnel_origin_response_seconds', {}, 'tunnel_origin_response_seconds_count'),
        connBytesIn: dc('tunnel_bytes_total', { direction: 'in' }),
        forwarded: d('tunnel_relay_forwarded_requests_total'),
      };
    };
    const want = OK + NOT_FOUND + UNROUTED;
    const got = await waitFor(async () => {
      const x = await delta();
      return x.relayHist >= want && x.connHist >= OK + NOT_FOUND ? x : null;
    }, 5_000, { message: 'request metrics to move' });
    expect(got.relay2xx).toBe(OK);
    expect(got.relay4xx).toBe(NOT_FOUND);
    expect(got.relayUnrouted).toBe(UNROUTED);
    expect(got.relayHist).toBe(want);
    expect(got.conn2xx).toBe(OK);
    expect(got.conn4xx).toBe(NOT_FOUND);
    expect(got.connHist).toBe(OK + NOT_FOUND);
    expect(got.forwarded).toBe(0); // both relays hold connections: nothing to forward
    expect(got.relayBytesIn).toBeGreaterThan(want * 40);
    expect(got.connBytesIn).toBeGreaterThan((OK + NOT_FOUND) * 40);
    // Nothing left in flight once every response is read.
    const after = await Promise.all(relayMetrics.map((u) => scrape(u)));
    expect(after.reduce((n, s) => n + sumOf(s.fams, 'tunnel_relay_active_streams'), 0)).toBe(0);
  });

  it('counts reconnects and disconnects by reason when a relay goes away', async () => {
    const victim = fleet.relays[1]!;
    await victim.proc.kill9();
    const conn = await waitFor(async () => {
      const s = await scrape(connectorMetrics);
      return sumOf(s.fams, 'tunnel_connection_events_total', { event: 'lost' }) >= 2 && sumOf(s.fams, 'tunnel_ha_connections') === 4 ? s : null;
    }, 15_000, { message: 'connector back to four connections' });
    expect(sumOf(conn.fams, 'tunnel_reconnects_total', { reason: 'network' })).toBeGreaterThanOrEqual(2);
    expect(sumOf(conn.fams, 'tunnel_connections', { relay: fleet.relays[0]!.id, state: 'registered' })).toBe(4);
    const relay = await scrape(relayMetrics[0]!);
    expect(sumOf(relay.fams, 'tunnel_relay_connector_registrations_total')).toBeGreaterThanOrEqual(4);
    expect(sumOf(relay.fams, 'tunnel_relay_connector_connections', { state: 'active' })).toBe(4);
  });
});
