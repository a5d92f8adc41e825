// Every quick-tunnel ceiling (issue 14), hit through real relays and a real
// `tunnel --url` connector, each counted in tunnel_relay_limit_hits_total:
// creations per client IP, live quick tunnels in total, requests per second
// and in flight per tunnel (429 + Retry-After), the request body cap (413),
// the idle expiry; plus the banner header, operator list/kill, and SSE and
// WebSockets through a quick tunnel.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import * as path from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { stopAll, tempDir } from '../harness/procs.js';
import { limitHits, metricsUrl } from '../harness/limit-metrics.js';
import { postQuick, startQuickConnector, startQuickRelays, type QuickFleet } from '../harness/quick.js';

describe('quick tunnels: creation limits', () => {
  let perIp: QuickFleet;
  let total: QuickFleet;

  beforeAll(async () => {
    perIp = await startQuickRelays({ relayArgs: ['--metrics', '127.0.0.1:0', '--max-quick-tunnels-per-ip', '2', '--quick-per-ip-window', '1h', '--max-quick-tunnels', '0'] });
    total = await startQuickRelays({ relayArgs: ['--metrics', '127.0.0.1:0', '--max-quick-tunnels', '2', '--max-quick-tunnels-per-ip', '0'] });
  });
  afterAll(async () => {
    await stopAll();
    perIp?.cleanup();
    total?.cleanup();
  });

  it('creations per client IP: past the limit a 429 with Retry-After, counted', async () => {
    const control = perIp.relays[0]!.controlUrl!;
    for (let i = 0; i < 2; i++) expect((await postQuick(control)).status).toBe(201);
    const refused = await postQuick(control);
    expect(refused.status).toBe(429);
    expect(refused.body.error?.code).toBe('too_many_quick_tunnels');
    expect(Number(refused.retryAfter)).toBeGreaterThan(3000);
    expect((await limitHits(await metricsUrl(perIp.relays[0]!))).quick_tunnels_per_ip).toBe(1);
  });

  it('live quick tunnels in total: past the limit a 429, and room again once one is removed', async () => {
    const control = total.relays[0]!.controlUrl!;
    const first = await postQuick(control);
    expect(first.status).toBe(201);
    expect((await postQuick(control)).status).toBe(201);
    const refused = await postQuick(control);
    expect(refused.status).toBe(429);
    expect(refused.body.error?.code).toBe('quick_tunnels_full');
    expect(refused.retryAfter).toBe('60');
    expect((await limitHits(await metricsUrl(total.relays[0]!))).quick_tunnels).toBe(1);
    const del = await fetch(`${control}/v1/quick`, { method: 'DELETE', headers: { authorization: `Bearer ${first.body.token}` } });
    expect(del.status).toBe(200);
    expect((await postQuick(control)).status).toBe(201);
  });
});

