import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { request } from 'undici';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';
import { CONNECTOR_CLI, Proc, tempDir, type RelayProc } from './harness/procs.js';
import { launchChromium, noteChromium, skipBrowser } from './harness/dashboard-browser.js';

// The operator dashboard in a real browser (Debian's Chromium driven by
// playwright-core): login refused with a wrong key, the connector's four
// connections, a request counter rising live while requests are sent (no
// reload), and a `tunnel login` code approved from the page.

const OPERATOR_KEY = 'dashboard-operator-key-0123456789';
const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test-artifacts');
noteChromium('dashboard browser tests');

describe.skipIf(skipBrowser)('dashboard in a real browser', () => {
  let fleet: Fleet;
  let origin: Origin;
  let browser: Browser;
  let page: Page;
  let relay: RelayProc;
  const tmp = tempDir('tunnel-dash-');

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`hello ${q.url}`));
    const keyFile = path.join(tmp.dir, 'operator-key');
    writeFileSync(keyFile, OPERATOR_KEY + '\n', { mode: 0o600 });
    fleet = await startFleet({ relays: 2, relayArgs: ['--operator-key-file', keyFile] });
    relay = fleet.relays[0]!;
    await fleet.connector({ url: origin.url });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
  });
  afterAll(async () => {
    await browser?.close();
    await fleet?.close();
    await origin?.close();
    tmp.cleanup();
  });

  it('refuses a wrong operator key with a clear message and no session', async () => {
    await page.goto(`${relay.controlUrl}/dashboard/`);
    await page.fill('#key', 'not-the-key');
    const [resp] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    expect(resp?.status()).toBe(401);
    expect(await page.textContent('#login-error')).toContain('Wrong operator key');
    expect(await page.isVisible('#key')).toBe(true);
    expect((await page.context().cookies()).filter((c) => c.name === 'tunnel_dash')).toHaveLength(0);
    // The API is closed without a session, too.
    const api = await request(`${relay.controlUrl}/dashboard/api/state`);
    expect(api.statusCode).toBe(401);
    await api.body.dump();
  });

  it('logs in and shows relays, the tunnel with its hostname, and the connector\'s four connections', async () => {
    await page.fill('#key', OPERATOR_KEY);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    const cookie = (await page.context().cookies()).find((c) => c.name === 'tunnel_dash');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    await page.waitForSelector('#live.on', { timeout: 10_000 });
    const card = page.locator('[data-testid="tunnel-app"]');
    await card.waitFor({ timeout: 10_000 });
    await expect.poll(() => card.locator('tr.conn').count(), { timeout: 30_000 }).toBe(4);
    const rows = await card.locator('tr.conn').evaluateAll((trs) => trs.map((tr) => ({ index: tr.getAttribute('data-index'), text: (tr as HTMLElement).innerText })));
    expect(rows.map((r) => r.index).sort()).toEqual(['0', '1', '2', '3']);
    const relayIds = new Set(fleet.relays.map((r) => r.id));
    for (const r of rows) expect([...relayIds].some((id) => r.text.includes(id))).toBe(true);
    // Both relays hold connections, and both are listed healthy.
    expect(new Set(rows.map((r) => [...relayIds].find((id) => r.text.includes(id))))).toEqual(relayIds);
    for (const id of relayIds) expect(await page.locator(`tr[data-relay="${id}"] .badge.healthy`).count()).toBe(1);
    expect(await card.locator('.chip').allTextContents()).toEqual([fleet.hostname]);
  });

  it('shows the request counter rising live while requests are sent, without a reload', async () => {
    await page.evaluate(() => ((window as unknown as { __noReload: number }).__noReload = 42));
    const counter = page.locator('[data-testid="tunnel-app"] [data-testid="requests"]');
    const start = Number(await counter.textContent());
    const N = 40;
    // Spread over a few seconds and over both relays, so the page sees it climb.
    const seen = new Set<number>();
    const rpsSeen: number[] = [];
    const rps = page.locator('[data-testid="tunnel-app"] [data-testid="rps"]');
    const watch = setInterval(() => {
      counter.textContent().then((t) => seen.add(Number(t)), () => {});
      rps.textContent().then((t) => rpsSeen.push(Number(t)), () => {});
    }, 100);
    for (let i = 0; i < N; i++) {
      const r = await req(`${fleet.relays[i % 2]!.publicUrl}/live/${i}`, { host: fleet.hostname });
      expect(r.status).toBe(200);
      if (i % 10 === 9) {
        await waitFor(async () => {
          const v = Number(await counter.textContent());
          seen.add(v);
          return v >= start + i + 1;
        }, 5_000, { message: `counter at ${start + i + 1}` });
      }
    }
    await page.waitForFunction((want) => Number(document.querySelector('[data-testid="tunnel-app"] [data-testid="requests"]')?.textContent) >= want, start + N, { timeout: 10_000 });
    clearInterval(watch);
    expect(Number(await counter.textContent())).toBe(start + N);
    // It rose in steps (live), not in one jump after a reload.
    expect([...seen].filter((v) => v > start && v < start + N).length).toBeGreaterThanOrEqual(2);
    expect(await page.evaluate(() => (window as unknown as { __noReload?: number }).__noReload)).toBe(42);
    // The rate showed the traffic while it flowed (it may have decayed to 0 since): above 0, and of the
    // order the N requests could make (a loose bound: the page's tick length is its own business).
    expect(rpsSeen.every((v) => Number.isFinite(v) && v >= 0), JSON.stringify(rpsSeen)).toBe(true);
    expect(Math.max(...rpsSeen), JSON.stringify(rpsSeen)).toBeGreaterThan(0);
    expect(Math.max(...rpsSeen)).toBeLessThanOrEqual(10 * N);
  });

  it('approves a pending `tunnel login` code from the page, and the CLI completes', async () => {
    const home = path.join(tmp.dir, 'login-home');
    const login = new Proc('login', process.execPath, [CONNECTOR_CLI, 'login', '--relay', relay.controlUrl!, '--poll-interval', '100'], { TUNNEL_HOME: home });
    // Two lines, two writes: wait for both (the second may arrive in a later chunk).
    const [code, approveUrl] = await waitFor(
      () => {
        const m = /approve this code: ([A-Z0-9]{4}-[A-Z0-9]{4})\n\s*in the relay dashboard: (\S+)\n/.exec(login.stdout);
        return m ? [m[1]!, m[2]!] : null;
      },
      10_000,
      { message: 'login code and dashboard link printed' },
    );
    // The link the CLI prints opens the dashboard on that code.
    expect(approveUrl).toBe(`${relay.controlUrl}/dashboard/#login=${code}`);
    await page.goto(approveUrl!);
    const row = page.locator(`#logins tr[data-code="${code}"]`);
    await row.waitFor({ timeout: 10_000 });
    expect(await row.getAttribute('class')).toBe('flash');
    await row.locator('input.account').fill('dash-ops');
    // A little steady traffic, so the screenshot shows live rates too.
    let n = 0;
    const load = setInterval(() => void req(`${fleet.relays[n % 2]!.publicUrl}/bg/${n++}`, { host: fleet.hostname }).catch(() => {}), 40);
    try {
      await page.waitForFunction(() => Number(document.querySelector('[data-testid="tunnel-app"] [data-testid="rps"]')?.textContent) > 0, undefined, { timeout: 10_000 });
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    } finally {
      clearInterval(load);
    }
    await row.locator('button.approve').click();
    await page.waitForSelector('#approve-msg.ok', { timeout: 10_000 });
    expect(await page.textContent('#approve-msg')).toBe(`Approved ${code} for account dash-ops.`);
    const { code: exit } = await login.exited;
    expect(exit, login.stderr).toBe(0);
    expect(login.stdout).toContain('Logged in to account dash-ops');
    await expect.poll(() => page.locator(`#logins tr[data-code="${code}"]`).count(), { timeout: 5_000 }).toBe(0);
  });
});
