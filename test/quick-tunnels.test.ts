// Quick tunnels end to end (DESIGN §13, issue 14): `tunnel --url` against
// real relays with --quick-zone, a real origin, real sockets.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { CONNECTOR_CLI, Proc, runCli, startRelay, stopAll, tempDir } from './harness/procs.js';
import { postQuick, QUICK_ZONE, startQuickConnector, startQuickRelays, type QuickFleet } from './harness/quick.js';

describe('quick tunnels: tunnel --url publishes a random hostname with no account', () => {
  let fleet: QuickFleet;
  let origin: Origin;
  const home = tempDir('tunnel-quick-home-');
  const held: Array<() => void> = [];

  beforeAll(async () => {
    origin = await startOrigin((rq, rs) => {
      if (rq.url === '/hold') return void held.push(() => rs.end('held'));
      rs.end(`origin ${rq.method} ${rq.url} host=${rq.headers.host}`);
    });
    fleet = await startQuickRelays({ relays: 2, relayArgs: ['--max-quick-tunnels-per-ip', '0', '--max-live-quick-tunnels-per-ip', '0', '--max-quick-tunnels', '0'] });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    fleet?.cleanup();
    home.cleanup();
  });

  it('create → serve on every relay → Ctrl-C → the hostname is 404 within 5 s; nothing written under TUNNEL_HOME', async () => {
    const tunnelHome = path.join(home.dir, 'home');
    const q = await startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, url: origin.url, ha: 4, env: { TUNNEL_HOME: tunnelHome } });
    expect(q.hostname).toMatch(new RegExp(`^[a-z2-7]{16}\\.${QUICK_ZONE.replace('.', '\\.')}$`));
    expect(q.url).toBe(`http://${q.hostname}:${fleet.relays[0]!.http}`);
    // The box, as cloudflared prints it.
    await waitFor(() => q.proc.stderr.includes(`|  ${q.url}`), 5_000, { message: 'URL box' });
    // Connections over both relays, and the hostname answers on each.
    expect(new Set(q.proc.logs.filter((l) => l.event === 'registered').map((l) => l.relayId)).size).toBe(2);
    for (const r of fleet.relays) {
      const res = await req(`${r.publicUrl}/hi?x=1`, { host: q.hostname });
      expect(res.status).toBe(200);
      expect(res.text).toBe(`origin GET /hi?x=1 host=${q.hostname}`);
    }
    q.proc.signal('SIGINT');
    const t0 = Date.now();
    await waitFor(async () => (await req(`${fleet.relays[1]!.publicUrl}/`, { host: q.hostname })).status === 404, 5_000, { message: 'hostname gone (404)' });
    expect(Date.now() - t0).toBeLessThan(5_000);
    const exit = await q.proc.exited;
    expect(exit.code).toBe(0);
    expect(q.proc.logs.some((l) => l.event === 'quick-removed')).toBe(true);
    // No login, no credentials file: TUNNEL_HOME is never created.
    expect(existsSync(tunnelHome) ? readdirSync(tunnelHome) : []).toEqual([]);
  });

  it('a closed terminal (SIGHUP, and again when its shell exits) stops it once: the request in flight is answered, the tunnel removed, exit 0', async () => {
    const q = await startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, url: origin.url, ha: 2 });
    const before = held.length;
    const answered = req(`${fleet.relays[0]!.publicUrl}/hold`, { host: q.hostname });
    await waitFor(() => held.length > before, 10_000, { message: 'the origin holds the request' });
    q.proc.signal('SIGHUP');
    await q.proc.waitForLog((l) => l.event === 'draining', 5_000, 'draining on the hang-up');
    q.proc.signal('SIGHUP');
    await waitFor(() => q.proc.logs.some((l) => /hang-up again|second signal/.test(String(l.msg))) || !q.proc.running, 5_000, { message: 'the second SIGHUP handled' });
    while (held.length > 0) held.shift()!();
    expect((await answered).text).toBe('held');
    const exit = await q.proc.exited;
    expect(exit.code, q.proc.stderr).toBe(0);
    expect(q.proc.logs.some((l) => l.event === 'quick-removed')).toBe(true);
  });

  it('tunnel --hello-world serves the built-in page; --relay takes any of the relay\'s URLs (/.well-known/tunnel-relay names the control API)', async () => {
    const q = await startQuickConnector({ relay: fleet.relays[1]!.publicUrl });
    const res = await req(`${fleet.relays[1]!.publicUrl}/`, { host: q.hostname, headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    expect(res.json<{ hello: string; host: string }>()).toMatchObject({ hello: 'world', host: q.hostname });
    await q.proc.stop();
  });

  it('two quick tunnels never get the same name: 1,000 creations, 1,000 distinct hostnames', async () => {
    const control = fleet.relays[0]!.controlUrl!;
    const names = new Set<string>();
    const deadline = Date.now() + 240_000;
    for (let batch = 0; batch < 100; batch++) {
      const got = await Promise.all(Array.from({ length: 10 }, () => postQuick(control)));
      for (const g of got) {
        expect(g.status).toBe(201);
        names.add(g.body.hostname);
      }
      expect(Date.now()).toBeLessThan(deadline);
    }
    expect(names.size).toBe(1000);
    for (const n of names) expect(n).toMatch(/^[a-z2-7]{16}\.try\.test$/);
  }, 300_000);

  it('the URL of `tunnel --url` on a relay without --quick-zone: a clear refusal, exit non-zero', async () => {
    const off = await startRelay({ dir: fleet.dir, store: `file:${path.join(fleet.dir, 'store-off')}`, keys: fleet.keys, id: 'relay-off' });
    const r = await runCli(CONNECTOR_CLI, ['--url', origin.url, '--relay', off.controlUrl!], { TUNNEL_HOME: path.join(home.dir, 'off') });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/does not offer quick tunnels.*--quick-zone.*\(quick_disabled\)/s);
    await off.proc.stop();
  });

  it('no relay given: the bare `tunnel --url` says how to name one', async () => {
    const r = await runCli(CONNECTOR_CLI, ['--url', origin.url], { TUNNEL_HOME: path.join(home.dir, 'none'), TUNNEL_QUICK_RELAY: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no relay to ask for a quick tunnel: pass --relay/);
  });

  it('TUNNEL_QUICK_RELAY makes the bare `tunnel --url URL` work; `tunnel run --url` is still the named path', async () => {
    // --relay wins over the environment: the unreachable one is asked.
    const wins = await runCli(CONNECTOR_CLI, ['--url', origin.url, '--relay', 'http://127.0.0.1:1'], { TUNNEL_QUICK_RELAY: fleet.relays[0]!.controlUrl!, TUNNEL_HOME: path.join(home.dir, 'env') });
    expect(wins.code).toBe(1);
    expect(wins.stderr).toMatch(/cannot reach the control API at http:\/\/127\.0\.0\.1:1/);
    // Until it says it is up (however long a loaded machine takes), then Ctrl-C.
    const viaEnv = new Proc('quick-env', process.execPath, [CONNECTOR_CLI, '--hello-world', '--ha-connections', '1', '--log-format', 'json'], { TUNNEL_QUICK_RELAY: fleet.relays[0]!.controlUrl!, TUNNEL_HOME: path.join(home.dir, 'env') });
    await viaEnv.waitForLog((l) => l.event === 'quick-tunnel', 30_000, 'quick tunnel up through TUNNEL_QUICK_RELAY');
    await viaEnv.stop();
    const named = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url], { TUNNEL_HOME: path.join(home.dir, 'named') });
    expect(named.code).not.toBe(0);
    expect(named.stderr).not.toMatch(/quick/);
  });
});
