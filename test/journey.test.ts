import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './harness/procs.js';
import { runClean } from './harness/clean-run.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/wait.js';

// The README's journey, literally, as a newcomer runs it: a fresh clone of
// this checkout (committed files only), ONE `npm install`, then every line of
// the README's journey block in order, through `npx tunnel` / `npx
// tunnel-relay` as the README says. Only the ports (free ones instead of
// 8080, 7000, …) and ~/.tunnel (TUNNEL_HOME, which the README documents) are
// swapped, plus the login code the relay hands out for the README's example
// one. Every `#   ` line under a command must be a line of its output, word
// for word (`…` stands for an id), so the README cannot drift from what the
// commands do. Also the first-install promise: the bins are committed files,
// so the first `npm install` links working `npx tunnel` and `npx tunnel-relay`.

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const README_CODE = 'K7QM-2XPA';
const MARKER = '<!-- journey: run line by line by test/journey.test.ts -->';

const noGit = spawnSync('git', ['--version']).error !== undefined;
if (noGit && process.env.CI === 'true') throw new Error('journey test: git is not installed; CI=true requires it');
if (noGit) console.log('[skip] git is not installed: the fresh-clone journey test is skipped');

interface Step {
  command: string;
  /** Lines its output must contain, as the README prints them. */
  expect: string[];
}

/** The journey block: commands (continuations joined) and the `#   ` lines under each. */
function journeySteps(readme: string): Step[] {
  const at = readme.indexOf(MARKER);
  if (at < 0) throw new Error(`README.md has no ${MARKER}`);
  const open = readme.indexOf('```sh\n', at);
  const body = readme.slice(open + 6, readme.indexOf('\n```', open + 6));
  const steps: Step[] = [];
  let target: Step | undefined;
  let pending = '';
  for (const raw of body.split('\n')) {
    if (pending) {
      pending += ' ' + raw.trim();
    } else if (raw.startsWith('#   ')) {
      if (!target) throw new Error(`README journey: output line before any command: ${raw}`);
      target.expect.push(raw.slice(4));
      continue;
    } else if (raw.startsWith('#') || raw.trim() === '') {
      // "the login above now ends with": the lines that follow are that command's.
      const above = /the (\w+) above/.exec(raw)?.[1];
      if (above) target = [...steps].reverse().find((s) => s.command.startsWith(`npx tunnel ${above} `));
      continue;
    } else {
      pending = raw.trim();
    }
    if (pending.endsWith('\\')) {
      pending = pending.slice(0, -1).trim();
      continue;
    }
    target = { command: pending, expect: [] };
    steps.push(target);
    pending = '';
  }
  return steps;
}

/** An output line the README prints: exact, except `…`, which stands for an id or a time. */
function lineMatcher(line: string): RegExp {
  return new RegExp(`^${line.split('…').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.+?')}$`);
}