describe('quick tunnels: per-tunnel limits on the public side', () => {
  let fleet: QuickFleet;
  let origin: Origin;
  let wss: WebSocketServer;
  const held: http.ServerResponse[] = [];
  const keyDir = tempDir('tunnel-quick-op-');
  const operatorKey = 'operator-key-for-quick-tests';
  let metrics = '';

  beforeAll(async () => {
    origin = await startOrigin((rq, rs) => {
      if (rq.url === '/hold') return void held.push(rs);
      if (rq.url === '/sse') {
        rs.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        let n = 0;
        const t = setInterval(() => {
          rs.write(`data: tick ${++n}\n\n`);
          if (n === 3) {
            clearInterval(t);
            rs.end();
          }
        }, 50);
        return;
      }
      let bytes = 0;
      rq.on('data', (c: Buffer) => (bytes += c.length));
      rq.on('end', () => rs.end(`got ${bytes}`));
    });
    wss = new WebSocketServer({ server: origin.server, path: '/ws' });
    wss.on('connection', (ws) => ws.on('message', (m, isBinary) => ws.send(m, { binary: isBinary })));
    const keyFile = path.join(keyDir.dir, 'operator.key');
    writeFileSync(keyFile, operatorKey, { mode: 0o600 });
    fleet = await startQuickRelays({
      relayArgs: [
        '--metrics', '127.0.0.1:0',
        '--quick-request-rate', '10',
        '--max-quick-streams', '2',
        '--max-quick-body', '1000',
        '--quick-banner', 'Quick tunnel: anyone may run one',
        '--operator-key-file', keyFile,
        '--max-quick-tunnels-per-ip', '0',
      ],
    });
    metrics = await metricsUrl(fleet.relays[0]!);
  });
  afterAll(async () => {
    for (const r of held.splice(0)) r.end();
    await stopAll();
    wss?.close();
    await origin?.close();
    fleet?.cleanup();
    keyDir.cleanup();
  });

  const pub = () => fleet.relays[0]!.publicUrl;
  const quick = () => startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, url: origin.url, ha: 1 });

  it('requests per second: past the rate a 429 with Retry-After; the banner header on answers', async () => {
    const q = await quick();
    const statuses: number[] = [];
    let limited: Awaited<ReturnType<typeof req>> | undefined;
    for (let i = 0; i < 30 && !limited; i++) {
      const r = await req(`${pub()}/x`, { host: q.hostname });
      statuses.push(r.status);
      if (r.status === 200) expect(r.header('tunnel-quick-notice')).toBe('Quick tunnel: anyone may run one');
      if (r.status === 429) limited = r;
    }
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThan(0);
    expect(limited?.header('tunnel-error')).toBe('quick_rate_limited');
    expect(Number(limited?.header('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await limitHits(metrics)).quick_request_rate).toBeGreaterThanOrEqual(1);
    await q.proc.stop();
  });

  it('requests in flight: a third concurrent request gets a 429 while two are held', async () => {
    const q = await quick();
    const a = req(`${pub()}/hold`, { host: q.hostname });
    const b = req(`${pub()}/hold`, { host: q.hostname });
    await waitFor(() => held.length >= 2, 5_000, { message: 'two requests held at the origin' });
    const third = await req(`${pub()}/x`, { host: q.hostname });
    expect(third.status).toBe(429);
    expect(third.header('tunnel-error')).toBe('quick_too_many_streams');
    expect(third.header('retry-after')).toBe('1');
    for (const r of held.splice(0)) r.end('released');
    expect((await a).status).toBe(200);
    expect((await b).status).toBe(200);
    expect((await req(`${pub()}/x`, { host: q.hostname })).status).toBe(200);
    expect((await limitHits(metrics)).quick_streams).toBe(1);
    await q.proc.stop();
  });

  it('request body cap: a declared or a chunked body over it gets a 413; one under it passes', async () => {
    const q = await quick();
    const ok = await req(`${pub()}/up`, { host: q.hostname, method: 'POST', body: Buffer.alloc(1000, 1) });
    expect(ok.text).toBe('got 1000');
    const declared = await req(`${pub()}/up`, { host: q.hostname, method: 'POST', body: Buffer.alloc(1001, 1) });
    expect(declared.status).toBe(413);
    expect(declared.header('tunnel-error')).toBe('quick_body_too_large');
    const chunked = await new Promise<number>((resolve, reject) => {
      const r = http.request(`${pub()}/up`, { method: 'POST', headers: { host: q.hostname, 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      r.on('error', reject);
      for (let i = 0; i < 4; i++) r.write(Buffer.alloc(600, 2));
      r.end();
    });
    expect(chunked).toBe(413);
    expect((await limitHits(metrics)).quick_body).toBe(2);
    await q.proc.stop();
  });

  it('SSE and WebSockets work through a quick tunnel', async () => {
    const q = await quick();
    const sse = await req(`${pub()}/sse`, { host: q.hostname });
    expect(sse.status).toBe(200);
    expect(sse.text).toBe('data: tick 1\n\ndata: tick 2\n\ndata: tick 3\n\n');
    const ws = new WebSocket(`${pub().replace('http', 'ws')}/ws`, { headers: { host: q.hostname } });
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('ping over a quick tunnel'));
      ws.once('message', (m) => resolve(String(m)));
      ws.once('error', reject);
    });
    expect(echoed).toBe('ping over a quick tunnel');
    ws.close();
    await q.proc.stop();
  });

  it('operators list quick tunnels (age, client IP) and kill one: its connector exits with the reason', async () => {
    const q = await quick();
    const auth = { authorization: `Bearer ${operatorKey}` };
    const control = fleet.relays[0]!.controlUrl!;
    const list = await waitFor(async () => {
      const body = (await (await fetch(`${control}/v1/operator/quick`, { headers: auth })).json()) as { zone: string; quick: Array<{ hostname: string; tunnelId: string; ageSeconds: number; clientIps: string[]; connections: number }> };
      const mine = body.quick.find((t) => t.hostname === q.hostname);
      return mine && mine.connections > 0 ? { body, mine } : null;
    }, 5_000, { message: 'quick tunnel listed with its connection' });
    expect(list.body.zone).toBe('try.test');
    expect(list.mine.clientIps).toEqual(['127.0.0.1']);
    expect(list.mine.ageSeconds).toBeGreaterThanOrEqual(0);
    expect((await fetch(`${control}/v1/operator/quick`)).status).toBe(401);
    const kill = await fetch(`${control}/v1/operator/quick/${q.hostname}`, { method: 'DELETE', headers: auth });
    expect(kill.status).toBe(200);
    const exit = await q.proc.exited;
    // As a named tunnel's connector does when its tunnel is deleted.
    expect(exit.code).toBe(3);
    expect(q.proc.stderr).toMatch(/the relay ended the quick tunnel .*tunnel_deleted/);
    expect((await req(`${pub()}/`, { host: q.hostname })).status).toBe(404);
  });
});

describe('quick tunnels: idle expiry', () => {
  let fleet: QuickFleet;

  beforeAll(async () => {
    fleet = await startQuickRelays({ relayArgs: ['--metrics', '127.0.0.1:0', '--quick-idle-expiry', '1s'] });
  });
  afterAll(async () => {
    await stopAll();
    fleet?.cleanup();
  });

  it('a quick tunnel whose connector vanished (kill -9) is freed after the idle expiry; a live one stays', async () => {
    const live = await startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, ha: 1 });
    const gone = await startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, ha: 1 });
    const pub = fleet.relays[0]!.publicUrl;
    await gone.proc.kill9();
    await waitFor(async () => (await req(`${pub}/`, { host: gone.hostname })).status === 404, 10_000, { message: 'idle quick tunnel freed (404)' });
    // The route goes first, the count once the whole tunnel is deleted.
    const url = await metricsUrl(fleet.relays[0]!);
    await waitFor(async () => (await limitHits(url)).quick_idle_expiry === 1, 5_000, { message: 'quick_idle_expiry counted once' });
    expect((await req(`${pub}/`, { host: live.hostname, headers: { accept: 'application/json' } })).status).toBe(200);
  });
});
