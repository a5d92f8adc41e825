// Credentials issued before credentials expired carry no `exp` (README,
// "Expiry and rotation"): a relay accepts them by default, so existing
// installs do not break silently, logging each one in use once by id; a relay
// run with `--legacy-credentials refuse` refuses them with
// `credential_no_expiry`, and `tunnel run` exits 2 naming it. Each relay says
// at start which policy it runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { generateKeyFile, loadKeyFile } from '../../packages/relay/src/control/keys.js';
import { peekClaims, signToken, TokenKind } from '../../packages/protocol/src/index.js';
import { CONNECTOR_CLI, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

describe('security: credentials without an expiry (issued before expiry existed)', () => {
  const tmp = tempDir();
  const keysFile = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const host = 'legacy.test';
  let accepting: RelayProc;
  let refusing: RelayProc;
  let origin: Origin;
  let token: string;
  let legacy: string;

  beforeAll(async () => {
    generateKeyFile(keysFile);
    const keys = loadKeyFile(keysFile);
    origin = await startOrigin((_q, s) => s.end('legacy ok'));
    accepting = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: 'relay-accept' });
    refusing = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: 'relay-refuse', extraArgs: ['--legacy-credentials', 'refuse'] });
    const created = await runCli(RELAY_CLI, ['tunnel', 'create', 'old', '--zone', host, '--hostname', host, '--store', store, '--keys', keysFile], {}, tmp.dir);
    expect(created.code, created.stderr).toBe(0);
    token = created.stdout.trim();
    // The same tunnel's token as a relay issued it before `exp` existed.
    const { kind: _kind, exp: _exp, ...claims } = peekClaims(token)!;
    legacy = signToken(TokenKind.Tunnel, { ...claims, jti: 'legacy-token-1' }, keys.secretKey);
    expect(peekClaims(legacy)!.exp).toBeUndefined();
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('each relay says at start which policy it runs', () => {
    const policy = (r: RelayProc) => r.proc.logs.find((l) => l.event === 'credential-policy')?.legacyCredentials;
    expect(policy(accepting)).toBe('accept');
    expect(policy(refusing)).toBe('refuse');
  });

  it('accepted by default: the connector serves, and the credential is logged once by id as legacy-credential', async () => {
    const c = await startConnector({ token: legacy, relays: [accepting.connectUrl], url: origin.url, ha: 2, extraArgs: ['--no-discover'] });
    const r = await waitFor(async () => {
      const x = await req(`${accepting.publicUrl}/`, { host });
      return x.status === 200 ? x : null;
    }, 5_000, { message: 'request through the legacy credential' });
    expect(r.text).toBe('legacy ok');
    const seen = (l: Record<string, unknown>) => l.event === 'legacy-credential' && l.tokenId === 'legacy-token-1';
    await accepting.proc.waitForLog(seen, 5_000, 'legacy-credential logged');
    // Two connections on one credential, several checks: one line.
    expect(accepting.proc.countLogs(seen)).toBe(1);
    expect(accepting.proc.logs.find(seen)).toMatchObject({ kind: 'tunnel', policy: 'accept' });
    await c.stop();
  });

  it('--legacy-credentials refuse: `tunnel run` exits 2 with credential_no_expiry; a token with an expiry still connects', async () => {
    const run = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url, '--relay', refusing.connectUrl, '--no-discover'], { TUNNEL_TOKEN: legacy });
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain('credential_no_expiry');
    const refused = (l: Record<string, unknown>) => l.event === 'legacy-credential' && l.policy === 'refuse';
    expect(refusing.proc.countLogs(refused)).toBe(1);
    const c = await startConnector({ token, relays: [refusing.connectUrl], url: origin.url, ha: 2, extraArgs: ['--no-discover'] });
    expect(c.running).toBe(true);
    await c.stop();
  });
});
