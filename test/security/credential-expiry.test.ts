// Credentials that expire and rotate, against real relays, connectors and
// CLIs: an expired credential is refused with `credential_expired` (and the
// CLI exits non-zero saying so), a tunnel token is rotated under a running
// connector under load with zero failed requests and the old token is
// refused after the grace period, enrollment tokens are single use, and the
// control API's tunnel-credential check no longer skips revocation.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { generateKeyFile, loadKeyFile } from '../../packages/relay/src/control/keys.js';
import { peekClaims, signToken, TokenKind } from '../../packages/protocol/src/index.js';
import { CONNECTOR_CLI, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { rawHttp } from '../harness/data-path.js';
import { req } from '../harness/http.js';
import { HealthView, loadOriginHandler, startLoad } from '../harness/load.js';
import { waitFor } from '../harness/wait.js';

const now = () => Math.floor(Date.now() / 1000);

/** A connector's first request, with `token`: the relay's refusal (status and JSON code), before any upgrade. */
async function connectRefusal(relay: RelayProc, token: string): Promise<{ status: number; code: string; message: string }> {
  const r = await rawHttp(
    relay.connect,
    'GET /v1/connect HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}\r\nTunnel-Connector-Id: probe\r\nTunnel-Conn-Index: 0\r\n\r\n`,
  );
  const err = (JSON.parse(r.body) as { error: { code: string; message: string } }).error;
  return { status: r.status, code: err.code, message: err.message };
}

describe('security: credentials expire and rotate', () => {
  const tmp = tempDir();
  const keysFile = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const host = 'app.test';
  let relays: RelayProc[];
  let origin: Origin;
  let keys: ReturnType<typeof loadKeyFile>;
  let opToken: string;
  const relayCli = (args: string[]) => runCli(RELAY_CLI, [...args, '--store', store, '--keys', keysFile], {}, tmp.dir);
  const tunnel = (home: string, args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home });
  /** A fleet-signed tunnel token like `opToken`, with claims changed. */
  const resign = (base: string, change: Record<string, unknown>) => {
    const { kind: _kind, ...claims } = peekClaims(base)!;
    return signToken(TokenKind.Tunnel, { ...claims, ...change }, keys.secretKey);
  };
  const enroll = async (home: string, token: string) => tunnel(home, ['login', '--relay', relays[0]!.controlUrl!, '--enroll', token]);

  beforeAll(async () => {
    generateKeyFile(keysFile);
    keys = loadKeyFile(keysFile);
    origin = await startOrigin(loadOriginHandler);
    relays = [];
    for (const id of ['relay-a', 'relay-b']) relays.push(await startRelay({ dir: tmp.dir, store, keys: keysFile, id }));
    const created = await relayCli(['tunnel', 'create', 'app', '--zone', host, '--hostname', host, '--account', 'acme', ...relays.flatMap((r) => ['--relay-url', r.connectUrl])]);
    expect(created.code, created.stderr).toBe(0);
    opToken = created.stdout.trim();
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('tokens carry exp: a tunnel token a year, an account credential 90 days', async () => {
    const exp = peekClaims(opToken)!.exp as number;
    expect(exp - now()).toBeGreaterThan(364 * 86400);
    expect(exp - now()).toBeLessThanOrEqual(365 * 86400);
    const t = await relayCli(['account', 'create', 'acme']);
    const home = path.join(tmp.dir, 'exp-home');
    expect((await enroll(home, t.stdout.trim())).code).toBe(0);
    const cert = JSON.parse(readFileSync(path.join(home, 'cert.json'), 'utf8')) as { credential: string };
    const aexp = peekClaims(cert.credential)!.exp as number;
    expect(aexp - now()).toBeGreaterThan(89 * 86400);
    expect(aexp - now()).toBeLessThanOrEqual(90 * 86400);
  });

  it('an expired tunnel token: the relay refuses it with credential_expired; `tunnel run` exits 2 saying so', async () => {
    const expired = resign(opToken, { exp: now() - 5, jti: 'expired-1' });
    for (const r of relays) {
      const refusal = await connectRefusal(r, expired);
      expect(refusal).toMatchObject({ status: 401, code: 'credential_expired' });
      expect(refusal.message).toMatch(/expired/);
    }
    const run = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url, ...relays.flatMap((r) => ['--relay', r.connectUrl]), '--no-discover'], { TUNNEL_TOKEN: expired });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('credential_expired');
  });

  it('a token that expires under a running connector: the relay ends its connections, the connector exits 2 with credential_expired', async () => {
    const short = resign(opToken, { exp: now() + 5, jti: 'short-lived' });
    const c = await startConnector({ token: short, relays: relays.map((r) => r.connectUrl), url: origin.url, ha: 2, extraArgs: ['--no-discover'] });
    await waitFor(() => !c.running, 20_000, { message: 'connector exits once its credential expired' });
    const { code } = await c.exited;
    expect(code).toBe(2);
    expect(c.stderr).toContain('credential_expired');
  });

  it('an expired account credential: the control API refuses it and the CLI exits 1 with credential_expired', async () => {
    const home = path.join(tmp.dir, 'expired-account');
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const acme = peekClaims(opToken)!.accountId as string;
    const credential = signToken(TokenKind.Account, { jti: 'acct-expired', accountId: acme, accountName: 'acme', controlUrl: relays[0]!.controlUrl!, iat: now() - 100, exp: now() - 1 }, keys.secretKey);
    writeFileSync(path.join(home, 'cert.json'), JSON.stringify({ accountId: acme, accountName: 'acme', controlUrl: relays[0]!.controlUrl, credential }), { mode: 0o600 });
    const r = await tunnel(home, ['list']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('credential_expired');
  });

  it('the control API checks tunnel credentials like the connector endpoint: a non-string jti, an expired or revoked token are refused', async () => {
    const ask = (t: string) => req(`${relays[0]!.controlUrl}/v1/connector/routes`, { headers: { authorization: `Bearer ${t}` } });
    expect((await ask(opToken)).status).toBe(200);
    const numericJti = await ask(resign(opToken, { jti: 42 }));
    expect(numericJti.status).toBe(401);
    expect(numericJti.json<{ error: { code: string } }>().error.code).toBe('invalid_credential');
    const expired = await ask(resign(opToken, { exp: now() - 1 }));
    expect(expired.json<{ error: { code: string } }>().error.code).toBe('credential_expired');
    const victim = resign(opToken, { jti: 'revoke-me' });
    const revoked = await runCli(RELAY_CLI, ['revoke', victim, '--store', store], {}, tmp.dir);
    expect(revoked.code, revoked.stderr).toBe(0);
    await waitFor(async () => (await ask(victim)).status === 403, 5_000, { message: 'revocation reaches the control API' });
  });

  it('enrollment tokens are single use unless created --reusable', async () => {
    const once = (await relayCli(['account', 'create', 'solo'])).stdout.trim();
    expect((await enroll(path.join(tmp.dir, 'solo-1'), once)).code).toBe(0);
    const second = await enroll(path.join(tmp.dir, 'solo-2'), once);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('enroll_used');
    // On the other relay too (one fleet store).
    const third = await tunnel(path.join(tmp.dir, 'solo-3'), ['login', '--relay', relays[1]!.controlUrl!, '--enroll', once]);
    expect(third.stderr).toContain('enroll_used');
    const many = (await relayCli(['account', 'create', 'team', '--reusable'])).stdout.trim();
    for (const h of ['team-1', 'team-2', 'team-3']) expect((await enroll(path.join(tmp.dir, h), many)).code).toBe(0);
  });

  it('tunnel login --refresh replaces a valid account credential; the old one is refused', async () => {
    const home = path.join(tmp.dir, 'refresh-home');
    expect((await enroll(home, (await relayCli(['account', 'create', 'acme'])).stdout.trim())).code).toBe(0);
    const before = readFileSync(path.join(home, 'cert.json'), 'utf8');
    const r = await tunnel(home, ['login', '--relay', relays[0]!.controlUrl!, '--refresh']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(path.join(home, 'cert.json'), 'utf8')).not.toBe(before);
    expect((await tunnel(home, ['list'])).code).toBe(0);
    const oldHome = path.join(tmp.dir, 'refresh-old');
    mkdirSync(oldHome, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(oldHome, 'cert.json'), before, { mode: 0o600 });
    const old = await tunnel(oldHome, ['list']);
    expect(old.code).toBe(1);
    expect(old.stderr).toContain('credential_revoked');
  });

  it('tunnel token --rotate under a running connector under load: zero failed requests, connections move one at a time, the old token is refused after the grace', async () => {
    const home = path.join(tmp.dir, 'rotate-home');
    expect((await enroll(home, (await relayCli(['account', 'create', 'acme'])).stdout.trim())).code).toBe(0);
    // `tunnel run app` fetches the credentials file into TUNNEL_HOME and runs from it.
    const c = await startConnector({ token: '', relays: relays.map((r) => r.connectUrl), ha: 4, url: origin.url, extraArgs: ['app'], env: { TUNNEL_HOME: home } });
    const credFile = readdirSync(home).find((f) => f !== 'cert.json' && f.endsWith('.json'))!;
    const oldToken = (JSON.parse(readFileSync(path.join(home, credFile), 'utf8')) as { token: string }).token;
    const health = new HealthView(() => relays);
    const load = startLoad({ health, host, concurrency: 4, maxMs: 45_000 });
    try {
      await waitFor(() => load.stats.ok >= 20, 15_000, { message: 'load flowing' });
      const rot = await tunnel(home, ['token', 'app', '--rotate', '--grace', '4s']);
      expect(rot.code, rot.stderr).toBe(0);
      expect(rot.stdout).toContain('stops working at');
      const newToken = (JSON.parse(readFileSync(path.join(home, credFile), 'utf8')) as { token: string }).token;
      expect(newToken).not.toBe(oldToken);
      await waitFor(() => c.logs.some((l) => l.event === 'credential-rotated'), 20_000, { message: 'connector rotated every connection' });
      const okCount = load.stats.ok;
      // Nothing was cut early: no connection was lost while moving.
      expect(c.logs.filter((l) => l.event === 'lost')).toEqual([]);
      // After the grace the old token is refused (probing before would be accepted, and upgraded).
      const revokesAt = Date.parse(/stops working at (\S+)\./.exec(rot.stdout)![1]!);
      await waitFor(() => Date.now() > revokesAt, 15_000, { message: 'grace period over' });
      const refusal = await connectRefusal(relays[0]!, oldToken);
      expect(refusal).toMatchObject({ status: 403, code: 'credential_revoked' });
      await waitFor(() => load.stats.ok >= okCount + 40, 20_000, { message: 'load continues after the grace' });
      expect(c.running).toBe(true);
      expect(c.logs.filter((l) => l.event === 'registered').length).toBeGreaterThanOrEqual(8);
    } finally {
      const stats = await load.stop();
      health.stop();
      console.log(`rotation under load: ${stats.ok} ok, ${stats.failures.length} failed ${JSON.stringify(stats.failures.slice(0, 3))}`);
      expect(stats.failures).toEqual([]);
    }
  });
});
