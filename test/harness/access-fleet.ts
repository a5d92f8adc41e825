// A fleet with Access logins for the browser tests: two relays, alice's
// account, zone and tunnel, a connector, an origin that records what it
// receives, a real OpenID provider process (oidc-idp.mjs) with test users,
// and Chromium (playwright-core) that resolves *.alice.test to 127.0.0.1 and
// nothing else anywhere.

import type http from 'node:http';
import net from 'node:net';
import { request } from 'undici';
import { existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, Proc, RELAY_CLI, runCli, startRelay, stopAll, tempDir, type RelayProc } from './procs.js';
import { startOrigin, type Origin } from './origin.js';
import { waitFor } from './wait.js';

export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);
const IDP_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'oidc-idp.mjs');

/** Skip (one line) without Chromium, fail under CI=true. */
export function chromiumOrSkip(what: string): boolean {
  if (haveChromium) return false;
  if (process.env.CI === 'true') return false; // beforeAll throws
  console.log(`[skip] ${what}: ${CHROMIUM} is not installed (apt-get install -y chromium)`);
  return true;
}

export const USERS = {
  alice: { email: 'alice@alice.test', email_verified: true, groups: ['staff'] },
  bob: { email: 'bob@other.test', email_verified: true, groups: ['eng'] },
  mallory: { email: 'mallory@evil.test', email_verified: true, groups: ['sales'] },
  unverified: { email: 'carol@alice.test', email_verified: false, groups: [] },
  // An id_token far over the relay's 64 KiB ceiling.
  // oidc-idp.mjs expands `manyGroups` (an environment variable cannot hold them).
  huge: { email: 'huge@alice.test', email_verified: true, manyGroups: 4000 },
} as const;
export type User = keyof typeof USERS;

export const HOSTS = ['app.alice.test', 'short.alice.test', 'ssh.alice.test'] as const;

export interface Seen {
  host: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface AccessFleet {
  dir: string;
  /** alice's TUNNEL_HOME. */
  home: string;
  relays: [RelayProc, RelayProc];
  idp: { proc: Proc; issuer: string; port: number };
  origin: Origin;
  seen: Seen[];
  browser: Browser;
  /** `tunnel …` as alice. */
  tunnel(args: string[]): ReturnType<typeof runCli>;
  /** Audience tag of each protected hostname. */
  aud: Record<string, string>;
  url(host: string, p?: string, relay?: number): string;
  /** A plain HTTP request to a relay (at 127.0.0.1, the hostname in Host), with a cookie if given. */
  raw(host: string, p: string, o?: { relay?: number; cookie?: string; accept?: string }): Promise<{ status: number; location?: string; code?: string; body: string }>;
  /** A fresh browser profile (no cookies) that may reach only 127.0.0.1. */
  context(): Promise<BrowserContext>;
  /** From a page at the provider's login form: sign in as `user` and consent; resolves when back on `host` (a hostname, or host:port). */
  signIn(page: Page, user: User, host: string): Promise<void>;
  close(): Promise<void>;
}

/** `relayB`: extra flags for the second relay (the ceiling tests use it). */
export async function startAccessFleet(o: { relayB?: string[] } = {}): Promise<AccessFleet> {
  if (!haveChromium) throw new Error(`${CHROMIUM} is required when CI=true (.ci/run installs chromium)`);
  const tmp = tempDir('tunnel-access-');
  const keys = path.join(tmp.dir, 'fleet-key.json');
  generateKeyFile(keys);
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const home = path.join(tmp.dir, 'alice');
  const tunnel = (args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home });
  const must = async (p: ReturnType<typeof runCli>, what: string) => {
    const r = await p;
    if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr}`);
    return r;
  };
  const seen: Seen[] = [];
  const origin = await startOrigin((q, s) => {
    seen.push({ host: q.headers.host ?? '', url: q.url ?? '', headers: q.headers });
    s.setHeader('content-type', 'text/html');
    s.end(`<!doctype html><title>origin</title><p id="origin">ok ${q.url}</p>`);
  });
  const a = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-a' });
  const b = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-b', extraArgs: o.relayB });
  const acct = await must(runCli(RELAY_CLI, ['account', 'create', 'alice', '--store', store, '--keys', keys], {}, tmp.dir), 'account create');
  await must(tunnel(['login', '--relay', a.controlUrl!, '--enroll', acct.stdout.trim()]), 'login');
  await must(runCli(RELAY_CLI, ['zone', 'add', 'alice.test', '--account', 'alice', '--store', store], {}, tmp.dir), 'zone add');
  await must(tunnel(['create', 'a']), 'create');
  for (const h of HOSTS) await must(tunnel(['route', 'dns', 'a', h]), 'route');

  const redirects = HOSTS.flatMap((h) => [a, b].map((r) => `http://${h}:${r.http}/.tunnel/access/callback`));
  const idpProc = new Proc('idp', process.execPath, [IDP_SCRIPT], { IDP_CONFIG: JSON.stringify({ clients: [{ client_id: 'tunnel-fleet', client_secret: 'idp-client-secret-0123456789', redirect_uris: redirects }], users: USERS }) });
  const up = await idpProc.waitForLog((l) => l.event === 'listening', 15_000, 'oidc provider listening');
  const idp = { proc: idpProc, issuer: String(up.issuer), port: Number(up.port) };
  const secretFile = path.join(tmp.dir, 'idp-secret');
  writeFileSync(secretFile, 'idp-client-secret-0123456789\n', { mode: 0o600 });
  await must(tunnel(['access', 'idp', 'set', '--issuer', idp.issuer, '--client-id', 'tunnel-fleet', '--client-secret-file', secretFile]), 'idp set');
  const aud: Record<string, string> = {};
  const app = await must(tunnel(['access', 'policy', 'add', 'app.alice.test', '--allow-domain', 'alice.test', '--allow-group', 'eng', '--output', 'json']), 'policy add app');
  aud['app.alice.test'] = (JSON.parse(app.stdout) as { audTag: string }).audTag;
  const short = await must(tunnel(['access', 'policy', 'add', 'short.alice.test', '--allow-email', 'alice@alice.test', '--session-duration', '2s', '--output', 'json']), 'policy add short');
  aud['short.alice.test'] = (JSON.parse(short.stdout) as { audTag: string }).audTag;
  await must(tunnel(['access', 'policy', 'add', 'ssh.alice.test', '--allow-email', 'alice@alice.test']), 'policy add ssh');
  // ssh.alice.test is a raw TCP service (an echo server) for `tunnel access tcp`.
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const config = path.join(tmp.dir, 'config.yml');
  writeFileSync(config, `ingress:\n  - hostname: ssh.alice.test\n    service: tcp://127.0.0.1:${(echo.address() as net.AddressInfo).port}\n  - service: ${origin.url}\n`);

