import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import type { Browser } from 'playwright-core';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { openStore } from '../../packages/relay/src/store/open.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startOrigin } from '../harness/origin.js';
import { dashboardSession, launchChromium, noteChromium, skipBrowser } from '../harness/dashboard-browser.js';
import { waitFor } from '../harness/wait.js';

// Forged dashboard actions. Every operator action (approve, deny, revoke,
// disconnect or delete a tunnel, forget a relay) needs the operator session cookie AND the
// session's CSRF token (X-CSRF-Token) AND a same-origin request: without a
// session 401; without the token, with another session's token, or from
// another origin 403 — and nothing changes. Last, the attack itself in
// Chromium: a page on another origin of the same site (127.0.0.1, another
// port: the SameSite=Strict cookie IS sent) posts a form to delete a tunnel.

const OPERATOR_KEY = 'dashboard-csrf-operator-key-0123456';

interface Answer {
  status: number;
  code?: string;
}

describe('dashboard actions refuse forged requests', () => {
  const tmp = tempDir('tunnel-dash-csrf-');
  let relay: RelayProc;
  let store: string;
  let tunnelId: string;
  let base: string;
  let token: string;

  const login = () => dashboardSession(base, OPERATOR_KEY);

  async function post(p: string, headers: Record<string, string>, body = '{}'): Promise<Answer> {
    const r = await request(`${base}/dashboard/api/${p}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const text = await r.body.text();
    let code: string | undefined;
    try {
      code = (JSON.parse(text) as { error?: { code: string } }).error?.code;
    } catch {
      code = undefined;
    }
    return { status: r.statusCode, code };
  }

  async function tunnelStillThere(): Promise<void> {
    const s = await openStore(store);
    try {
      expect(await s.getTunnel(tunnelId)).toBeDefined();
    } finally {
      await s.close();
    }
  }

  beforeAll(async () => {
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const keyFile = path.join(tmp.dir, 'operator-key');
    writeFileSync(keyFile, OPERATOR_KEY + '\n', { mode: 0o600 });
    store = `file:${path.join(tmp.dir, 'store')}`;
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'csrf-relay', extraArgs: ['--operator-key-file', keyFile] });
    base = relay.controlUrl!;
    token = await createTunnel({ dir: tmp.dir, store, keys, name: 'target', hostnames: ['target.test'], relays: [relay.connectUrl] });
    const s = await openStore(store);
    tunnelId = (await s.listTunnels())[0]!.id;
    await s.close();
  });
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  const actions = () => [`tunnels/${tunnelId}/delete`, `tunnels/${tunnelId}/disconnect`, 'tokens/revoke', 'logins/ABCD-EFGH/approve', 'logins/ABCD-EFGH/deny', 'relays/gone-relay/forget', 'quick/gone.try.test/kill'];

  it('no session: 401 for every action, even with a CSRF token of a real session', async () => {
    const { csrf } = await login();
    for (const a of actions()) expect(await post(a, { 'x-csrf-token': csrf }), a).toEqual({ status: 401, code: 'login_required' });
    // A cookie with a forged MAC is no session either.
    const forged = `tunnel_dash=${Date.now() + 3_600_000}.AAAAAAAAAAAAAAAA.${'A'.repeat(43)}`;
    expect(await post(`tunnels/${tunnelId}/delete`, { cookie: forged, 'x-csrf-token': csrf })).toEqual({ status: 401, code: 'login_required' });
    await tunnelStillThere();
  });

  it('a session without the CSRF token, or with another session\'s: 403 for every action', async () => {
    const mine = await login();
    const other = await login();
    expect(other.csrf).not.toBe(mine.csrf);
    for (const a of actions()) {
      expect(await post(a, { cookie: mine.cookie }), a).toEqual({ status: 403, code: 'csrf_missing' });
      expect(await post(a, { cookie: mine.cookie, 'x-csrf-token': other.csrf }), a).toEqual({ status: 403, code: 'csrf_invalid' });
      expect(await post(a, { cookie: mine.cookie, 'x-csrf-token': mine.csrf.slice(0, -2) }), a).toEqual({ status: 403, code: 'csrf_invalid' });
    }
    await tunnelStillThere();
  });

  it('a cross-origin POST is refused even with the session and its token', async () => {
    const { cookie, csrf } = await login();
    const ok = { cookie, 'x-csrf-token': csrf };
    for (const origin of ['http://evil.test', 'null', `http://127.0.0.1:1`, `https://${new URL(base).host}.evil.test`]) {
      expect(await post(`tunnels/${tunnelId}/delete`, { ...ok, origin }), origin).toEqual({ status: 403, code: 'cross_origin' });
    }
    expect(await post(`tunnels/${tunnelId}/delete`, { ...ok, 'sec-fetch-site': 'cross-site' })).toEqual({ status: 403, code: 'cross_origin' });
    expect(await post(`tunnels/${tunnelId}/delete`, { ...ok, 'sec-fetch-site': 'same-site' })).toEqual({ status: 403, code: 'cross_origin' });
    await tunnelStillThere();
    // The same request from this origin passes every check (a harmless action: revoke an unused id).
    expect(await post('tokens/revoke', { ...ok, origin: base }, JSON.stringify({ token: 'unused-token-id-1' }))).toEqual({ status: 200, code: undefined });
  });

  it('a logged-out session and its token are refused', async () => {
    const { cookie, csrf } = await login();
    const out = await request(`${base}/dashboard/logout`, { method: 'POST', headers: { cookie } });
    await out.body.dump();
    expect(out.statusCode).toBe(303);
    expect(await post(`tunnels/${tunnelId}/delete`, { cookie, 'x-csrf-token': csrf })).toEqual({ status: 401, code: 'login_required' });
    await tunnelStillThere();
  });

  // Disconnect's own guard, seen where it matters: a running connector. A
  // forged Disconnect that got through would mark the tunnel disconnected
  // (before answering) and the relay would drop the connector's connections.
  it('Disconnect without the CSRF token, or with a wrong one: 403, the tunnel is not marked and the connector keeps its connections; with the token it is disconnected', async () => {
    const origin = await startOrigin((_q, s) => s.end('ok'));
    try {
      const connector = await startConnector({ token, relays: [relay.connectUrl], url: origin.url, ha: 2 });
      const connectionIds = async () => {
        const s = await openStore(store);
        try {
          return { ids: (await s.listPresence({ tunnelId })).map((p) => p.connectionId).sort(), disconnectedAt: (await s.getTunnel(tunnelId))?.disconnectedAt };
        } finally {
          await s.close();
        }
      };
      const before = await waitFor(async () => {
        const c = await connectionIds();
        return c.ids.length === 2 ? c : undefined;
      }, 10_000, { message: 'both connections in the store' });
      const mine = await login();
      const other = await login();
      const disconnect = `tunnels/${tunnelId}/disconnect`;
      const answers = [
        await post(disconnect, { cookie: mine.cookie }),
        await post(disconnect, { cookie: mine.cookie, 'x-csrf-token': other.csrf }),
        await post(disconnect, { cookie: mine.cookie, 'x-csrf-token': mine.csrf.slice(0, -2) }),
      ];
      // What a forged request would do is checked first. The answer comes after
      // the store write, so the same connections and the same mark now mean
      // that none of them got through.
      expect(await connectionIds()).toEqual(before);
      expect(connector.running).toBe(true);
      expect(connector.stdout + connector.stderr).not.toContain('tunnel_disconnected');
      expect(answers).toEqual([
        { status: 403, code: 'csrf_missing' },
        { status: 403, code: 'csrf_invalid' },
        { status: 403, code: 'csrf_invalid' },
      ]);
      // The same POST with the session's token disconnects: what the refusals above would have done.
      expect(await post(disconnect, { cookie: mine.cookie, 'x-csrf-token': mine.csrf })).toEqual({ status: 200, code: undefined });
      await waitFor(() => (connector.stdout + connector.stderr).includes('tunnel_disconnected'), 10_000, { message: 'the connector told of the disconnect' });
      expect(connector.running).toBe(true);
      await connector.stop();
    } finally {
      await origin.close();
    }
  });

  noteChromium('dashboard CSRF in a browser');
  it.skipIf(skipBrowser)('in Chromium: a page on another origin of the same site cannot delete a tunnel with the operator\'s session', async () => {
    let browser: Browser | undefined;
    // The attacker's page: auto-submits a form and fires a no-cors fetch at the dashboard.
    const target = `${base}/dashboard/api/tunnels/${tunnelId}/delete`;
    const evil = http.createServer((_q, s) => {
      s.writeHead(200, { 'content-type': 'text/html' });
      s.end(`<!doctype html><body><form id="f" method="post" action="${target}" enctype="text/plain"><input name='{"a":"' value='"}'></form>
<script>fetch(${JSON.stringify(target)}, { method: 'POST', mode: 'no-cors', credentials: 'include', body: '{}' }).finally(() => document.getElementById('f').submit());</script></body>`);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      browser = await launchChromium();
      const page = await browser.newPage();
      // The operator is logged in to the dashboard in this browser.
      await page.goto(`${base}/dashboard/`);
      await page.fill('#key', OPERATOR_KEY);
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      expect((await page.context().cookies()).some((c) => c.name === 'tunnel_dash')).toBe(true);
      const seen: number[] = [];
      page.on('response', (r) => {
        if (r.url() === target) seen.push(r.status());
      });
      await page.goto(`http://127.0.0.1:${(evil.address() as { port: number }).port}/`);
      await waitFor(() => seen.length >= 2, 10_000, { message: 'both forged requests answered' });
      // 403, not 401: the cookie went along (same site) and the session was valid; refused all the same.
      expect(seen).toEqual([403, 403]);
      await tunnelStillThere();
    } finally {
      await browser?.close();
      await new Promise((r) => evil.close(r));
    }
  });
});
