import { afterAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Proc } from './harness/procs.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('npm start (the local demo)', () => {
  // The demo spawns two relays and a connector; started in its own process
  // group so that a failed run (an assertion before Ctrl-C, a timeout) kills
  // all of them by the group's id instead of leaving them holding ports.
  let launched: Proc | undefined;
  afterAll(() => launched?.killGroup());

  it('brings up two relays and a quick tunnel (tunnel --url), prints a working random URL, and stops cleanly on Ctrl-C', async () => {
    const demo = new Proc('demo', process.execPath, [path.join(root, 'scripts/demo.js')], {}, undefined, { group: true });
    launched = demo;
    const m = await waitFor(() => /http:\/\/([a-z2-7]{16}\.try\.localhost):(\d+)\/\s+\(relay-a\)[\s\S]*http:\/\/[a-z2-7]{16}\.try\.localhost:(\d+)\/\s+\(relay-b\)/.exec(demo.stdout), 60_000, { message: 'demo URL printed' });
    expect(demo.stdout).toMatch(/4 connections over 2 relays/);
    for (const port of [m[2], m[3]]) {
      const r = await req(`http://127.0.0.1:${port}/hello`, { host: m[1]!, headers: { accept: 'application/json' } });
      expect(r.status).toBe(200);
      expect(r.json<{ hello: string; path: string }>()).toMatchObject({ hello: 'world', path: '/hello' });
    }
    // The operator key it printed opens the dashboard (a session cookie and a redirect, not the login page again).
    const dash = /Dashboard:\s+(http:\/\/127\.0\.0\.1:\d+)\/dashboard\s+operator key: (\S+)/.exec(demo.stdout);
    expect(dash, demo.stdout).not.toBeNull();
    const login = await req(`${dash![1]}/dashboard/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: dash![1]! },
      body: `key=${encodeURIComponent(dash![2]!)}`,
    });
    expect(login.status).toBe(303);
    expect(String(login.headers['set-cookie'])).toMatch(/=/);

    // Every log line the processes print reaches their files under .demo/logs as it is printed.
    const logDir = /logs in (\S+)/.exec(demo.stdout)![1]!;
    for (const name of ['relay-a', 'relay-b', 'connector']) {
      const lines = readFileSync(path.join(logDir, `${name}.log`), 'utf8').split('\n').filter((l) => l.startsWith('{')); // the quick tunnel's URL box is in the connector's too
      expect(lines.length, `${name}.log`).toBeGreaterThan(0);
      const events = lines.map((l) => (JSON.parse(l) as { event?: string }).event);
      expect(events, `${name}.log`).toContain(name === 'connector' ? 'registered' : 'listening');
    }

    demo.signal('SIGINT');
    const { code } = await demo.exited;
    expect(code).toBe(0);
    // A clean exit waited for every child (scripts/demo.js stop()): the group
    // is empty, and its id may already be another process's, so no kill.
    launched = undefined;
    expect(demo.stdout).toContain('stopping');
    // Ctrl-C removed the quick tunnel before the relays stopped.
    const connectorLog = readFileSync(path.join(logDir, 'connector.log'), 'utf8');
    expect(connectorLog).toMatch(/"event":"quick-removed"/);
  });
});
