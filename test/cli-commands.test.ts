import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { freePort } from './harness/ports.js';
import { req } from './harness/http.js';

// The smaller promises of the CLI (issue #13 item 4): `tunnel logout`, route
// names in `route list`, `access tcp` to an HTTP route, a warning when --url
// names a port nothing listens on, and a `tunnel:` key that contradicts the
// credentials file.

describe('tunnel CLI commands', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const home = path.join(tmp.dir, 'home');
  let relay: RelayProc;
  let origin: Origin;
  const tunnel = (args: string[], env: Record<string, string> = {}) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home, ...env });
  const relayCli = (args: string[]) => runCli(RELAY_CLI, [...args, '--store', store, '--keys', keys], {}, tmp.dir);
  const login = async () => {
    const acct = await relayCli(['account', 'create', 'dana']);
    expect(acct.code, acct.stderr).toBe(0);
    const r = await tunnel(['login', '--relay', relay.controlUrl!, '--enroll', acct.stdout.trim()]);
    expect(r.code, r.stderr).toBe(0);
  };

  beforeAll(async () => {
    generateKeyFile(keys);
    origin = await startOrigin((_q, s) => s.end('hello'));
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-cmd' });
    await login();
    const z = await runCli(RELAY_CLI, ['zone', 'add', 'cmd.test', '--account', 'dana', '--store', store], {}, tmp.dir);
    expect(z.code, z.stderr).toBe(0);
    expect((await tunnel(['create', 'app'])).code).toBe(0);
    const route = await tunnel(['route', 'dns', 'app', 'app.cmd.test']);
    expect(route.code, route.stderr).toBe(0);
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('`route list` names the tunnel of each route (table and json)', async () => {
    const id = (JSON.parse((await tunnel(['list', '--output', 'json'])).stdout) as Array<{ id: string; name: string }>).find((t) => t.name === 'app')!.id;
    const table = await tunnel(['route', 'list']);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^HOSTNAME +TUNNEL +TUNNEL ID +CREATED$/);
    expect(lines[1]).toMatch(new RegExp(`^app\\.cmd\\.test +app +${id} +\\d{4}-`));
    const json = JSON.parse((await tunnel(['route', 'list', '--output', 'json'])).stdout) as Array<{ hostname: string; tunnelName: string }>;
    expect(json).toEqual([expect.objectContaining({ hostname: 'app.cmd.test', tunnelId: id, tunnelName: 'app' })]);
  });

  it('`tunnel access tcp` to an HTTP route says so in one line, without HTML', async () => {
    const token = (await tunnel(['token', 'app'])).stdout.trim();
    const c = await startConnector({ token, relays: [relay.connectUrl], url: origin.url, ha: 1 });
    const r = await runCli(CONNECTOR_CLI, ['access', 'tcp', '--hostname', 'app.cmd.test', '--relay', relay.publicUrl]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('tunnel: refused: 502 http_service_over_tcp (from the connector): app.cmd.test is an HTTP route, not raw TCP: open https://app.cmd.test/ with a browser or curl.\n');
    // The route itself still serves HTTP.
    expect((await req(`${relay.publicUrl}/`, { host: 'app.cmd.test' })).text).toBe('hello');
    await c.stop(5_000);
  });

  it('`tunnel run --url` to a port nothing listens on warns at start (and still connects)', async () => {
    const closed = await freePort();
    const token = (await tunnel(['token', 'app'])).stdout.trim();
    const c = await startConnector({ token, relays: [relay.connectUrl], url: `http://127.0.0.1:${closed}`, ha: 1 });
    const warn = await c.waitForLog((l) => l.event === 'origin-unreachable', 10_000, 'origin-unreachable warning');
    expect(warn.level).toBe(40);
    expect(warn.msg).toBe(`nothing answers at http://127.0.0.1:${closed} (ECONNREFUSED): requests get a 502 until the origin listens there`);
    await c.stop(5_000);
    const fine = await startConnector({ token, relays: [relay.connectUrl], url: origin.url, ha: 1 });
    await fine.waitForLog((l) => l.event === 'registered', 5_000, 'registered');
    expect(fine.logs.some((l) => l.event === 'origin-unreachable')).toBe(false);
    await fine.stop(5_000);
  });

  it('a `tunnel:` key that is not the tunnel of credentials-file is an error naming file and line', async () => {
    const creds = (JSON.parse((await tunnel(['list', '--output', 'json'])).stdout) as Array<{ id: string; name: string }>).find((t) => t.name === 'app')!;
    const file = path.join(home, `${creds.id}.json`);
    expect(existsSync(file)).toBe(true);
    const cfg = path.join(tmp.dir, 'config.yml');
    writeFileSync(cfg, `credentials-file: ${file}\ntunnel: billing\ningress:\n  - service: ${origin.url}\n`);
    const r = await tunnel(['run', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`tunnel: ${cfg}:2:9: tunnel: "billing" is not the tunnel in credentials-file ${file} (app, ${creds.id})\n`);
  });

  it('`tunnel logout` revokes the account credential fleet-wide and removes cert.json', async () => {
    const certFile = path.join(home, 'cert.json');
    const old = JSON.parse(readFileSync(certFile, 'utf8')) as { credential: string };
    const r = await tunnel(['logout']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`Logged out of account dana: removed ${certFile}\n`);
    expect(existsSync(certFile)).toBe(false);
    const refused = await req(`${relay.controlUrl}/v1/tunnels`, { headers: { authorization: `Bearer ${old.credential}` } });
    expect(refused.status).toBe(403);
    expect(refused.json()).toMatchObject({ error: { code: 'credential_revoked' } });
    const again = await tunnel(['logout']);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(`Not logged in: no ${certFile}\n`);
  });
});
