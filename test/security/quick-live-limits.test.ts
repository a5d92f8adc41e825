// Quick tunnels' ceilings on what is live at once (issue 14), on a Redis
// fleet of two relays: live quick tunnels per client IP counted fleet-wide
// (a 429 with Retry-After and the reason, printed by `tunnel --url`; closing
// one frees a slot), and requests in flight to all quick tunnels together on
// one relay (a 503 with Retry-After). Each is counted in /metrics.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type http from 'node:http';
import { startRedis } from '../harness/redis.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { CONNECTOR_CLI, runCli, stopAll } from '../harness/procs.js';
import { limitHits, metricsUrl, scrape } from '../harness/limit-metrics.js';
import { postQuick, startQuickConnector, startQuickRelays, type QuickConnector, type QuickFleet } from '../harness/quick.js';

const redis = await startRedis();

describe.skipIf(!redis)('quick tunnels: live ceilings on a Redis fleet', () => {
  let fleet: QuickFleet;
  let origin: Origin;
  const held: http.ServerResponse[] = [];
  let a: QuickConnector;
  let b: QuickConnector;
  let metricsA = '';
  let metricsB = '';

  beforeAll(async () => {
    origin = await startOrigin((rq, rs) => {
      if (rq.url === '/hold') return void held.push(rs);
      rs.end('ok');
    });
    fleet = await startQuickRelays({
      relays: 2,
      store: `${redis!.url}/?prefix=quick-live:`,
      relayArgs: ['--metrics', '127.0.0.1:0', '--max-live-quick-tunnels-per-ip', '2', '--max-quick-tunnels-per-ip', '0', '--max-quick-streams-total', '2', '--max-quick-streams', '0', '--quick-request-rate', '0'],
    });
    metricsA = await metricsUrl(fleet.relays[0]!);
    metricsB = await metricsUrl(fleet.relays[1]!);
    // One quick tunnel made through each relay, from the same address.
    a = await startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, url: origin.url, ha: 1 });
    b = await startQuickConnector({ relay: fleet.relays[1]!.controlUrl!, url: origin.url, ha: 1 });
  });
  afterAll(async () => {
    for (const r of held.splice(0)) r.end();
    await stopAll();
    await origin?.close();
    await redis?.stop();
    fleet?.cleanup();
  });

  it('requests in flight to all quick tunnels on one relay: past the ceiling a 503 with Retry-After, whichever tunnel; room again once one ends', async () => {
    const pub = fleet.relays[0]!.publicUrl;
    const first = req(`${pub}/hold`, { host: a.hostname });
    const second = req(`${pub}/hold`, { host: b.hostname });
    await waitFor(() => held.length >= 2, 5_000, { message: 'two requests held at the origin' });
    expect((await scrape(metricsA, 'tunnel_relay_quick_requests_in_flight')).get('')).toBe(2);
    for (const host of [a.hostname, b.hostname]) {
      const busy = await req(`${pub}/x`, { host });
      expect(busy.status).toBe(503);
      expect(busy.header('tunnel-error')).toBe('quick_relay_busy');
      expect(busy.header('retry-after')).toBe('1');
    }
    // The other relay has its own ceiling: nothing is in flight there.
    expect((await req(`${fleet.relays[1]!.publicUrl}/x`, { host: a.hostname })).status).toBe(200);
    // One ends (whichever the origin got first): a slot is free again.
    held.shift()!.end('released');
    await waitFor(async () => (await scrape(metricsA, 'tunnel_relay_quick_requests_in_flight')).get('') === 1, 5_000, { message: 'one request in flight' });
    expect((await req(`${pub}/x`, { host: a.hostname })).status).toBe(200);
    held.shift()!.end('released');
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
    expect((await limitHits(metricsA)).quick_streams_total).toBe(2);
  });

  it('live quick tunnels per client IP, fleet-wide: a third from the same address is refused on either relay; Ctrl-C on one frees a slot', async () => {
    // a was made through relay A, b through relay B: relay B counts both.
    const refused = await postQuick(fleet.relays[1]!.controlUrl!);
    expect(refused.status).toBe(429);
    expect(refused.body.error?.code).toBe('too_many_live_quick_tunnels');
    expect(refused.retryAfter).toBe('30');
    expect((await limitHits(metricsB)).quick_live_per_ip).toBe(1);
    // The connector says why and exits non-zero.
    const cli = await runCli(CONNECTOR_CLI, ['--url', origin.url, '--relay', fleet.relays[0]!.controlUrl!], { TUNNEL_HOME: `${fleet.dir}/cli-home` });
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/already runs 2 live quick tunnels.*stop one.*too_many_live_quick_tunnels/s);
    expect((await limitHits(metricsA)).quick_live_per_ip).toBe(1);
    // The live count is in /metrics too.
    expect((await scrape(metricsA, 'tunnel_relay_quick_tunnel_records')).get('state=live')).toBe(2);
    a.proc.signal('SIGINT');
    expect((await a.proc.exited).code).toBe(0);
    const again = await postQuick(fleet.relays[1]!.controlUrl!);
    expect(again.status).toBe(201);
  });
});
