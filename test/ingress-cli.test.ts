// The README's `tunnel ingress` commands, through the built CLI:
//  - `tunnel ingress rule URL` prints the rule that matches (first match in
//    order: hostname, then path regex; `*.` wildcard; the catch-all last),
//    host case and port ignored;
//  - `tunnel ingress validate` says OK with the rule count, or reports the
//    problem as `FILE:LINE:COL: ingress[i].key: …` and exits non-zero;
//  - a URL without a hostname is one line and exit 1.
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { CONNECTOR_CLI, runCli, tempDir } from './harness/procs.js';

const CONFIG = `tunnel: app
ingress:
  - hostname: app.example.com
    path: ^/api/
    service: http://localhost:8000
  - hostname: "*.example.com"
    service: unix:/run/app.sock
    originRequest: { httpHostHeader: internal.app }
  - service: http_status:404
`;

// ingress[1].service is on line 7, column 7.
const BAD = `tunnel: app
ingress:
  - hostname: app.example.com
    service: http://localhost:8000
  - hostname: b.example.com
    service:
      htp://x
  - service: http_status:404
`;

describe('tunnel ingress rule / validate', () => {
  const tmp = tempDir();
  const config = path.join(tmp.dir, 'config.yml');
  const bad = path.join(tmp.dir, 'bad.yml');
  writeFileSync(config, CONFIG);
  writeFileSync(bad, BAD);
  afterAll(() => tmp.cleanup());
  const rule = (url: string) => runCli(CONNECTOR_CLI, ['ingress', 'rule', url, '--config', config]);

  it('prints the rule that matches a URL: hostname and path, wildcard, catch-all', async () => {
    const cases: Array<[string, string]> = [
      ['https://app.example.com/api/x', 'Matched rule #1\n\thostname: app.example.com\n\tpath: ^/api/\n\tservice: http://localhost:8000\n'],
      // Same host, a path the first rule does not take: the wildcard.
      ['https://app.example.com/other', 'Matched rule #2\n\thostname: *.example.com\n\tservice: unix:/run/app.sock\n'],
      ['https://deep.x.example.com/', 'Matched rule #2\n\thostname: *.example.com\n\tservice: unix:/run/app.sock\n'],
      // Host case and port do not matter.
      ['https://APP.Example.com:8443/api/y', 'Matched rule #1\n\thostname: app.example.com\n\tpath: ^/api/\n\tservice: http://localhost:8000\n'],
      // The wildcard covers names under example.com, not example.com itself.
      ['https://example.com/', 'Matched rule #3\n\tservice: http_status:404\n'],
      ['https://other.org/api/', 'Matched rule #3\n\tservice: http_status:404\n'],
    ];
    for (const [url, want] of cases) {
      const r = await rule(url);
      expect(r.code, `${url}: ${r.stderr}`).toBe(0);
      expect(r.stdout, url).toBe(want);
    }
  });

  it('a URL without a hostname is one line naming it, exit 1', async () => {
    const r = await rule('notaurl');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('"notaurl" is not a URL with a hostname');
  });

  it('validate: OK with the rule count; a bad service is FILE:LINE:COL: ingress[i].service, exit 1', async () => {
    const ok = await runCli(CONNECTOR_CLI, ['ingress', 'validate', '--config', config]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe(`OK: ${config}: 3 ingress rules\n`);
    const r = await runCli(CONNECTOR_CLI, ['ingress', 'validate', '--config', bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${bad}:7:7: ingress[1].service: unknown service scheme "htp://x"`);
  });
});
