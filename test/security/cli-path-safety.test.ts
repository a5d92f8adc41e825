import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { CONNECTOR_CLI, runCli, tempDir } from '../harness/procs.js';

// Issue 10: the CLI trusted ids from the control API with the file system.
// A hostile control API (a real HTTP server on 127.0.0.1) answers `tunnel
// create`, `delete` and `run NAME` with ids like `../../X`; the CLI must
// refuse them with a clear error, exit non-zero, and write or unlink nothing
// outside TUNNEL_HOME.

const GOOD_ID = '3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b';

describe('CLI path safety: ids from the control API are checked before they touch a path', () => {
  const tmp = tempDir();
  // TUNNEL_HOME two levels down, so `../../X.json` would land in tmp.dir.
  const home = path.join(tmp.dir, 'a', 'b');
  const outside = (name: string) => path.join(home, '..', '..', name);
  let server: http.Server;
  let answer: { status: number; body: unknown } = { status: 500, body: {} };
  const seen: string[] = [];
  const tunnel = (args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home, TUNNEL_TOKEN: '' });

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      req.resume();
      req.on('end', () => {
        const text = JSON.stringify(answer.body);
        res.writeHead(answer.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    mkdirSync(home, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(home, 'cert.json'), JSON.stringify({ accountId: 'acct', accountName: 'alice', controlUrl: url, credential: 'x.y' }));
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    tmp.cleanup();
  });

  const created = (id: string, credId = id) => ({
    status: 201,
    body: { tunnel: { id, name: 'app', accountId: 'acct', createdAt: 0 }, credentials: { accountId: 'acct', tunnelId: credId, tunnelName: 'app', token: 'a.b', relays: [] } },
  });

  it('create: `../../X`, an absolute path and a mismatched credentials id are refused; nothing is written', async () => {
    for (const [id, credId] of [
      ['../../X', '../../X'],
      [path.join(tmp.dir, 'abs'), path.join(tmp.dir, 'abs')],
      ['..', '..'],
      [GOOD_ID, '../../Z'],
    ]) {
      answer = created(id!, credId!);
      const r = await tunnel(['create', 'app']);
      expect(r.code, id).toBe(1);
      expect(r.stderr, id).toMatch(/^tunnel: the control API answered with (tunnel id|credentials for tunnel) .*(which is not a tunnel id|not for the tunnel it created).*nothing was written/);
    }
    expect(existsSync(outside('X.json'))).toBe(false);
    expect(existsSync(path.join(tmp.dir, 'abs.json'))).toBe(false);
    expect(existsSync(outside('Z.json'))).toBe(false);
    expect(readdirSync(home)).toEqual(['cert.json']);
    expect(readdirSync(tmp.dir)).toEqual(['a']);
  });

  it('create with a real id writes TUNNEL_HOME/<id>.json (the check lets good ids through)', async () => {
    answer = created(GOOD_ID);
    const r = await tunnel(['create', 'app']);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(path.join(home, `${GOOD_ID}.json`))).toBe(true);
  });

  it('delete: `deleted: ../../victim` unlinks nothing', async () => {
    writeFileSync(outside('victim.json'), 'precious');
    answer = { status: 200, body: { deleted: '../../victim' } };
    const r = await tunnel(['delete', 'app']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/tunnel id "\.\.\/\.\.\/victim", which is not a tunnel id/);
    expect(existsSync(outside('victim.json'))).toBe(true);
    // A real id is unlinked as before.
    answer = { status: 200, body: { deleted: GOOD_ID } };
    expect((await tunnel(['delete', 'app'])).code).toBe(0);
    expect(existsSync(path.join(home, `${GOOD_ID}.json`))).toBe(false);
  });

  it('run NAME: credentials fetched for a tunnel id `../../Y` are not written', async () => {
    answer = { status: 200, body: { accountId: 'acct', tunnelId: '../../Y', tunnelName: 'web', token: 'a.b', relays: ['ws://127.0.0.1:9'] } };
    const r = await tunnel(['run', 'web', '--url', 'http://127.0.0.1:9']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/which is not a tunnel id/);
    expect(existsSync(outside('Y.json'))).toBe(false);
    expect(readdirSync(home)).toEqual(['cert.json']);
    expect(seen).toContain('GET /v1/tunnels/web/token');
  });
});
