import { afterAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, RELAY_CLI, runCli, tempDir } from './harness/procs.js';

// A systemd unit runs with ProtectHome=yes and PrivateTmp=yes, so a command
// under /home, /root or /tmp (a checkout, a home-prefix npm install) would
// fail at every start. `service install` refuses it and prints the commands
// that install a runnable copy under /usr/local and install the service from
// there.

describe('service install refuses a command the service cannot see', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('tunnel service install --exec under /home: refused with the pack/install command and the same install from /usr/local', async () => {
    const units = path.join(tmp.dir, 'units');
    const etc = path.join(tmp.dir, 'etc');
    const args = ['service', 'install', '--url', 'http://127.0.0.1:8000', '--exec', '/usr/bin/node /home/ann/tunnel/packages/connector/dist/cli/cli.js', '--unit-dir', units, '--config-dir', etc, '--no-start'];
    const r = await runCli(CONNECTOR_CLI, args, { TUNNEL_TOKEN: 'never-printed' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'tunnel: --exec runs from /home/ann/tunnel/packages/connector/dist/cli/cli.js, under /home, which the service cannot see (ProtectHome=yes hides /home, /root and /run/user; PrivateTmp=yes hides /tmp). Install it system-wide, then install the service from there:\n' +
        '  (cd /home/ann/tunnel && npm pack -w packages/protocol -w packages/host -w packages/connector -w packages/relay && npm install -g --prefix /usr/local ./tunnel-*.tgz)\n' +
        `  /usr/local/bin/tunnel service install --url http://127.0.0.1:8000 --unit-dir ${units} --config-dir ${etc} --no-start\n` +
        '(or pass --exec with a command outside those directories)\n',
    );
    expect(existsSync(path.join(units, 'tunnel.service'))).toBe(false);
    expect(existsSync(path.join(etc, 'token'))).toBe(false);
  });

  it('tunnel-relay service install from /tmp is refused; from /usr/local it installs', async () => {
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const units = path.join(tmp.dir, 'relay-units');
    const etc = path.join(tmp.dir, 'relay-etc');
    const base = ['service', 'install', '--keys', keys, '--unit-dir', units, '--config-dir', etc, '--no-start', '--connect', '127.0.0.1:7844', '--control', '127.0.0.1:7000', '--peer', '127.0.0.1:7845'];
    const hidden = await runCli(RELAY_CLI, [...base, '--exec', '/tmp/npm-global/bin/tunnel-relay']);
    expect(hidden.code).toBe(1);
    expect(hidden.stderr).toMatch(/^tunnel-relay: --exec runs from \/tmp\/npm-global\/bin\/tunnel-relay, under \/tmp, which the service cannot see /);
    expect(hidden.stderr).toContain('\n  npm install -g --prefix /usr/local ./tunnel-protocol-*.tgz ./tunnel-host-*.tgz ./tunnel-connector-*.tgz ./tunnel-relay-*.tgz\n');
    expect(existsSync(path.join(units, 'tunnel-relay.service'))).toBe(false);
    const visible = await runCli(RELAY_CLI, [...base, '--exec', '/usr/local/bin/tunnel-relay']);
    expect(visible.code, visible.stderr).toBe(0);
    expect(readFileSync(path.join(units, 'tunnel-relay.service'), 'utf8')).toContain('ExecStart=/usr/local/bin/tunnel-relay serve --config');
    writeFileSync(path.join(tmp.dir, 'done'), '');
  });
});
