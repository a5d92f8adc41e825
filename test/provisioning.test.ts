import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync, readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { Proc, RELAY_CLI, CONNECTOR_CLI, runCli, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

// The cloudflared journey against real relay processes:
// login → create → route dns → run, then list/info/token/delete and every refusal.

const OPERATOR_KEY = 'op-key-for-tests-0123456789';

describe('provisioning: login → create → route → run', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  let relays: RelayProc[];
  let origin: Origin;
  const alice = path.join(tmp.dir, 'alice-home');
  const bob = path.join(tmp.dir, 'bob-home');
  const tunnel = (home: string, args: string[], env: Record<string, string> = {}) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home, ...env });
  const relayCli = (args: string[], withKeys = true) => runCli(RELAY_CLI, [...args, '--store', store, ...(withKeys ? ['--keys', keys] : [])], {}, tmp.dir);

  beforeAll(async () => {
    generateKeyFile(keys);
    origin = await startOrigin((q, s) => s.end(`origin saw ${q.headers.host} ${q.url}`));
    relays = [];
    for (const id of ['relay-a', 'relay-b']) {
      relays.push(await startRelay({ dir: tmp.dir, store, keys, id, extraArgs: ['--login-ttl', '30s'], env: { TUNNEL_RELAY_OPERATOR_KEY: OPERATOR_KEY } }));
    }
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('interactive login: the CLI prints a code, the operator approves it, cert.json is written 0600', async () => {
    const login = new Proc('login', process.execPath, [CONNECTOR_CLI, 'login', '--relay', relays[0]!.controlUrl!, '--poll-interval', '100'], { TUNNEL_HOME: alice });
    const code = await waitFor(() => /approve this code: ([A-Z0-9]{4}-[A-Z0-9]{4})/.exec(login.stdout)?.[1], 10_000, { message: 'login code printed' });
    const approve = await relayCli(['login', 'approve', code, '--account', 'alice']);
    expect(approve.stderr).toBe('');
    expect(approve.code).toBe(0);
    const { code: exit } = await login.exited;
    expect(exit).toBe(0);
    expect(login.stdout).toContain('Logged in to account alice');
    const cert = path.join(alice, 'cert.json');
    expect(statSync(cert).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(cert, 'utf8')).accountName).toBe('alice');
  });

  it('create, route dns, run NAME, and a real request through the tunnel', async () => {
    // An account routes only inside zones it holds: the operator grants alice hers.
    const zone = await relayCli(['zone', 'add', 'alice.test', '--account', 'alice'], false);
    expect(zone.code, zone.stderr).toBe(0);
    const created = await tunnel(alice, ['create', 'app']);
    expect(created.code, created.stderr).toBe(0);
    const id = /with id ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const credFile = path.join(alice, `${id}.json`);
    expect(statSync(credFile).mode & 0o777).toBe(0o600);

    const routed = await tunnel(alice, ['route', 'dns', 'app', 'app.alice.test']);
    expect(routed.code, routed.stderr).toBe(0);

    const run = new Proc('connector', process.execPath, [CONNECTOR_CLI, 'run', 'app', '--url', origin.url, '--log-format', 'json', '--loglevel', 'debug'], { TUNNEL_HOME: alice });
    await waitFor(() => run.countLogs((l) => l.event === 'registered') >= 4, 15_000, { message: '4 connections registered' });
    const regs = run.logs.filter((l) => l.event === 'registered');
    expect(new Set(regs.map((l) => l.relayId)).size).toBe(2);

    const res = await waitFor(async () => {
      const r = await req(`${relays[1]!.publicUrl}/hello?x=1`, { host: 'app.alice.test' });
      return r.status === 200 ? r : null;
    }, 5_000);
    expect(res.text).toBe('origin saw app.alice.test /hello?x=1');

    // list / info show it, for people and for scripts.
    const list = await tunnel(alice, ['list', '--output', 'json']);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ id, name: 'app' })]);
    const info = await waitFor(async () => {
      const r = await tunnel(alice, ['info', 'app', '--output', 'json']);
      const j = JSON.parse(r.stdout) as { connectors: Array<{ connections: unknown[]; version: string }> };
      return j.connectors[0]?.connections.length === 4 ? j : null;
    }, 8_000);
    expect(info.connectors).toHaveLength(1);
    const table = await tunnel(alice, ['info', 'app']);
    expect(table.stdout).toMatch(/CONNECTOR ID\s+CONN\s+RELAY\s+AGE/);
    expect(table.stdout).toContain('relay-a');
    expect(table.stdout).toContain('relay-b');

    // Its token, kept for after the delete.
    const tok = await tunnel(alice, ['token', 'app']);
    expect(tok.code, tok.stderr).toBe(0);
    // Revocation by delete: refused while connected, then --force disconnects within 5 s.
    const refused = await tunnel(alice, ['delete', 'app']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/tunnel_has_connectors/);
    // Dials so far (a start-up dial retried under load is not what this guards).
    const dialsBefore = run.countLogs((l) => l.event === 'dial');
    const t0 = Date.now();
    const del = await tunnel(alice, ['delete', 'app', '--force']);
    expect(del.code, del.stderr).toBe(0);
    const { code: exit } = await Promise.race([run.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('connector still running 5 s after delete')), 5_000))]);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(exit).toBe(3); // README: exit 3 when the tunnel was deleted
    expect(run.stderr).toMatch(/tunnel_deleted/);
    // No reconnect storm: at most one dial per connection slot after the delete.
    expect(run.countLogs((l) => l.event === 'dial') - dialsBefore).toBeLessThanOrEqual(4);
    expect(existsSync(credFile)).toBe(false);

    // A token for the deleted tunnel is refused by the relay with its reason (exit 3).
    const again = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url], { TUNNEL_TOKEN: tok.stdout.trim(), TUNNEL_HOME: alice });
    expect(again.code, again.stderr).toBe(3);
    expect(again.stderr).toMatch(/tunnel_deleted/);
  });

  it('enroll: non-interactive login for scripts, then the same journey', async () => {
    const acct = await relayCli(['account', 'create', 'bob']);
    expect(acct.code, acct.stderr).toBe(0);
    expect((await relayCli(['zone', 'add', 'bob.test', '--account', 'bob'], false)).code).toBe(0);
    const enroll = acct.stdout.trim();
    const login = await tunnel(bob, ['login', '--relay', relays[1]!.controlUrl!, '--enroll', enroll]);
    expect(login.code, login.stderr).toBe(0);
    expect((await tunnel(bob, ['create', 'web'])).code).toBe(0);
    expect((await tunnel(bob, ['route', 'dns', 'web', 'web.bob.test'])).code).toBe(0);
    const tok = await tunnel(bob, ['token', 'web']);
    expect(tok.code).toBe(0);
    const token = tok.stdout.trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    // run --token alone: the relays come from the token.
    const run = new Proc('connector-bob', process.execPath, [CONNECTOR_CLI, 'run', '--url', origin.url, '--log-format', 'json', '--loglevel', 'debug'], { TUNNEL_TOKEN: token, TUNNEL_HOME: bob });
    await waitFor(() => run.countLogs((l) => l.event === 'registered') >= 4, 15_000);
    const res = await waitFor(async () => {
      const r = await req(`${relays[0]!.publicUrl}/`, { host: 'web.bob.test' });
      return r.status === 200 ? r : null;
    }, 5_000);
    expect(res.text).toBe('origin saw web.bob.test /');

    await run.stop();

    // `tunnel run` with no arguments: config.yml in TUNNEL_HOME names the tunnel and its ingress.
    writeFileSync(path.join(bob, 'config.yml'), `tunnel: web\ningress:\n  - hostname: web.bob.test\n    service: ${origin.url}\n  - service: http_status:404\n`);
    const validate = await tunnel(bob, ['ingress', 'validate']);
    expect(validate.stdout).toContain(`OK: ${path.join(bob, 'config.yml')}: 2 ingress rules`);
    const bare = new Proc('connector-bare', process.execPath, [CONNECTOR_CLI, 'run', '--log-format', 'json'], { TUNNEL_HOME: bob, TUNNEL_TOKEN: '' });
    await waitFor(() => bare.countLogs((l) => l.event === 'registered') >= 4, 15_000, { message: 'run with the default config' });
    expect((await req(`${relays[1]!.publicUrl}/cfg`, { host: 'web.bob.test' })).text).toBe('origin saw web.bob.test /cfg');
    await bare.stop();

    // Secrets never reach the logs, even at debug level.
    const cert = JSON.parse(readFileSync(path.join(bob, 'cert.json'), 'utf8')) as { credential: string };
    for (const p of [run, bare, relays[0]!.proc, relays[1]!.proc]) {
      expect(p.stdout).not.toContain(token.split('.')[1]);
      expect(p.stdout).not.toContain(cert.credential.split('.')[1]);
    }
  });

  it('refusals: each with its exit code and message', async () => {
    // Another account cannot see, route or delete your tunnels.
    await tunnel(alice, ['create', 'private']);
    const seen = await tunnel(bob, ['info', 'private']);
    expect(seen.code).toBe(1);
    expect(seen.stderr).toMatch(/^tunnel: you have no tunnel named private \(tunnel_not_found\)\n$/);
    const del = await tunnel(bob, ['delete', 'private']);
    expect(del.stderr).toMatch(/tunnel_not_found/);
    // Hostname inside another account's zone.
    const taken = await tunnel(alice, ['route', 'dns', 'private', 'web.bob.test']);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/inside or covers zone bob\.test of another account \(zone_owned_by_other_account\)/);
    // Hostname already routed to another of your own tunnels.
    expect((await tunnel(alice, ['route', 'dns', 'private', 'app2.alice.test'])).code).toBe(0);
    await tunnel(alice, ['create', 'other']);
    const own = await tunnel(alice, ['route', 'dns', 'other', 'app2.alice.test']);
    expect(own.code).toBe(1);
    expect(own.stderr).toMatch(/hostname_taken/);
    // One hostname grammar (protocol's) for the control API, the store and a connector's ingress:
    // `_` is a valid label character everywhere; a space is not, and the API says so.
    const underscore = await tunnel(alice, ['route', 'dns', 'other', 'a_b.alice.test']);
    expect(underscore.code, underscore.stderr).toBe(0);
    const spaced = await tunnel(alice, ['route', 'dns', 'other', 'bad host.alice.test']);
    expect(spaced.code).toBe(1);
    expect(spaced.stderr).toMatch(/hostname: "bad host\.alice\.test" is not a valid hostname \(bad_request\)/);
    // Tampered token: refused before the upgrade, exit 2, reason printed.
    const tok = (await tunnel(alice, ['token', 'private'])).stdout.trim();
    const [claims, sig] = tok.split('.');
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(claims!, 'base64url').toString()), tunnelId: 'someone-else' })).toString('base64url');
    const tampered = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url], { TUNNEL_TOKEN: `${forged}.${sig}`, TUNNEL_HOME: alice });
    expect(tampered.code).toBe(2);
    expect(tampered.stderr).toMatch(/invalid_credential/);
    // Revoked credential.
    expect((await relayCli(['revoke', tok], false)).code).toBe(0);
    const revoked = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url], { TUNNEL_TOKEN: tok, TUNNEL_HOME: alice });
    expect(revoked.code).toBe(3); // README: exit 3 when revoked
    expect(revoked.stderr).toMatch(/credential_revoked/);
    // Approval of an unknown code.
    const unknown = await relayCli(['login', 'approve', 'ZZZZ-ZZZZ']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no pending login with code ZZZZ-ZZZZ.*login_not_found/);
    // Not logged in.
    const none = await tunnel(path.join(tmp.dir, 'empty-home'), ['list']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/run `tunnel login --relay URL` first/);
  });

  it('an expired login code ends `tunnel login` with a clear error', async () => {
    const short = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-short', extraArgs: ['--login-ttl', '1s'] });
    const home = path.join(tmp.dir, 'late-home');
    const r = await tunnel(home, ['login', '--relay', short.controlUrl!, '--poll-interval', '200']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/login_expired/);
    expect(existsSync(path.join(home, 'cert.json'))).toBe(false);
    await short.proc.stop();
    expect(readdirSync(tmp.dir).length).toBeGreaterThan(0);
  });
});