describe.skipIf(noGit)('the README journey, from a fresh clone', () => {
  const tmp = tempDir('tunnel-journey-');
  const started: ChildProcess[] = [];
  let origin: http.Server | undefined;
  afterAll(async () => {
    // Each long-running command is a process group we started (sh → npm exec → node): end each by
    // its id, the last started first (the connector drains while its relay still answers, then the relay).
    // The group is gone when none of its processes is left (the shell exits before its node child).
    for (const c of [...started].reverse()) {
      if (!signalGroup(c, 'SIGTERM')) continue;
      await waitFor(() => !signalGroup(c, 0), 3_000, { message: 'process group ended', intervalMs: 100 }).catch(() => signalGroup(c, 'SIGKILL'));
    }
    await new Promise<void>((r) => (origin ? origin.close(() => r()) : r()));
    tmp.cleanup();
  }, 120_000);

  it('one `npm install`, then every README line as printed: login, approve, zone, create, route, run, curl', { timeout: 600_000 }, async () => {
    const clone = path.join(tmp.dir, 'c');
    const cloned = await runClean('git', ['clone', '--quiet', '--no-hardlinks', root, clone], tmp.dir, 60_000);
    expect(cloned.code, cloned.stderr).toBe(0);
    // Each bin is a committed file, so it exists when npm links bins (before `prepare` builds dist/).
    for (const pkg of ['connector', 'relay']) {
      const manifest = JSON.parse(readFileSync(path.join(clone, 'packages', pkg, 'package.json'), 'utf8')) as { bin: Record<string, string> };
      for (const file of Object.values(manifest.bin)) expect(existsSync(path.join(clone, 'packages', pkg, file)), `${pkg} bin ${file} is in the clone`).toBe(true);
    }
    const install = await runClean('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], clone, 420_000);
    expect(install.code, install.stderr.slice(-2000)).toBe(0);
    const version = await runClean('npx', ['--no-install', 'tunnel', '--version'], clone, 60_000);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);

    // The README as committed in the clone: the journey block, with free ports and a temporary TUNNEL_HOME.
    const steps = journeySteps(readFileSync(path.join(clone, 'README.md'), 'utf8'));
    const ports = new Map<string, number>();
    for (const s of steps) for (const m of `${s.command}\n${s.expect.join('\n')}`.matchAll(/(?:127\.0\.0\.1|localhost):(\d+)/g)) if (!ports.has(m[1]!)) ports.set(m[1]!, await freePort());
    const home = path.join(tmp.dir, 'home', '.tunnel');
    mkdirSync(path.dirname(home), { recursive: true });
    let code = README_CODE;
    const local = (text: string) =>
      text.replace(/(127\.0\.0\.1|localhost):(\d+)/g, (_, host: string, port: string) => `${host}:${ports.get(port)}`).replaceAll('~/.tunnel', home).replaceAll(README_CODE, code);
    const portOf = (readmePort: string) => ports.get(readmePort)!;

    // The user's app on the README's :8000 (localhost: both loopback families).
    const body = `hello from the app ${process.pid}`;
    origin = http.createServer((q, s) => s.end(`${body} for ${q.headers.host}`));
    await new Promise<void>((r) => origin!.listen(portOf('8000'), 'localhost', r));

    const env: Record<string, string> = { TUNNEL_HOME: home, npm_config_yes: 'false', npm_config_offline: 'true' };
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^(npm_|TUNNEL_)/i.test(k)) env[k] ??= v;
    const output: Record<number, { out: string }> = {};
    let exitedLogin: Promise<number | null> | undefined;
    let connectorOut: { out: string } | undefined;
    const checkOutput = (i: number, text: string, only: (line: string) => boolean = () => true) => {
      const lines = text.split('\n');
      for (const want of steps[i]!.expect.filter(only).map(local)) {
        expect(lines.some((l) => lineMatcher(want).test(l)), `README line under \`${steps[i]!.command}\`:\n  ${want}\nnot in its output:\n${text}`).toBe(true);
      }
    };

    for (let i = 0; i < steps.length; i++) {
      const command = local(steps[i]!.command);
      // The relay, the connector and a login waiting for its approval keep running; the rest must exit 0.
      const longRunning = /^npx (tunnel-relay serve|tunnel run|tunnel login) /.test(command) && !/ --enroll /.test(command);
      if (longRunning) {
        const child = spawn('sh', ['-c', command], { cwd: clone, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
        started.push(child);
        const o = (output[i] = { out: '' });
        child.stdout!.on('data', (d: Buffer) => (o.out += d.toString()));
        child.stderr!.on('data', (d: Buffer) => (o.out += d.toString()));
        const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
        void exited.then((c) => (o.out += `\n[exited ${c}]`));
        if (command.startsWith('npx tunnel-relay serve ')) {
          const control = /--control 127\.0\.0\.1:(\d+)/.exec(command)![1]!;
          const up = await waitOr(async () => (child.exitCode !== null ? 'exited' : (await get(`http://127.0.0.1:${control}/healthz`)).status === 200 && 'up'), 60_000, `relay up (${command})`, () => o.out.slice(-2000));
          expect(up, `\`${command}\` exited:\n${o.out}`).toBe('up');
        } else if (command.startsWith('npx tunnel login ')) {
          // The relay hands out its own code: the README's example one stands for it from here on.
          const first = lineMatcher(steps[i]!.expect[0]!.replace(README_CODE, '@CODE@').replace(/127\.0\.0\.1:(\d+)/, (_, p: string) => `127.0.0.1:${portOf(p)}`)).source.replace('@CODE@', '([A-Z0-9]{4}-[A-Z0-9]{4})');
          code = await waitOr(() => new RegExp(first, 'm').exec(o.out)?.[1] ?? (child.exitCode !== null ? 'exited' : undefined), 60_000, 'login code printed', () => o.out);
          expect(code, `\`${command}\` exited:\n${o.out}`).not.toBe('exited');
          // What it prints before the approval (written in pieces: wait for all of it); the rest once it ends.
          const beforeApproval = (l: string) => !l.startsWith('Logged in');
          await waitFor(() => steps[i]!.expect.filter(beforeApproval).map(local).every((want) => o.out.split('\n').some((l) => lineMatcher(want).test(l))), 10_000, { message: 'login instructions printed' }).catch(() => {});
          checkOutput(i, o.out, beforeApproval);
          exitedLogin = exited;
        } else {
          connectorOut = o;
        }
        continue;
      }
      if (command.startsWith('curl ')) {
        // The connector connects in the background: ask until the app answers (bounded), then it must be the app.
        const res = await waitOr(
          async () => {
            const r = await runClean('sh', ['-c', command], clone, 15_000);
            return r.code === 0 && r.stdout.startsWith(body) ? r : undefined;
          },
          60_000,
          'the app answers through the relay',
          () => connectorOut?.out.slice(-2000) ?? '',
        );
        expect(res.stdout).toBe(`${body} for app.example.com`);
        continue;
      }
      const r = await runWithEnv(command, clone, env);
      expect(r.code, `\`${command}\` failed:\n${r.out}`).toBe(0);
      checkOutput(i, r.out);
      // The login waits for the approval: once approved it ends, and its last README lines are checked.
      if (/ login approve /.test(command) && exitedLogin) {
        const loginAt = steps.findIndex((s) => s.command.startsWith('npx tunnel login '));
        expect(await withDeadline(exitedLogin, 30_000, 'tunnel login to end after the approval')).toBe(0);
        checkOutput(loginAt, output[loginAt]!.out);
      }
    }
    expect(connectorOut, 'the README runs `tunnel run`').toBeDefined();
    expect(exitedLogin, 'the README runs `tunnel login`').toBeDefined();
    expect(existsSync(path.join(home, 'cert.json'))).toBe(true);
  });
});

/** waitFor, failing with what the process printed. */
async function waitOr<T>(fn: () => T | Promise<T>, ms: number, message: string, detail: () => string): Promise<Exclude<T, false | null | undefined>> {
  try {
    return await waitFor(fn, ms, { message, intervalMs: 200 });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- output ---\n${detail()}`);
  }
}

/** Signals the process group we started as `c` (0: only asks whether any of it is left). False when none is. */
function signalGroup(c: ChildProcess, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-c.pid!, sig);
    return true;
  } catch {
    return false;
  }
}

function runWithEnv(command: string, cwd: string, env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn('sh', ['-c', command], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

function get(url: string): Promise<{ status: number }> {
  return new Promise((resolve) => {
    const r = http.get(url, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    r.on('error', () => resolve({ status: 0 }));
    r.setTimeout(5_000, () => r.destroy());
  });
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
