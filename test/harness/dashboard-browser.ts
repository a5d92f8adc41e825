// Chromium (Debian's /usr/bin/chromium, driven by playwright-core) for the
// dashboard tests, and the operator login every one of them starts with.
// Absent: the suites skip with a one-line reason, except under CI=true,
// where they fail (.ci/run installs chromium).

import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);
/** describe.skipIf(skipBrowser) */
export const skipBrowser = !haveChromium && process.env.CI !== 'true';

export function noteChromium(what: string): void {
  if (haveChromium) return;
  if (process.env.CI === 'true') console.log(`[fail] ${CHROMIUM} is missing and CI=true: .ci/run installs chromium`);
  else console.log(`[skip] ${what}: ${CHROMIUM} is not installed (apt-get install -y chromium)`);
}

/** `extraArgs`: e.g. --host-resolver-rules for a test hostname on 127.0.0.1. */
export async function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  if (!haveChromium) throw new Error(`${CHROMIUM} is required when CI=true (.ci/run installs chromium)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}

/** Logs in on the dashboard of `controlUrl` and waits for the live stream. */
export async function loginToDashboard(page: Page, controlUrl: string, key: string): Promise<void> {
  await page.goto(`${controlUrl}/dashboard/`);
  await page.fill('#key', key);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  await page.waitForSelector('#live.on', { timeout: 10_000 });
}

/** An operator session over plain HTTP: its cookie and the CSRF token its page carries. */
export async function dashboardSession(controlUrl: string, key: string): Promise<{ cookie: string; csrf: string }> {
  const { request } = await import('undici');
  const r = await request(`${controlUrl}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `key=${encodeURIComponent(key)}` });
  await r.body.dump();
  if (r.statusCode !== 303) throw new Error(`dashboard login: ${r.statusCode}`);
  const cookie = String(r.headers['set-cookie']).split(';')[0]!;
  const page = await request(`${controlUrl}/dashboard/`, { headers: { cookie } });
  const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(await page.body.text())?.[1];
  if (!csrf) throw new Error('dashboard page carries no CSRF token');
  return { cookie, csrf };
}
