import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, RELAY_CLI, Proc, runCli, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { waitFor } from './harness/wait.js';

// Operator commands on a relay host need no flags: they read the store and
// the fleet key from the relay's config (--config, TUNNEL_RELAY_CONFIG, or
// /etc/tunnel-relay/relay.yml), so the hint `tunnel login` prints is the
// whole command. Without any, they say what is missing and create nothing.

const DEFAULT_CONFIG = '/etc/tunnel-relay/relay.yml';

describe('operator commands read the relay config', () => {
  const tmp = tempDir();
  const etc = path.join(tmp.dir, 'etc');
  const keys = path.join(etc, 'fleet-key.json');
  const storeDir = path.join(tmp.dir, 'var', 'store');
  const store = `file:${storeDir}`;
  let relay: RelayProc;
  /** Empty working directory: nothing to find by accident. */
  const cwd = path.join(tmp.dir, 'cwd');
  const relayCli = (args: string[], env: Record<string, string | undefined> = {}) => runCli(RELAY_CLI, args, { TUNNEL_RELAY_CONFIG: undefined, TUNNEL_RELAY_STORE: undefined, TUNNEL_RELAY_KEYS: undefined, ...env }, cwd);

  beforeAll(async () => {
    mkdirSync(etc, { recursive: true });
    mkdirSync(cwd, { recursive: true });
    generateKeyFile(keys);
    // What `tunnel-relay service install` writes: relay.yml without keys:, the fleet key next to it.
    writeFileSync(path.join(etc, 'relay.yml'), `store: ${store}\nlisten: { http: "127.0.0.1:0" }\n`);
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-op' });
  });
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  it('the hint `tunnel login` prints is the whole command on a relay host (TUNNEL_RELAY_CONFIG)', async () => {
    const home = path.join(tmp.dir, 'home');
    const login = new Proc('login', process.execPath, [CONNECTOR_CLI, 'login', '--relay', relay.publicUrl, '--poll-interval', '100'], { TUNNEL_HOME: home });
    const hint = await waitFor(() => /or on a relay host: +(tunnel-relay login approve ([A-Z0-9]{4}-[A-Z0-9]{4}) --account NAME)/.exec(login.stdout), 10_000, { message: 'login hint printed' });
    const listed = await relayCli(['login', 'list'], { TUNNEL_RELAY_CONFIG: path.join(etc, 'relay.yml') });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(hint[2]);
    const args = hint[1]!.split(' ').slice(1).map((a) => (a === 'NAME' ? 'alice' : a));
    const approve = await relayCli(args, { TUNNEL_RELAY_CONFIG: path.join(etc, 'relay.yml') });
    expect(approve.stderr).toBe('');
    expect(approve.code).toBe(0);
    expect((await login.exited).code).toBe(0);
    expect(login.stdout).toContain('Logged in to account alice');
  });

  it('--config names the relay config; relay.yml keys: and relative paths work', async () => {
    const other = path.join(tmp.dir, 'other');
    mkdirSync(other, { recursive: true });
    copyFileSync(keys, path.join(other, 'k.json'));
    writeFileSync(path.join(other, 'relay.yml'), `store: ${store}\nkeys: k.json\n`);
    const r = await relayCli(['account', 'create', 'bob', '--config', path.join(other, 'relay.yml')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^account bob /);
  });

  it.skipIf(existsSync(DEFAULT_CONFIG))('without a flag or a config: one line naming what is missing, and no ./relay-data', async () => {
    const r = await relayCli(['login', 'approve', 'ABCD-EFGH', '--account', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `tunnel-relay: no fleet store: pass --store URL (or TUNNEL_RELAY_STORE), or name the relay's config with --config FILE or TUNNEL_RELAY_CONFIG (none at ${DEFAULT_CONFIG})\n`,
    );
    const noKeys = await relayCli(['account', 'create', 'x', '--store', store]);
    expect(noKeys.code).toBe(1);
    expect(noKeys.stderr).toMatch(/^tunnel-relay: no fleet key: pass --keys FILE/);
    const serve = await relayCli(['serve', '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off']);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toMatch(/^tunnel-relay: no fleet store: /);
    expect(existsSync(path.join(cwd, 'relay-data'))).toBe(false);
    expect(existsSync(path.join(cwd, 'fleet-key.json'))).toBe(false);
  });

  it('`login list` on an empty new store says so (and that the store is new)', async () => {
    const fresh = `file:${path.join(tmp.dir, 'fresh-store')}`;
    const r = await relayCli(['login', 'list', '--store', fresh]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`No pending login codes in ${fresh} (a user starts one with \`tunnel login --relay URL\`)\n`);
    expect(r.stderr).toBe(`note: ${path.join(tmp.dir, 'fresh-store')} does not exist: starting a new, empty store there\n`);
  });

  it('`tunnel-relay keys operator` writes a 0600 key file, never prints it, and keeps an existing one', async () => {
    const out = path.join(tmp.dir, 'keys', 'operator-key');
    const r = await relayCli(['keys', 'operator', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const key = readFileSync(out, 'utf8').trim();
    expect(key.length).toBeGreaterThanOrEqual(32);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(r.stdout).not.toContain(key);
    expect(r.stdout).toBe(`wrote ${out} (mode 0600): pass --operator-key-file ${out} to tunnel-relay serve, or operator-key-file: in relay.yml\n`);
    const again = await relayCli(['keys', 'operator', '--out', out]);
    expect(again.code).toBe(1);
    expect(readFileSync(out, 'utf8').trim()).toBe(key);
    // The relay takes it.
    const withKey = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-keyed', extraArgs: ['--operator-key-file', out] });
    expect(withKey.proc.logs.some((l) => l.event === 'no-operator-key')).toBe(false);
  });

  it('a relay without an operator key warns at start that the dashboard and operator API are disabled', async () => {
    const line = await relay.proc.waitForLog((l) => l.event === 'no-operator-key', 5_000, 'no-operator-key warning');
    expect(line.level).toBe(40);
    expect(line.msg).toMatch(/dashboard and the operator API are disabled; create one with `tunnel-relay keys operator --out FILE`/);
  });
});
