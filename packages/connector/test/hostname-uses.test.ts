// The connector's own uses of a hostname outside config.yml take the system's
// one grammar (@tunnel/protocol hostname.ts): the Access token file of
// `tunnel access login` and the hostname a relay grants a quick tunnel. Both
// once had a regex of their own that refused `_`, which routes may carry.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { useTempTunnelHome } from './temp-tunnel-home.js';
import { AccessLoginError, tokenPath } from '../src/access/access-login.js';
import { grant } from '../src/quick/quick-client.js';
import { ControlError } from '../src/ha/control-client.js';

describe('hostnames outside config.yml', () => {
  const home = useTempTunnelHome('tunnel-home-');

  it('the Access token file: any exact routable name, lower-cased; nothing that could leave TUNNEL_HOME/access', () => {
    expect(tokenPath('Db_1.Example.com')).toBe(join(home(), 'access', 'db_1.example.com.token'));
    for (const bad of ['../../etc/passwd', 'a/b.example.com', '*.example.com', '..', '']) {
      expect(() => tokenPath(bad), bad).toThrow(AccessLoginError);
    }
  });

  it('a quick grant: the relay\'s hostname is checked by the same grammar (an underscore is fine, a path or a wildcard is not)', () => {
    const body = {
      hostname: 'brave_otter.quick.example.com',
      url: 'https://brave_otter.quick.example.com',
      tunnelId: 't1',
      token: 'x'.repeat(20),
      expiresAt: 1,
      relays: ['wss://relay.example.com'],
      controlUrl: 'https://relay.example.com',
      fleetKey: 'A'.repeat(43),
    };
    expect(grant(body, 'relay').hostname).toBe('brave_otter.quick.example.com');
    for (const hostname of ['../x', '*.quick.example.com', 'UPPER.example.com', 'a b']) {
      expect(() => grant({ ...body, hostname }, 'relay'), hostname).toThrow(ControlError);
    }
  });
});
