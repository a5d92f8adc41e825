import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import * as path from 'node:path';
import { CONNECTOR_CLI, Proc, RELAY_CLI, runCli, type LogLine } from './harness/procs.js';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';

// The two binaries behave alike where a user would expect it (issue 13 item 4):
// both log-flag spellings, one-line usage errors, `version`, and a --metrics
// that names itself when it cannot be used. Real CLIs against a real relay.

function fileLogs(file: string): LogLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

/** A port something already listens on (127.0.0.1). */
async function busyPort(): Promise<{ port: number; close(): Promise<void> }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as net.AddressInfo).port, close: () => new Promise((r) => s.close(() => r())) };
}

const DEBUG = 20;

describe('cli consistency', () => {
  let fleet: Fleet;
  let origin: Origin;

  beforeAll(async () => {
    fleet = await startFleet({ relays: 1 });
    origin = await startOrigin((_q, s) => s.end('ok'));
  });
  afterAll(async () => {
    await origin?.close();
    await fleet?.close();
  });

  const relayBase = () => ['serve', '--store', fleet.store, '--keys', fleet.keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off'];
  const connectorRun = (extra: string[]) => [CONNECTOR_CLI, 'run', '--url', origin.url, '--relay', fleet.relays[0]!.connectUrl, '--ha-connections', '1', '--log-format', 'json', ...extra];

  it('tunnel run takes --log-level/--log-file (the relay spellings) as well as --loglevel/--logfile', async () => {
    const file = path.join(fleet.dir, 'conn-dash.log');
    const p = new Proc('conn-dash', process.execPath, connectorRun(['--log-level', 'debug', '--log-file', file]), { TUNNEL_TOKEN: fleet.token });
    await waitFor(() => fileLogs(file).some((l) => l.event === 'registered'), 15_000, { message: 'connector registered (in --log-file)' });
    // Each origin request is a debug line: there only at --log-level debug.
    const r = await req(fleet.relays[0]!.publicUrl, { host: fleet.hostname });
    expect(r.status).toBe(200);
    await waitFor(() => fileLogs(file).some((l) => l.level === DEBUG), 10_000, { message: 'a debug line in --log-file' });
    expect(p.logs.length).toBe(0);
    await p.stop();
  });

  it('tunnel-relay serve takes --loglevel/--logfile (the connector spellings), and they win over relay.yml like --log-level', async () => {
    const file = path.join(fleet.dir, 'relay-nodash.log');
    const cfg = path.join(fleet.dir, 'relay-warn.yml');
    // At the file's level (error) the info line `listening` would not be written at all.
    writeFileSync(cfg, 'log: { level: error, file: elsewhere.log }\n');
    const p = new Proc('relay-nodash', process.execPath, [RELAY_CLI, ...relayBase(), '--config', cfg, '--loglevel', 'info', '--logfile', file], {}, fleet.dir);
    await waitFor(() => fileLogs(file).some((l) => l.event === 'listening'), 15_000, { message: 'relay listening (in --logfile, at --loglevel info)' });
    expect(existsSync(path.join(fleet.dir, 'elsewhere.log'))).toBe(false);
    await p.stop();
  });

  it('usage errors are one line and a --help hint, not the whole help', async () => {
    for (const [cli, args] of [
      [CONNECTOR_CLI, ['run', '--no-such-flag']],
      [CONNECTOR_CLI, ['no-such-command']],
      [RELAY_CLI, ['serve', '--no-such-flag']],
      [RELAY_CLI, ['keys', 'generate', '--out']],
    ] as const) {
      const r = await runCli(cli, [...args]);
      expect(r.code, `${args.join(' ')}`).not.toBe(0);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(2);
      expect(lines[0]).toMatch(/^error: /);
      expect(lines[1]).toBe('(run with --help for usage)');
      expect(r.stderr).not.toMatch(/Usage:/);
    }
  });

  it('`version` prints what --version prints, on both binaries', async () => {
    for (const cli of [CONNECTOR_CLI, RELAY_CLI]) {
      const flag = await runCli(cli, ['--version']);
      const cmd = await runCli(cli, ['version']);
      expect(cmd.code).toBe(0);
      expect(cmd.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
      expect(cmd.stdout).toBe(flag.stdout);
    }
  });

  it('tunnel run --metrics: garbage and a busy port are one line naming the flag, exit non-zero', async () => {
    const bad = await runCli(CONNECTOR_CLI, connectorRun(['--metrics', 'nonsense']).slice(1), { TUNNEL_TOKEN: fleet.token });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('tunnel: --metrics: "nonsense" is not an address (expected HOST:PORT, :PORT or PORT)\n');
    const busy = await busyPort();
    try {
      const r = await runCli(CONNECTOR_CLI, connectorRun(['--metrics', `127.0.0.1:${busy.port}`]).slice(1), { TUNNEL_TOKEN: fleet.token });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`tunnel: --metrics: cannot listen on 127.0.0.1:${busy.port}: the port is in use\n`);
    } finally {
      await busy.close();
    }
  });

  it('tunnel-relay serve --metrics: garbage and a busy port are one line naming the flag, exit non-zero', async () => {
    const bad = await runCli(RELAY_CLI, [...relayBase(), '--metrics', 'nonsense'], {}, fleet.dir);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('tunnel-relay: --metrics: "nonsense" is not an address (expected HOST:PORT, :PORT or PORT)\n');
    // Every listener names its flag, and is checked before anything opens (one grammar: @tunnel/protocol host-port).
    const http = await runCli(RELAY_CLI, [...relayBase(), '--http', '127.0.0.1:99999'], {}, fleet.dir);
    expect([http.code, http.stderr]).toEqual([1, 'tunnel-relay: --http: "127.0.0.1:99999": port 99999 is out of range (0 to 65535)\n']);
    const connect = await runCli(RELAY_CLI, [...relayBase(), '--connect', 'off'], {}, fleet.dir);
    expect([connect.code, connect.stderr]).toEqual([1, 'tunnel-relay: --connect: "off" is not an address (expected HOST:PORT, :PORT or PORT) (the connector endpoint cannot be off)\n']);
    const busy = await busyPort();
    try {
      const r = await runCli(RELAY_CLI, [...relayBase(), '--log-level', 'silent', '--metrics', `127.0.0.1:${busy.port}`], {}, fleet.dir);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`tunnel-relay: --metrics: cannot listen on 127.0.0.1:${busy.port}: the port is in use\n`);
    } finally {
      await busy.close();
    }
  });

  it('tunnel run: a duration flag without a unit, or garbage, is one line naming the flag', async () => {
    for (const [flag, value, why] of [
      ['--grace-period', 'abc', 'invalid duration "abc": expected a number followed by a unit (h, m, s or ms), e.g. "30s", "1m30s", "500ms"'],
      ['--grace-period', '30', 'invalid duration "30": missing unit (h, m, s or ms), e.g. "30s"'],
      ['--discovery-interval', '5', 'invalid duration "5": missing unit (h, m, s or ms), e.g. "5s"'],
      // A Node timer over 2^31-1 ms fires at once: refused, with the same words as tunnel-relay's.
      ['--grace-period', '1000h', 'duration "1000h" is too long (at most 596h31m23s)'],
    ] as const) {
      const r = await runCli(CONNECTOR_CLI, connectorRun([flag, value]).slice(1), { TUNNEL_TOKEN: fleet.token });
      expect(r.code, `${flag} ${value}`).toBe(1);
      expect(r.stderr).toBe(`tunnel: ${flag}: ${why}\n`);
    }
  });

  it('tunnel-relay serve: a duration flag without a unit, or garbage, is one line naming the flag', async () => {
    for (const [flag, value, why] of [
      ['--drain-timeout', 'abc', 'invalid duration "abc": expected a number followed by a unit (h, m, s or ms), e.g. "30s", "1m30s", "500ms"'],
      ['--drain-delay', '1000', 'invalid duration "1000": missing unit (h, m, s or ms), e.g. "1000s"'],
      ['--login-ttl', '600', 'invalid duration "600": missing unit (h, m, s or ms), e.g. "600s"'],
      ['--headers-timeout', '30', 'invalid duration "30": missing unit (h, m, s or ms), e.g. "30s"'],
      ['--drain-timeout', '1000h', 'duration "1000h" is too long (at most 596h31m23s)'],
    ] as const) {
      const r = await runCli(RELAY_CLI, [...relayBase().slice(0, -4), '--control', '127.0.0.1:0', '--peer', 'off', '--log-level', 'silent', flag, value], {}, fleet.dir);
      expect(r.code, `${flag} ${value}`).toBe(1);
      expect(r.stderr).toBe(`tunnel-relay: ${flag}: ${why}\n`);
    }
  });

  it('relay.yml: `drain-timeout: 30` is refused with file:line (it was silently taken as 30 ms), `30s` is taken', async () => {
    const bare = path.join(fleet.dir, 'bare.yml');
    writeFileSync(bare, 'region: test\ndrain-timeout: 30\n');
    const r = await runCli(RELAY_CLI, [...relayBase(), '--config', bare], {}, fleet.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`tunnel-relay: ${bare}:2:16: drain-timeout: expected a duration with a unit, e.g. "30s", got the bare number 30\n`);
    const good = path.join(fleet.dir, 'good.yml');
    writeFileSync(good, 'region: test\ndrain-timeout: 30s\nlog: { format: json }\n');
    const p = new Proc('relay-good-yml', process.execPath, [RELAY_CLI, ...relayBase(), '--config', good], {}, fleet.dir);
    await p.waitForLog((l) => l.event === 'listening', 15_000);
    await p.stop();
  });

  it('credential lifetimes take units too (90d, 24h): a bare number is refused naming the flag or file:line', async () => {
    const serve = await runCli(RELAY_CLI, [...relayBase(), '--log-level', 'silent', '--tunnel-token-ttl', '3600'], {}, fleet.dir);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toBe('tunnel-relay: --tunnel-token-ttl: expected a lifetime with a unit, e.g. "3600s" or "90d", got the bare number 3600\n');
    const create = await runCli(RELAY_CLI, ['tunnel', 'create', 'ttl-bare', '--store', fleet.store, '--keys', fleet.keys, '--ttl', '24'], {}, fleet.dir);
    expect(create.code).toBe(1);
    expect(create.stderr).toBe('tunnel-relay: --ttl: expected a lifetime with a unit, e.g. "24s" or "90d", got the bare number 24\n');
    const enroll = await runCli(RELAY_CLI, ['account', 'create', 'ttl-bare', '--store', fleet.store, '--keys', fleet.keys, '--ttl', '24'], {}, fleet.dir);
    expect(enroll.code).toBe(1);
    expect(enroll.stderr).toBe('tunnel-relay: --ttl: expected a lifetime with a unit, e.g. "24s" or "90d", got the bare number 24\n');
    const ok = await runCli(RELAY_CLI, ['tunnel', 'create', 'ttl-units', '--store', fleet.store, '--keys', fleet.keys, '--ttl', '1h30m'], {}, fleet.dir);
    expect(ok.code, ok.stderr).toBe(0);
    const yml = path.join(fleet.dir, 'ttl.yml');
    writeFileSync(yml, 'region: test\naccount-credential-ttl: 30\n');
    const r = await runCli(RELAY_CLI, [...relayBase(), '--config', yml], {}, fleet.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`tunnel-relay: ${yml}:2:25: account-credential-ttl: expected a lifetime with a unit, e.g. "30s" or "90d", got the bare number 30\n`);
  });
});
