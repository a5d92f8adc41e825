import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import type { Proc } from './harness/procs.js';

// A reloaded connector config: keys a reload cannot apply are named in a
// warning (not dropped silently), and a config file that disappears does not
// end reload-on-change: when it comes back, it is picked up.

describe('connector config reload', () => {
  let fleet: Fleet;
  let a: Origin;
  let b: Origin;
  let connector: Proc;
  let cfg: string;
  const rules = (url: string, extra = '') => `${extra}ingress:\n  - hostname: ${fleet.hostname}\n    service: ${url}\n  - service: http_status:404\n`;
  const write = (text: string) => {
    // As editors do: write aside, rename over.
    writeFileSync(cfg + '.tmp', text);
    renameSync(cfg + '.tmp', cfg);
  };
  const body = async () => (await req(`${fleet.relays[0]!.publicUrl}/`, { host: fleet.hostname })).text;

  beforeAll(async () => {
    fleet = await startFleet({ relays: 1 });
    a = await startOrigin((_q, s) => s.end('from A'));
    b = await startOrigin((_q, s) => s.end('from B'));
    cfg = path.join(fleet.dir, 'config.yml');
    write(rules(a.url, 'ha-connections: 2\n'));
    connector = await fleet.connector({ config: cfg, ha: 2 });
  }, 60_000);

  afterAll(async () => {
    await fleet?.close();
    await a?.close();
    await b?.close();
  });

  it('names the changed keys a reload does not apply, and applies the ingress', async () => {
    write(rules(b.url, 'ha-connections: 3\ngrace-period: 5s\n'));
    const warn = await connector.waitForLog((l) => l.event === 'config-restart-needed', 10_000, 'restart-needed warning');
    expect(warn.keys).toEqual(['grace-period', 'ha-connections']);
    expect(warn.level).toBe(40);
    expect(String(warn.msg)).toMatch(/restart/);
    await waitFor(async () => (await body()) === 'from B', 10_000, { message: 'new ingress served' });
  });

  it('a deleted config file is polled for; when it comes back, it is reloaded', async () => {
    const reloads = connector.countLogs((l) => l.event === 'config-reloaded');
    rmSync(cfg);
    await connector.waitForLog((l) => l.event === 'config-watch-failed', 10_000, 'watch fallback warning');
    write(rules(a.url, 'ha-connections: 2\n'));
    await waitFor(() => connector.countLogs((l) => l.event === 'config-reloaded') > reloads, 10_000, { message: 'config reloaded after it came back' });
    await waitFor(async () => (await body()) === 'from A', 10_000, { message: 'restored ingress served' });
    expect(connector.running).toBe(true);
  });
});
