import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Proc } from './harness/procs.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('npm start (the local demo)', () => {
  it('brings up two relays and a connector, prints a working URL, and stops cleanly on Ctrl-C', async () => {
    const demo = new Proc('demo', process.execPath, [path.join(root, 'scripts/demo.js')]);
    const m = await waitFor(() => /http:\/\/(demo\.localhost):(\d+)\/\s+\(relay-a\)[\s\S]*http:\/\/demo\.localhost:(\d+)\/\s+\(relay-b\)/.exec(demo.stdout), 60_000, { message: 'demo URL printed' });
    expect(demo.stdout).toMatch(/4 connections over 2 relays/);
    for (const port of [m[2], m[3]]) {
      const r = await req(`http://127.0.0.1:${port}/hello`, { host: 'demo.localhost', headers: { accept: 'application/json' } });
      expect(r.status).toBe(200);
      expect(r.json<{ hello: string; path: string }>()).toMatchObject({ hello: 'world', path: '/hello' });
    }
    demo.signal('SIGINT');
    const { code } = await demo.exited;
    expect(code).toBe(0);
    expect(demo.stdout).toContain('stopping');
  });
});
