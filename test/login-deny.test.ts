import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, RELAY_CLI, Proc, runCli, startRelay, stopAll, tempDir } from './harness/procs.js';
import { startRedis } from './harness/redis.js';
import { waitFor } from './harness/wait.js';

// A login the operator denies is told so: `tunnel login` exits non-zero with
// "the operator denied this login" (it used to read "unknown or expired", as
// if the code had timed out). Denied with `tunnel-relay login deny CODE`, on
// the embedded store and on Redis (the dashboard's Deny is in
// dashboard-actions.test.ts).

const redis = await startRedis();

describe('`tunnel-relay login deny CODE`', () => {
  const tmp = tempDir('tunnel-login-deny-');
  afterAll(async () => {
    await stopAll();
    await redis?.stop();
    tmp.cleanup();
  });

  const stores: Array<[string, () => string | null]> = [
    ['the file store', () => `file:${path.join(tmp.dir, 'store')}`],
    ['Redis', () => redis?.url ?? null],
  ];

  for (const [name, storeOf] of stores) {
    it.skipIf(name === 'Redis' && !redis)(`on ${name}: the waiting \`tunnel login\` says the operator denied it and exits 1`, { timeout: 60_000 }, async () => {
      const store = storeOf()!;
      const keys = path.join(tmp.dir, `fleet-key-${name.replace(/\W/g, '')}.json`);
      generateKeyFile(keys);
      const relay = await startRelay({ dir: tmp.dir, store, keys });
      const home = path.join(tmp.dir, `home-${name.replace(/\W/g, '')}`);
      const login = new Proc('login', process.execPath, [CONNECTOR_CLI, 'login', '--relay', relay.controlUrl!, '--poll-interval', '100'], { TUNNEL_HOME: home });
      const code = await waitFor(() => /approve this code: ([A-Z0-9]{4}-[A-Z0-9]{4})/.exec(login.stdout)?.[1], 10_000, { message: 'login code printed' });

      const deny = await runCli(RELAY_CLI, ['login', 'deny', code, '--store', store]);
      expect(deny.stderr).toBe('');
      expect(deny.code).toBe(0);
      expect(deny.stdout).toBe(`denied login ${code}\n`);

      const exited = await login.exited;
      expect(exited.code).toBe(1);
      expect(login.stderr).toBe(`tunnel: the operator denied this login (code ${code}): ask them, or run \`tunnel login\` again (login_denied)\n`);
      expect(existsSync(path.join(home, 'cert.json'))).toBe(false);

      // Once told, the code is gone; denying or approving it again says so, exit 1/2.
      const again = await runCli(RELAY_CLI, ['login', 'deny', code, '--store', store]);
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(new RegExp(`^tunnel-relay: no pending login with code ${code} \\(unknown or expired\\) \\(login_not_found\\)\\n$`));
    });
  }
});
