import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { startRedis, type RedisServer } from './harness/redis.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';
import { tempDir } from './harness/procs.js';
import { launchChromium, loginToDashboard, noteChromium, skipBrowser } from './harness/dashboard-browser.js';
import { openStore } from '../packages/relay/src/store/open.js';
import type { Store } from '../packages/relay/src/store/types.js';

// A relay of a two-relay fleet on Redis dies (kill -9: no drain, no goodbye).
// The dashboard, served by the other relay, must keep showing it — as down,
// since when, and when it was last seen — and the fleet's request totals
// must keep the requests it served. Before the relay history, it vanished
// from the page ("Relays healthy 1 / 1") and its requests with it.

const OPERATOR_KEY = 'dashboard-down-relay-operator-key-01';

noteChromium('dashboard down-relay test');
const redis: RedisServer | null = skipBrowser ? null : await startRedis();

/** As the page formats a time (browser and test share the machine's time zone). */
function fmtTime(t: number): string {
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

describe.skipIf(skipBrowser || !redis)('dashboard: a relay killed with -9 is shown down and keeps its requests', () => {
  let fleet: Fleet;
  let origin: Origin;
  let browser: Browser;
  let page: Page;
  let store: Store;
  const tmp = tempDir('tunnel-dash-down-');

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`hello ${q.url}`));
    const keyFile = path.join(tmp.dir, 'operator-key');
    writeFileSync(keyFile, OPERATOR_KEY + '\n', { mode: 0o600 });
    const url = `${redis!.url}/?prefix=down-${process.pid}:`;
    fleet = await startFleet({ relays: 2, store: url, relayArgs: ['--operator-key-file', keyFile] });
    await fleet.connector({ url: origin.url });
    store = await openStore(url);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    await loginToDashboard(page, fleet.relays[0]!.controlUrl!, OPERATOR_KEY);
  });
  afterAll(async () => {
    await browser?.close();
    await store?.close();
    await fleet?.close();
    await origin?.close();
    await redis?.stop();
    tmp.cleanup();
  });

  it('shows the dead relay down with when it was last seen, and the totals keep its requests', async () => {
    const [alive, doomed] = fleet.relays as [(typeof fleet.relays)[0], (typeof fleet.relays)[0]];
    const tunnelId = (await store.listTunnels())[0]!.id;
    const N = 30;
    // Served by the relay that will die: it holds two of the connector's four connections.
    for (let i = 0; i < N; i++) expect((await req(`${doomed.publicUrl}/doomed/${i}`, { host: fleet.hostname })).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await req(`${alive.publicUrl}/alive/${i}`, { host: fleet.hostname })).status).toBe(200);
    // Its history record (written on every 2 s heartbeat) holds them before it dies:
    // what a relay served after its last heartbeat dies with it.
    await waitFor(async () => ((await store.listRelayHistory()).find((h) => h.id === doomed.id)?.counts[tunnelId]?.requests ?? 0) >= N, 10_000, { message: 'the doomed relay recorded its requests' });
    const counter = page.locator('[data-testid="tunnel-app"] [data-testid="requests"]');
    await expect.poll(async () => Number(await counter.textContent()), { timeout: 10_000 }).toBe(N + 5);
    expect(await page.textContent('[data-testid="card-relays-up"] .v')).toBe('2 / 2');

    const killedAt = Date.now();
    await doomed.proc.kill9();
    const row = page.locator(`tr[data-relay="${doomed.id}"]`);
    // Membership lapses three heartbeats (6 s) after the last one; the page follows within a tick.
    await page.waitForSelector(`tr[data-relay="${doomed.id}"][data-health="down"]`, { timeout: 20_000 });
    const last = (await store.listRelayHistory()).find((h) => h.id === doomed.id)!;
    expect(last.lastSeen).toBeLessThanOrEqual(killedAt);
    expect(last.lastSeen).toBeGreaterThan(killedAt - 5_000);
    expect(last.draining).toBe(false);
    expect(await row.locator('.health').innerText()).toMatch(new RegExp(`^down\\s*since ${fmtTime(last.lastSeen)}$`));
    expect(await row.locator('.last-seen').innerText()).toMatch(new RegExp(`^${fmtTime(last.lastSeen)}\\s*\\d+s ago$`));
    expect(Number(await row.locator('.relay-requests').textContent())).toBeGreaterThanOrEqual(N);
    expect(await row.locator('button.forget').count()).toBe(1);
    expect(await page.textContent('[data-testid="card-relays-up"] .v')).toBe('1 / 2');
    expect(await page.textContent('[data-testid="card-relays-down"] .v')).toBe('1');
    // The live relay is still healthy, and the fleet's total kept the dead relay's requests.
    expect(await page.locator(`tr[data-relay="${alive.id}"] .badge.healthy`).count()).toBe(1);
    expect(Number(await counter.textContent())).toBe(N + 5);
    expect(await page.textContent('[data-testid="card-total-requests"] .v')).toBe(String(N + 5));
    // And it stays down (not forgotten by time): still there two ticks later, counted the same.
    await page.waitForFunction(() => document.querySelectorAll('tr[data-health="down"] .last-seen')[0]?.textContent?.match(/(\d+)s ago/)?.[1] !== undefined && Number(document.querySelectorAll('tr[data-health="down"] .last-seen')[0]!.textContent!.match(/(\d+)s ago/)![1]) >= 9, undefined, { timeout: 15_000 });
    expect(await row.getAttribute('data-health')).toBe('down');
    expect(Number(await counter.textContent())).toBe(N + 5);
  });
});
