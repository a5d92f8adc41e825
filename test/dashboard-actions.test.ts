import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';
import { CONNECTOR_CLI, Proc, createTunnel, startConnector, tempDir } from './harness/procs.js';
import { launchChromium, loginToDashboard, noteChromium, skipBrowser } from './harness/dashboard-browser.js';
import { openStore } from '../packages/relay/src/store/open.js';

// Every operator action of the dashboard, done in a real browser against a
// two-relay fleet, with its effect checked where it lands (the CLI, the
// connector, the store) — plus what the page shows: accounts and zones, the
// connector's host name and full id on hover, the sparkline's axes.

const OPERATOR_KEY = 'dashboard-actions-operator-key-0123';

noteChromium('dashboard action tests');

describe.skipIf(skipBrowser)('dashboard actions in a real browser', () => {
  let fleet: Fleet;
  let origin: Origin;
  let browser: Browser;
  let page: Page;
  let connector: Proc;
  const tmp = tempDir('tunnel-dash-actions-');
  const control = () => fleet.relays[0]!.controlUrl!;
  const requestsOf = async (name: string) => Number(await page.locator(`[data-testid="tunnel-${name}"] [data-testid="requests"]`).textContent());

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`hello ${q.url}`));
    const keyFile = path.join(tmp.dir, 'operator-key');
    writeFileSync(keyFile, OPERATOR_KEY + '\n', { mode: 0o600 });
    fleet = await startFleet({ relays: 2, relayArgs: ['--operator-key-file', keyFile] });
    connector = await fleet.connector({ url: origin.url });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    await loginToDashboard(page, control(), OPERATOR_KEY);
    await page.locator('[data-testid="tunnel-app"] tr.conn').first().waitFor({ timeout: 10_000 });
  });
  afterAll(async () => {
    await browser?.close();
    await fleet?.close();
    await origin?.close();
    tmp.cleanup();
  });

  it('lists accounts (tunnels, zones) and zones (account, how granted)', async () => {
    const account = page.locator('#accounts-table tr[data-account="default"]');
    await account.waitFor({ timeout: 10_000 });
    expect(await account.locator('td').allInnerTexts()).toEqual(['default', '1', fleet.hostname, expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)]);
    const zone = page.locator(`#zones-table tr[data-zone="${fleet.hostname}"]`);
    expect((await zone.locator('td').allInnerTexts()).slice(0, 3)).toEqual([fleet.hostname, 'default', 'operator']);
  });

  it("shows the connector's host name, and its host and full id on hover; the sparkline has axes", async () => {
    const cell = page.locator('[data-testid="tunnel-app"] tr.conn td.connector').first();
    const connectorId = await page.locator('[data-testid="tunnel-app"] tr.conn').first().getAttribute('data-connector');
    expect(connectorId!.length).toBeGreaterThan(8);
    expect(await cell.textContent()).toBe(hostname());
    expect(await cell.getAttribute('title')).toBe(`host ${hostname()} · connector ${connectorId}`);
    // Axes: both lines, the scale (0 and the peak) and the time span.
    for (let i = 0; i < 20; i++) expect((await req(`${fleet.relays[0]!.publicUrl}/spark/${i}`, { host: fleet.hostname })).status).toBe(200);
    const spark = page.locator('[data-testid="tunnel-app"] svg.spark');
    expect(await spark.locator('line.axis').count()).toBe(2);
    expect(await spark.locator('text.y-min').textContent()).toBe('0/s');
    expect(await spark.locator('text.x-min').textContent()).toBe('-60s');
    expect(await spark.locator('text.x-max').textContent()).toBe('now');
    await expect.poll(async () => Number(await spark.locator('text.y-max').textContent()), { timeout: 10_000 }).toBeGreaterThan(0);
  });

  it('denies a pending `tunnel login` code: the row goes, and the waiting CLI says the operator denied it (exit 1)', async () => {
    const login = new Proc('login', process.execPath, [CONNECTOR_CLI, 'login', '--relay', control(), '--poll-interval', '100'], { TUNNEL_HOME: path.join(tmp.dir, 'deny-home') });
    const code = await waitFor(() => /approve this code: ([A-Z0-9]{4}-[A-Z0-9]{4})/.exec(login.stdout)?.[1], 10_000, { message: 'login code printed' });
    const row = page.locator(`#logins tr[data-code="${code}"]`);
    await row.waitFor({ timeout: 10_000 });
    await row.locator('button.deny').click();
    await page.waitForSelector('#approve-msg.ok', { timeout: 10_000 });
    expect(await page.textContent('#approve-msg')).toBe(`Denied ${code}: the login was refused.`);
    await waitFor(() => !login.running, 15_000, { message: 'the login CLI stopped' });
    expect((await login.exited).code).toBe(1);
    expect(login.stderr).toContain(`the operator denied this login (code ${code})`);
    expect(login.stdout + login.stderr).not.toContain('Logged in');
    await expect.poll(() => page.locator(`#logins tr[data-code="${code}"]`).count(), { timeout: 5_000 }).toBe(0);
  });

  it("revokes a tunnel token pasted into the form: its connector's connections end and it exits 3; a forged token is refused", async () => {
    const token = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'second', hostnames: ['second.test'], relays: fleet.relays.map((r) => r.connectUrl) });
    const second = await startConnector({ token, relays: fleet.relays.map((r) => r.connectUrl), url: origin.url });
    const card = page.locator('[data-testid="tunnel-second"]');
    await expect.poll(() => card.locator('tr.conn').count(), { timeout: 10_000 }).toBe(4);

    // A token that is not this fleet's: refused, nothing revoked.
    const [head, sig] = token.split('.');
    await page.fill('#revoke-token', `${head}.${sig!.slice(0, -4)}AAAA`);
    await page.click('#revoke button');
    await page.waitForSelector('#revoke-msg.bad', { timeout: 10_000 });
    expect(await page.textContent('#revoke-msg')).toContain('not a credential of this fleet');
    expect(second.running).toBe(true);

    await page.fill('#revoke-token', token);
    await page.click('#revoke button');
    await page.waitForSelector('#revoke-msg.ok', { timeout: 10_000 });
    const jti = (JSON.parse(Buffer.from(head!, 'base64url').toString()) as { jti: string }).jti;
    expect(await page.textContent('#revoke-msg')).toBe(`Revoked tunnel ${jti}: it is refused on every relay, and connections using it are closed.`);
    await waitFor(() => !second.running, 15_000, { message: 'the revoked connector exited' });
    expect((await second.exited).code).toBe(3);
    expect(second.stderr).toContain('credential_revoked');
    await card.locator('.none', { hasText: 'No connector connected.' }).waitFor({ timeout: 10_000 });
    // The first tunnel's connector is untouched.
    expect(connector.running).toBe(true);
  });

  it('disconnects a tunnel without deleting it: its connections drop on both relays, the same connector reconnects, the tunnel stays', async () => {
    const store = await openStore(fleet.store);
    try {
      const tunnelId = (await page.locator('[data-testid="tunnel-app"]').getAttribute('data-tunnel'))!;
      const ids = async () => (await store.listPresence({ tunnelId })).map((p) => p.connectionId).sort();
      const before = await waitFor(async () => ((await ids()).length === 4 ? ids() : undefined), 10_000, { message: 'four connections recorded' });
      page.once('dialog', (d) => void d.accept());
      await page.locator('[data-testid="tunnel-app"] button.disconnect-tunnel').click();
      await expect.poll(() => page.textContent('#action-msg.ok'), { timeout: 10_000 }).toBe('Disconnected tunnel app (4 connections dropped); its connectors reconnect.');
      await waitFor(async () => {
        const now = await ids();
        return now.length === 4 && now.every((id) => !before.includes(id));
      }, 20_000, { message: 'four new connections, none of the old' });
      await expect.poll(() => page.locator('[data-testid="tunnel-app"] tr.conn').count(), { timeout: 10_000 }).toBe(4);
      expect(connector.running).toBe(true);
      expect((await store.getTunnel(tunnelId))?.name).toBe('app');
      expect((await req(`${fleet.relays[1]!.publicUrl}/after-disconnect`, { host: fleet.hostname })).status).toBe(200);
    } finally {
      await store.close();
    }
  });

  it('forgets a stopped relay: its row goes, its requests stay in the totals', async () => {
    const gone = fleet.relays[1]!;
    for (let i = 0; i < 12; i++) expect((await req(`${gone.publicUrl}/before-stop/${i}`, { host: fleet.hostname })).status).toBe(200);
    // Its history record holds them (written each heartbeat) before it stops.
    const store = await openStore(fleet.store);
    try {
      await waitFor(async () => ((await store.listRelayHistory()).find((h) => h.id === gone.id)?.counts[(await store.listTunnels())[0]!.id]?.requests ?? 0) >= 12, 10_000, { message: 'relay-1 recorded its requests' });
    } finally {
      await store.close();
    }
    await expect.poll(() => page.locator(`tr[data-relay="${gone.id}"] .relay-requests`).textContent().then(Number), { timeout: 10_000 }).toBeGreaterThanOrEqual(12);
    const before = await requestsOf('app');
    await gone.proc.stop();
    const row = page.locator(`tr[data-relay="${gone.id}"]`);
    await page.waitForSelector(`tr[data-relay="${gone.id}"][data-health="stopped"]`, { timeout: 20_000 });
    expect(await row.locator('.health').innerText()).toMatch(/^stopped\s*at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(await requestsOf('app')).toBe(before);
    expect(await page.textContent('[data-testid="card-relays-up"] .v')).toBe('1 / 2');

    page.once('dialog', (d) => void d.accept());
    await row.locator('button.forget').click();
    // The message line may still show the previous action's (disconnect): wait for this one's.
    await expect.poll(() => page.textContent('#action-msg.ok'), { timeout: 10_000 }).toBe(`Forgot relay ${gone.id}.`);
    await expect.poll(() => row.count(), { timeout: 5_000 }).toBe(0);
    expect(await requestsOf('app')).toBe(before);
    expect(await page.textContent('[data-testid="card-relays-up"] .v')).toBe('1 / 1');
  });

  it('deletes a tunnel from the page: it is gone from the page and the store, and its connector exits', async () => {
    page.once('dialog', (d) => void d.accept());
    const tunnelId = await page.locator('[data-testid="tunnel-app"]').getAttribute('data-tunnel');
    await page.locator('[data-testid="tunnel-app"] button.delete-tunnel').click();
    await expect.poll(() => page.textContent('#action-msg.ok'), { timeout: 10_000 }).toBe(`Deleted tunnel app (${tunnelId}).`);
    await expect.poll(() => page.locator('[data-testid="tunnel-app"]').count(), { timeout: 5_000 }).toBe(0);
    await waitFor(() => !connector.running, 15_000, { message: "the deleted tunnel's connector exited" });
    expect((await connector.exited).code).not.toBe(0);
    expect(connector.stderr).toContain('tunnel_deleted');
    const store = await openStore(fleet.store);
    try {
      expect(await store.getTunnel(tunnelId!)).toBeUndefined();
      expect((await store.getTombstone(tunnelId!))?.name).toBe('app');
    } finally {
      await store.close();
    }
  });
});
