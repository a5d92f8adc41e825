import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import * as path from 'node:path';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { RELAY_CLI, runCli } from './harness/procs.js';
import { rawConnect } from './harness/raw-client.js';
import { waitFor } from './harness/wait.js';

// Deploy-time claims, each with a request the origin holds so that something
// is really in flight:
//  - SIGTERM on a relay waits for an in-flight request (its listener is
//    closed, its connector sessions got GoAway) and exits once it finished;
//    a client that connected just before the listener closed, and sends its
//    request after, is answered (with Connection: close), not reset;
//  - a second SIGTERM exits the connector at once, in-flight or not;
//  - SIGHUP reloads the ingress even when the file watcher cannot see the
//    change (the config is a symlink swapped to a new target, as Kubernetes
//    ConfigMaps do: the watched file itself never changes).

/** An origin whose /gate/N requests wait until released. */
function gatedOrigin() {
  const held = new Map<string, () => void>();
  return {
    held,
    start: () =>
      startOrigin((q, s) => {
        if (q.url?.startsWith('/gate/')) {
          held.set(q.url, () => s.end(`released ${q.url}`));
          return;
        }
        s.end(`origin ${q.url}`);
      }),
  };
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

describe('drain and signals', () => {
  let fleet: Fleet;
  const gate = gatedOrigin();
  let origin: Origin;
  let other: Origin;

  beforeAll(async () => {
    origin = await gate.start();
    other = await startOrigin((q, s) => s.end(`other ${q.url}`));
    fleet = await startFleet({ relays: 2, relayArgs: ['--drain-timeout', '60s'] });
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
    await other?.close();
  });

  it('relay SIGTERM waits for a request the origin holds, then finishes it and exits (not at the drain timeout); a connection accepted before the listener closed still gets its request served', async () => {
    const c = await fleet.connector({ url: origin.url });
    const relay = fleet.relays[0]!;
    // Connected, no request yet: a drain that ends with it still open resets it.
    const fresh = await rawConnect(relay.http);
    const inflight = req(`${relay.publicUrl}/gate/drain`, { host: fleet.hostname });
    await waitFor(() => gate.held.has('/gate/drain'), 5_000, { message: 'request held at the origin' });
    relay.proc.signal('SIGTERM');
    await relay.proc.waitForLog((l) => l.event === 'draining', 5_000, 'relay draining');
    // Past the drain delay the public listener is closed: the relay is now only waiting.
    await waitFor(() => connectRefused(relay.http), 5_000, { message: 'public listener closed' });
    expect(relay.proc.running).toBe(true);
    expect(relay.proc.countLogs((l) => l.event === 'drained')).toBe(0);
    const released = Date.now();
    gate.held.get('/gate/drain')!();
    const res = await inflight;
    expect(res.status).toBe(200);
    expect(res.text).toBe('released /gate/drain');
    // Nothing else is in flight: the drain now waits (a short grace) only for the fresh connection's request.
    fresh.socket.write(`GET /fresh HTTP/1.1\r\nHost: ${fleet.hostname}\r\n\r\n`);
    const answer = await fresh.done;
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer).toMatch(/\r\nconnection: close\r\n/i);
    expect(answer.endsWith('origin /fresh')).toBe(true);
    const { code } = await relay.proc.exited;
    expect(code).toBe(0);
    expect(Date.now() - released).toBeLessThan(10_000); // not the 60 s drain timeout
    const drained = relay.proc.logs.find((l) => l.event === 'drained');
    expect(drained, 'relay logged drained').toBeDefined();
    await c.stop();
  });

  it('a drain timeout that is not a duration stops `serve` with the flag named (it once meant: wait for nothing)', async () => {
    const r = await runCli(RELAY_CLI, ['serve', '--store', fleet.store, '--keys', fleet.keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off', '--drain-timeout', 'soon'], {}, fleet.dir, 15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('tunnel-relay: --drain-timeout: invalid duration "soon": expected a number followed by a unit (h, m, s or ms), e.g. "30s", "1m30s", "500ms"\n');
  });

  it('a second SIGTERM exits the connector at once, while a request is still held and the grace period has a minute left', async () => {
    const relays = fleet.relays.filter((r) => r.proc.running);
    const c = await fleet.connector({ url: origin.url, relays: relays.map((r) => r.connectUrl), extraArgs: ['--grace-period', '60s', '--no-discover'] });
    const inflight = req(`${relays[0]!.publicUrl}/gate/second`, { host: fleet.hostname }).catch((e: Error) => e);
    await waitFor(() => gate.held.has('/gate/second'), 5_000, { message: 'request held at the origin' });
    c.signal('SIGTERM');
    await c.waitForLog((l) => l.event === 'draining', 5_000, 'connector draining');
    expect(c.running).toBe(true); // the first signal waits for the held request
    const second = Date.now();
    c.signal('SIGTERM');
    const { code } = await Promise.race([c.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('connector still running 5 s after the second SIGTERM')), 5_000))]);
    expect(Date.now() - second).toBeLessThan(2_000);
    expect(code).not.toBe(0); // cut short, not a clean drain
    expect(c.countLogs((l) => l.msg === 'second signal: exiting now' || l.event === 'second-signal')).toBe(1);
    gate.held.get('/gate/second')!();
    await inflight;
  });

  it('SIGHUP reloads the ingress when the file watcher cannot fire (config symlink swapped to a new file)', async () => {
    const dir = path.join(fleet.dir, 'cfg');
    mkdirSync(dir, { recursive: true });
    const relays = fleet.relays.filter((r) => r.proc.running);
    const rules = (url: string) => `ingress:\n  - hostname: ${fleet.hostname}\n    service: ${url}\n  - service: http_status:404\n`;
    writeFileSync(path.join(dir, 'v1.yml'), rules(origin.url));
    writeFileSync(path.join(dir, 'v2.yml'), rules(other.url));
    const link = path.join(dir, 'config.yml');
    symlinkSync('v1.yml', link);
    const c = await fleet.connector({ config: link, relays: relays.map((r) => r.connectUrl), extraArgs: ['--no-discover'] });
    const url = relays[0]!.publicUrl;
    expect((await req(`${url}/x`, { host: fleet.hostname })).text).toBe('origin /x');
    // Swap the link atomically to the new file: v1.yml, the file being watched, is untouched.
    symlinkSync('v2.yml', link + '.new');
    renameSync(link + '.new', link);
    // A request served after the swap still reaches the old origin: nothing reloaded by itself.
    expect((await req(`${url}/y`, { host: fleet.hostname })).text).toBe('origin /y');
    expect(c.countLogs((l) => l.event === 'config-reloaded')).toBe(0);
    c.signal('SIGHUP');
    await c.waitForLog((l) => l.event === 'config-reloaded', 5_000, 'reloaded on SIGHUP');
    expect((await req(`${url}/z`, { host: fleet.hostname })).text).toBe('other /z');
    expect(c.running).toBe(true);
    expect(c.countLogs((l) => l.event === 'lost')).toBe(0);
    await c.stop();
  });
});
