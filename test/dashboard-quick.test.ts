// Quick tunnels on the dashboard (issue 14): a real relay with --quick-zone,
// a real `tunnel --url` connector, the page in Chromium. The group lists the
// tunnel with its age and client IP; Kill goes through the session + CSRF
// action path to the operator API's kill, and the connector stops.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { stopAll, tempDir } from './harness/procs.js';
import { startQuickConnector, startQuickRelays, type QuickConnector, type QuickFleet } from './harness/quick.js';
import { launchChromium, loginToDashboard, noteChromium, skipBrowser } from './harness/dashboard-browser.js';

const OPERATOR_KEY = 'dashboard-quick-operator-key-0123';

noteChromium('dashboard quick-tunnel tests');

describe.skipIf(skipBrowser)('quick tunnels on the dashboard, in a real browser', () => {
  let fleet: QuickFleet;
  let origin: Origin;
  let browser: Browser;
  let page: Page;
  let q: QuickConnector;
  const tmp = tempDir('tunnel-dash-quick-');

  beforeAll(async () => {
    origin = await startOrigin((r, s) => s.end(`hello ${r.url}`));
    const keyFile = path.join(tmp.dir, 'operator-key');
    writeFileSync(keyFile, OPERATOR_KEY + '\n', { mode: 0o600 });
    fleet = await startQuickRelays({ relayArgs: ['--operator-key-file', keyFile] });
    q = await startQuickConnector({ relay: fleet.relays[0]!.controlUrl!, url: origin.url });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    await loginToDashboard(page, fleet.relays[0]!.controlUrl!, OPERATOR_KEY);
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await stopAll();
    await origin?.close();
    fleet?.cleanup();
    tmp.cleanup();
  });

  it('lists a `tunnel --url` tunnel with its age and client IP; Kill stops the connector and the hostname answers 404 within 5 s', async () => {
    const pub = fleet.relays[0]!.publicUrl;
    expect((await req(`${pub}/hi`, { host: q.hostname })).text).toBe('hello /hi');
    const row = page.locator(`#quick tr[data-quick="${q.hostname}"]`);
    await row.waitFor({ timeout: 10_000 });
    // Its own group: not among the named tunnels.
    expect(await page.locator('#tunnels').textContent()).not.toContain(q.hostname);
    await expect.poll(async () => row.locator('td.client-ip').textContent(), { timeout: 30_000 }).toBe('127.0.0.1');
    const cells = await row.locator('td').allInnerTexts();
    expect(cells[0]).toBe(q.hostname);
    expect(cells[1]).toMatch(/^\d+s$/);
    expect(cells[5]).toMatch(/^\d+\.\d\d$/);

    page.once('dialog', (d) => void d.accept());
    await row.locator('button.kill-quick').click();
    await expect.poll(async () => page.locator('#action-msg').textContent(), { timeout: 5_000 }).toBe(`Killed quick tunnel ${q.hostname}.`);
    const exit = await Promise.race([q.proc.exited, new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
    expect(exit, 'connector exited within 5 s of Kill').not.toBeNull();
    expect(q.proc.stderr).toMatch(/the relay ended the quick tunnel .*tunnel_deleted/);
    await waitFor(async () => (await req(`${pub}/`, { host: q.hostname })).status === 404, 5_000, { message: 'killed hostname answers 404' });
    await page.locator(`#quick tr[data-quick="${q.hostname}"]`).waitFor({ state: 'detached', timeout: 5_000 });
  });
});
