import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { startConnector, startRelay, type Proc, type RelayProc } from './harness/procs.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { parsePromText } from './harness/prom-text.js';

// What cloudflared users complain about: the credential in `ps`, config
// reloads that drop traffic, and tunnels that never come back after an outage.

describe('connector resilience', () => {
  let fleet: Fleet;
  let a: Origin;
  let b: Origin;
  let slowRelease: (() => void) | null = null;

  beforeAll(async () => {
    a = await startOrigin((q, s) => {
      if (q.url === '/slow') {
        slowRelease = () => s.end('slow done');
        return;
      }
      s.end('from A');
    });
    b = await startOrigin((_q, s) => s.end('from B'));
    fleet = await startFleet({ relays: 2 });
  });
  afterAll(async () => {
    await fleet?.close();
    await a?.close();
    await b?.close();
  });

  it('reads the credential from --token-file, so it never shows in ps', async () => {
    const file = path.join(fleet.dir, 'token');
    writeFileSync(file, fleet.token + '\n', { mode: 0o600 });
    const c = await startConnector({ token: '', relays: fleet.relays.map((r) => r.connectUrl), url: a.url, extraArgs: ['--token-file', file], env: { TUNNEL_TOKEN: '' } });
    const cmdline = readFileSync(`/proc/${c.pid}/cmdline`, 'utf8');
    expect(cmdline).not.toContain(fleet.token.split('.')[1]!);
    const r = await req(`${fleet.relays[0]!.publicUrl}/`, { host: fleet.hostname });
    expect(r.text).toBe('from A');
    await c.stop();
  });

  it('reloads ingress on file change and SIGHUP without dropping a connection or an in-flight request; rejects a bad config', async () => {
    const cfg = path.join(fleet.dir, 'config.yml');
    const write = (text: string) => {
      // Editors replace the file: write aside, then rename over it.
      writeFileSync(cfg + '.tmp', text);
      renameSync(cfg + '.tmp', cfg);
    };
    write(`ingress:\n  - hostname: ${fleet.hostname}\n    service: ${a.url}\n  - service: http_status:404\n`);
    const c = await startConnector({ token: fleet.token, relays: fleet.relays.map((r) => r.connectUrl), config: cfg });
    const url = `${fleet.relays[0]!.publicUrl}`;
    expect((await req(`${url}/`, { host: fleet.hostname })).text).toBe('from A');

    // A request in flight across the reload.
    const inflight = req(`${url}/slow`, { host: fleet.hostname });
    await waitFor(() => slowRelease !== null, 5_000);

    write(`ingress:\n  - hostname: ${fleet.hostname}\n    service: ${b.url}\n  - service: http_status:404\n`);
    await waitFor(async () => (await req(`${url}/`, { host: fleet.hostname })).text === 'from B', 5_000, { message: 'new ingress served' });
    slowRelease!();
    expect((await inflight).text).toBe('slow done');

    // An invalid config is refused with its error; the running rules stay.
    write(`ingress:\n  - hostname: ${fleet.hostname}\n    service: htp://nope\n`);
    const rejected = await c.waitForLog((l) => l.event === 'config-rejected');
    expect(String(rejected.err)).toMatch(/config\.yml:3:\d+: .*unknown service scheme/);
    expect((await req(`${url}/`, { host: fleet.hostname })).text).toBe('from B');

    // SIGHUP reloads too.
    writeFileSync(cfg, `ingress:\n  - hostname: ${fleet.hostname}\n    service: ${a.url}\n  - service: http_status:404\n`);
    c.signal('SIGHUP');
    await waitFor(async () => (await req(`${url}/`, { host: fleet.hostname })).text === 'from A', 5_000);

    expect(c.countLogs((l) => l.event === 'lost')).toBe(0);
    expect(c.countLogs((l) => l.event === 'registered')).toBe(4);
    await c.stop();
  });

  it('SIGTERM drains: an in-flight request finishes, then the connector exits at once, well inside the grace period', async () => {
    const c = await startConnector({ token: fleet.token, relays: fleet.relays.map((r) => r.connectUrl), url: a.url, extraArgs: ['--grace-period', '60s'] });
    slowRelease = null;
    const inflight = req(`${fleet.relays[0]!.publicUrl}/slow`, { host: fleet.hostname });
    await waitFor(() => slowRelease !== null, 5_000, { message: 'slow request at the origin' });
    c.signal('SIGTERM');
    await c.waitForLog((l) => l.event === 'draining', 5_000, 'connector draining');
    // The three idle connections leave; the busy one waits for its request.
    await waitFor(() => c.countLogs((l) => l.event === 'drained') >= 3, 10_000, { message: 'idle connections drained' });
    expect(c.running).toBe(true);
    const released = Date.now();
    slowRelease!();
    expect((await inflight).text).toBe('slow done');
    const { code } = await c.exited;
    expect(code).toBe(0);
    expect(Date.now() - released).toBeLessThan(5_000); // not the 60 s grace period
  });

  it('with one relay left, keeps all four connections on it and warns once; spreads again when the other returns', async () => {
    // --no-discover: the relay list stays as given, so the dead relay keeps
    // being retried (discovery would drop it once its membership expires).
    const c = await startConnector({ token: fleet.token, relays: fleet.relays.map((r) => r.connectUrl), url: a.url, extraArgs: ['--metrics', '127.0.0.1:0', '--no-discover'] });
    const port = (await c.waitForLog((l) => l.event === 'metrics')).port as number;
    const byRelay = async (): Promise<Map<string, number>> => {
      const fams = parsePromText(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
      const m = new Map<string, number>();
      for (const s of fams.get('tunnel_connections')?.samples ?? []) if (s.labels.state === 'registered' && s.value > 0) m.set(s.labels.relay!, s.value);
      return m;
    };
    const [keep, victim] = [fleet.relays[0]!, fleet.relays[1]!];
    await waitFor(async () => (await byRelay()).size === 2, 10_000, { message: 'connections over both relays' });
    const warnings = () => c.countLogs((l) => l.event === 'single-relay');
    expect(warnings()).toBe(0);

    await victim.proc.kill9();
    await waitFor(async () => {
      const m = await byRelay();
      return m.size === 1 && m.get(keep.id) === 4;
    }, 10_000, { message: `all four connections on ${keep.id}` });
    const warn = await c.waitForLog((l) => l.event === 'single-relay', 15_000, 'single-relay warning');
    expect(warn.level).toBe(40);
    expect(warn.relay).toBe(keep.connectUrl);
    // The connector keeps trying the dead relay (each backoff expiry is a new
    // attempt to spread); none of those repeats the warning.
    const failed = () => c.countLogs((l) => l.event === 'dial-failed' && l.relay === victim.connectUrl);
    const before = failed();
    await waitFor(() => failed() >= before + 2, 20_000, { message: 'more attempts at the dead relay' });
    expect(warnings()).toBe(1);
    expect(c.running).toBe(true);

    const back = await startRelay({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, id: victim.id, ports: { http: victim.http, connect: victim.connect, control: victim.control, peer: victim.peer } });
    fleet.relays[1] = back;
    await waitFor(async () => (await byRelay()).size === 2, 20_000, { message: 'spread over both relays again' });
    expect(warnings()).toBe(1);
    await c.stop();
  });

  it('heals by itself after every relay was unreachable', async () => {
    const c = await startConnector({ token: fleet.token, relays: fleet.relays.map((r) => r.connectUrl), url: a.url, extraArgs: ['--no-discover'] });
    const before = c.countLogs((l) => l.event === 'registered');
    const old = [...fleet.relays];
    const afterKill = c.logs.length;
    for (const r of old) await r.proc.kill9();
    // Down long enough for several failed attempts and growing backoff.
    await waitFor(() => c.countLogs((l) => l.event === 'backoff') >= 8, 20_000, { message: 'connector backing off' }).catch((e) => {
      console.log(c.logs.slice(-30).map((l) => JSON.stringify(l)).join('\n'));
      throw e;
    });
    // Logged once per state change: each connection's first failed retry is
    // an info line, the many that follow are debug (the harness keeps both).
    const since = (pred: (l: (typeof c.logs)[number]) => boolean) => c.logs.slice(afterKill).filter(pred).length;
    expect(since((l) => l.event === 'backoff' && l.level === 30)).toBeLessThanOrEqual(4);
    expect(since((l) => l.event === 'backoff' && l.level === 20)).toBeGreaterThanOrEqual(4);
    expect(since((l) => l.event === 'dial' && l.level === 30)).toBeLessThanOrEqual(4);
    const back: RelayProc[] = [];
    for (const r of old) back.push(await startRelay({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, id: r.id, ports: { http: r.http, connect: r.connect, control: r.control, peer: r.peer } }));
    fleet.relays.splice(0, fleet.relays.length, ...back);
    await waitFor(() => c.countLogs((l) => l.event === 'registered') >= before + 4, 25_000, { message: 'four connections again' });
    const r = await waitFor(async () => {
      const x = await req(`${back[1]!.publicUrl}/`, { host: fleet.hostname });
      return x.status === 200 ? x : null;
    }, 5_000);
    expect(r.text).toBe('from A');
    expect(c.running).toBe(true);
    await c.stop();
  });
});
