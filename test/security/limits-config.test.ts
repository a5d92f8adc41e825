import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { RELAY_CLI, runCli, startRelay, stopAll, tempDir } from '../harness/procs.js';

// The ceilings in relay.yml: a bad value names the file, line and key; a
// good one is applied (here: one pending login per IP, so the second is a 429).

describe('security: ceilings from relay.yml', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  generateKeyFile(keys);
  const store = `file:${path.join(tmp.dir, 'store')}`;
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  it('a negative or unknown limit is refused with file, line and key', async () => {
    const bad = path.join(tmp.dir, 'bad.yml');
    writeFileSync(bad, `store: ${store}\nlimits:\n  max-sessions-per-token: -1\n  max-everything: 3\n`);
    const r = await runCli(RELAY_CLI, ['serve', '--config', bad, '--keys', keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off'], {}, tmp.dir, 15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${bad}:3:`);
    expect(r.stderr).toMatch(/limits\.max-sessions-per-token/);
    expect(r.stderr).toMatch(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:\\d+: limits\\.max-everything: unknown key`));
  });

  it('a flag that is not a whole number is refused naming the flag', async () => {
    const r = await runCli(RELAY_CLI, ['serve', '--store', store, '--keys', keys, '--max-pending-logins', '10s'], {}, tmp.dir, 15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--max-pending-logins: expected a whole number/);
  });

  it('a duration limit flag without a unit is refused naming the flag', async () => {
    const r = await runCli(RELAY_CLI, ['serve', '--store', store, '--keys', keys, '--body-idle-timeout', '10000'], {}, tmp.dir, 15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('tunnel-relay: --body-idle-timeout: invalid duration "10000": missing unit (h, m, s or ms), e.g. "10000s"\n');
  });

  it('limits from the file apply', async () => {
    const good = path.join(tmp.dir, 'good.yml');
    writeFileSync(good, `limits:\n  max-pending-logins-per-ip: 1\n  body-idle-timeout: 30s\n`);
    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-cfg', extraArgs: ['--config', good] });
    const login = async () => {
      const res = await request(`${relay.controlUrl}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ boxPublicKey: 'B'.repeat(44) }) });
      return { status: res.statusCode, body: (await res.body.json()) as { error?: { code: string } } };
    };
    expect((await login()).status).toBe(201);
    const second = await login();
    expect(second.status).toBe(429);
    expect(second.body.error?.code).toBe('too_many_logins');
  });
});