  const connector = new Proc('connector', process.execPath, [CONNECTOR_CLI, 'run', 'a', '--config', config, '--relay', a.connectUrl, '--no-discover', '--ha-connections', '1', '--log-format', 'json'], { TUNNEL_HOME: home });
  await waitFor(() => connector.countLogs((l) => l.event === 'registered') >= 1 || !connector.running, 15_000, { message: 'connector registered' });
  if (!connector.running) throw new Error(`connector exited: ${connector.stderr}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // The test hostnames are this machine; every other name fails to resolve.
      '--host-resolver-rules=MAP *.alice.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
  const relays: [RelayProc, RelayProc] = [a, b];
  return {
    dir: tmp.dir,
    home,
    relays,
    idp,
    origin,
    seen,
    browser,
    tunnel,
    aud,
    url: (host, p = '/', relay = 0) => `http://${host}:${relays[relay]!.http}${p}`,
    async raw(host, p, o = {}) {
      const port = relays[o.relay ?? 0]!.http;
      const r = await request(`http://127.0.0.1:${port}${p}`, { headers: { host: `${host}:${port}`, accept: o.accept ?? 'text/html', ...(o.cookie ? { cookie: o.cookie } : {}) } });
      const body = await r.body.text();
      return { status: r.statusCode, location: r.headers.location as string | undefined, code: r.headers['tunnel-error'] as string | undefined, body };
    },
    async context() {
      const ctx = await browser.newContext();
      // Belt and braces: a request for anything but this machine is aborted in the browser.
      await ctx.route('**/*', (route) => {
        const host = new URL(route.request().url()).hostname;
        return host === '127.0.0.1' || host.endsWith('.alice.test') ? route.continue() : route.abort();
      });
      return ctx;
    },
    async signIn(page, user, host) {
      await page.waitForSelector('input[name=login]', { timeout: 15_000 });
      await page.fill('input[name=login]', user);
      await page.fill('input[name=password]', 'any-password');
      await Promise.all([page.waitForLoadState(), page.click('button[type=submit]')]);
      // The consent page (first time for this user and client), then back to the relay.
      // `host` may carry a port (the CLI's loopback callback shares 127.0.0.1 with the provider).
      const back = (u: URL) => (host.includes(':') ? u.host === host : u.hostname === host);
      const deadline = Date.now() + 15_000;
      while (!back(new URL(page.url())) && Date.now() < deadline) {
        const consent = await page.$('button[type=submit]');
        if (consent) await Promise.all([page.waitForURL(back, { timeout: 2_000 }), consent.click()]).catch(() => {});
        else await page.waitForURL(back, { timeout: 1_000 }).catch(() => {});
      }
      if (!back(new URL(page.url()))) throw new Error(`sign-in as ${user} did not come back to ${host} (at ${page.url()})`);
    },
    async close() {
      await browser.close().catch(() => {});
      await stopAll();
      await origin.close();
      echo.close();
      tmp.cleanup();
    },
  };
}
