import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import net from 'node:net';
import { CONNECTOR_CLI, Proc, runCli } from './harness/procs.js';
import { chromiumOrSkip, startAccessFleet, type AccessFleet } from './harness/access-fleet.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

// Issue 15, Access for people: a real OpenID provider process (oidc-provider)
// and Chromium going through its real login pages. An allowed user gets in
// and the origin receives a signed assertion naming her; a user of another
// domain gets the deny page; an expired session logs in again; logout ends
// the session; the session cookie is HttpOnly, SameSite=Lax, host-only, and
// opens on every relay of the fleet.

const skip = chromiumOrSkip('Access browser logins');

describe.skipIf(skip)('Access: browser login through an OpenID Connect provider', () => {
  let f: AccessFleet;

  beforeAll(async () => {
    f = await startAccessFleet();
  });
  afterAll(async () => {
    await f?.close();
  });

  const raw: AccessFleet['raw'] = (...a) => f.raw(...a);
  const sessionOf = async (ctx: import('playwright-core').BrowserContext) => {
    const c = (await ctx.cookies()).find((x) => x.name === 'tunnel_access');
    return c ? `tunnel_access=${c.value}` : undefined;
  };
  const jwks = async () => createLocalJWKSet((await req(`${f.relays[0].controlUrl}/.well-known/tunnel-access/certs`)).json<JSONWebKeySet>());

  it('an allowed user signs in at the provider and lands on the page she asked for, with a verifiable assertion', async () => {
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(f.url('app.alice.test', '/hello?x=1'));
    expect(new URL(page.url()).origin).toBe(f.idp.issuer);
    await f.signIn(page, 'alice', 'app.alice.test');
    expect(new URL(page.url()).pathname + new URL(page.url()).search).toBe('/hello?x=1');
    expect(await page.textContent('#origin')).toBe('ok /hello?x=1');
    const got = f.seen.at(-1)!;
    const { payload } = await jwtVerify(String(got.headers['tunnel-access-jwt-assertion']), await jwks(), { audience: f.aud['app.alice.test'] });
    expect(payload).toMatchObject({ email: 'alice@alice.test', sub: 'alice', groups: ['staff'], type: 'app' });
    expect(got.headers['tunnel-access-authenticated-user-email']).toBe('alice@alice.test');
    // The relay's cookies are a credential: the origin never sees them.
    expect(String(got.headers.cookie ?? '')).not.toContain('tunnel_access');
    const cookies = await ctx.cookies();
    const session = cookies.find((c) => c.name === 'tunnel_access')!;
    expect(session).toMatchObject({ domain: 'app.alice.test', path: '/', httpOnly: true, sameSite: 'Lax', secure: false });
    expect(session.expires * 1000 - Date.now()).toBeLessThanOrEqual(3600_000 + 5_000);
    expect(cookies.find((c) => c.name === 'tunnel_access_login')).toBeUndefined();
    // Sealed by relay A, opened by relay B: one fleet key.
    expect((await raw('app.alice.test', '/via-b', { relay: 1, cookie: `tunnel_access=${session.value}` })).status).toBe(200);
    await ctx.close();
  });

  it('a member of an allowed group gets in from another domain', async () => {
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(f.url('app.alice.test', '/team'));
    await f.signIn(page, 'bob', 'app.alice.test');
    expect(await page.textContent('#origin')).toBe('ok /team');
    await ctx.close();
  });

  it('a user of another domain gets the deny page (403), and the origin never sees her', async () => {
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(f.url('app.alice.test', '/secret'));
    const before = f.seen.length;
    const denied = page.waitForResponse((r) => new URL(r.url()).hostname === 'app.alice.test' && r.status() === 403);
    await f.signIn(page, 'mallory', 'app.alice.test');
    await denied;
    expect(await page.textContent('body')).toContain('mallory@evil.test is not allowed to reach app.alice.test');
    expect(f.seen.length).toBe(before);
    await ctx.close();
  });

  it('an email the provider has not verified matches no email or domain rule', async () => {
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(f.url('app.alice.test', '/'));
    const denied = page.waitForResponse((r) => new URL(r.url()).hostname === 'app.alice.test' && r.status() === 403);
    await f.signIn(page, 'unverified', 'app.alice.test');
    await denied;
    await ctx.close();
  });

  it('logout ends the session: the next visit goes back to the provider', async () => {
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(f.url('app.alice.test', '/before'));
    await f.signIn(page, 'alice', 'app.alice.test');
    expect(await page.textContent('#origin')).toBe('ok /before');
    await page.goto(f.url('app.alice.test', '/.tunnel/access/logout'));
    expect(await page.textContent('h1')).toBe('Logged out');
    expect((await ctx.cookies()).find((c) => c.name === 'tunnel_access')).toBeUndefined();
    const r = await raw('app.alice.test', '/after', { cookie: await sessionOf(ctx) });
    expect(r.status).toBe(302);
    expect(r.location).toMatch(new RegExp(`^${f.idp.issuer}/`));
    await ctx.close();
  });

  it('an expired session logs in again, and lands back where it was', async () => {
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(f.url('short.alice.test', '/one'));
    await f.signIn(page, 'alice', 'short.alice.test');
    expect(await page.textContent('#origin')).toBe('ok /one');
    // The policy's session lasts 2 s: then the relay sends the browser to the provider again.
    await waitFor(
      async () => {
        const r = await raw('short.alice.test', '/two', { cookie: await sessionOf(ctx) });
        return r.status === 302 && !!r.location?.startsWith(f.idp.issuer);
      },
      10_000,
      { message: 'the short session expired' },
    );
    await page.goto(f.url('short.alice.test', '/two'));
    // The provider still knows alice: either its form again or straight back.
    if (new URL(page.url()).hostname !== 'short.alice.test') await f.signIn(page, 'alice', 'short.alice.test');
    expect(await page.textContent('#origin')).toBe('ok /two');
    await ctx.close();
  });

  it('an API client without a session is told to log in (401 JSON), not redirected', async () => {
    const r = await raw('app.alice.test', '/api', { accept: 'application/json' });
    expect(r.status).toBe(401);
    expect(r.code).toBe('access_login_required');
  });

  it('tunnel access tcp: one browser login through a local callback, then the saved token carries TCP; without it, a clear refusal', async () => {
    const relay = `http://127.0.0.1:${f.relays[0].http}`;
    const tcp = ['access', 'tcp', '--hostname', 'ssh.alice.test', '--relay', relay];
    // No login yet: refused with the way out named, non-zero exit.
    const refused = await runCli(CONNECTOR_CLI, tcp, { TUNNEL_HOME: f.home });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('access_login_required');
    expect(refused.stderr).toContain('tunnel access login --hostname ssh.alice.test');

    const login = new Proc('access-login', process.execPath, [CONNECTOR_CLI, 'access', 'login', '--hostname', 'ssh.alice.test', '--relay', relay], { TUNNEL_HOME: f.home });
    const link = await waitFor(() => /open this URL[^\n]*\n\s+(\S+)/.exec(login.stderr)?.[1], 10_000, { message: 'access login prints its URL' });
    expect(new URL(link).hostname).toBe('ssh.alice.test');
    const ctx = await f.context();
    const page = await ctx.newPage();
    await page.goto(link);
    await f.signIn(page, 'alice', new URL(new URL(link).searchParams.get('callback')!).host);
    expect(await page.textContent('h1')).toBe('Logged in');
    expect((await login.exited).code).toBe(0);
    await ctx.close();

    const carry = new Proc('access-tcp', process.execPath, [CONNECTOR_CLI, ...tcp, '--url', '127.0.0.1:0'], { TUNNEL_HOME: f.home });
    const addr = await waitFor(() => /listening on 127\.0\.0\.1:(\d+)/.exec(carry.stderr)?.[1], 10_000, { message: 'access tcp listening' });
    const sock = net.connect(Number(addr), '127.0.0.1');
    sock.write('ping over access\n');
    let echoed = '';
    sock.on('data', (d: Buffer) => (echoed += d.toString()));
    await waitFor(() => echoed.includes('ping over access'), 10_000, { message: 'the echo came back through the tunnel' });
    sock.destroy();
    carry.signal('SIGTERM');
  });
});
