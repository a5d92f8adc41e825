import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, Proc, RELAY_CLI, createTunnel, pidAlive, startConnector, startRelay, stopAll, tempDir, type LogLine, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';
import { req } from './harness/http.js';

// Logs: JSON lines to stdout or to --log-file/--logfile, pretty on request;
// every connection event is one line with connector id, connection index and
// relay id; one request is found by its Tunnel-Request-Id on the relay and on
// the connector; and on a terminal `tunnel run` prints a status block (never
// into piped JSON output).

function fileLogs(file: string): LogLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

const CONNECTION_EVENTS = new Set(['dial', 'registered', 'goaway', 'lost', 'backoff', 'drained']);

describe('logs', () => {
  const tmp = tempDir('tunnel-logs-');
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const relayFile = path.join(tmp.dir, 'logs', 'relay-b.log');
  const connFile = path.join(tmp.dir, 'logs', 'connector.log');
  let origin: Origin;
  let relayA: RelayProc;
  let relayB: Proc;
  let relayBPublic: string;
  let relayBConnect: string;
  let connector: Proc;
  let token: string;
  const held: Array<() => void> = [];

  beforeAll(async () => {
    generateKeyFile(keys);
    origin = await startOrigin((q, s) => {
      // Held until the test lets it go: keeps a connector's drain open.
      if (q.url === '/hold') return void held.push(() => s.end('held'));
      s.end(`origin ${q.url} rid=${String(q.headers['tunnel-request-id'])}`);
    });
    relayA = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-a' });
    // Relay B logs to a file (JSON, debug): nothing on stdout.
    relayB = new Proc('relay-b', process.execPath, [
      RELAY_CLI, 'serve', '--id', 'relay-b', '--store', store, '--keys', keys,
      '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', '127.0.0.1:0', '--peer', '127.0.0.1:0',
      '--drain-delay', '200ms', '--log-level', 'debug', '--log-file', relayFile,
    ], {}, tmp.dir);
    const listening = await waitFor(() => fileLogs(relayFile).find((l) => l.event === 'listening'), 15_000, { message: 'relay-b listening (in its log file)' });
    const ports = listening.ports as { http: number; connect: number };
    relayBPublic = `http://127.0.0.1:${ports.http}`;
    relayBConnect = `ws://127.0.0.1:${ports.connect}`;
    token = await createTunnel({ dir: tmp.dir, store, keys, name: 'logs', hostnames: ['logs.test'], relays: [relayA.connectUrl, relayBConnect] });
    connector = await startConnector({
      token,
      relays: [relayA.connectUrl, relayBConnect],
      url: origin.url,
      waitRegistered: 0,
      extraArgs: ['--logfile', connFile, '--no-discover'],
    });
    await waitFor(() => fileLogs(connFile).filter((l) => l.event === 'registered').length >= 4, 15_000, { message: 'connector: 4 registered (in its log file)' });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('--log-file / --logfile take the JSON lines; stdout stays empty', () => {
    expect(relayB.stdout).toBe('');
    expect(connector.stdout).toBe('');
    const lines = readFileSync(connFile, 'utf8').trim().split('\n');
    for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
    expect(fileLogs(relayFile).every((l) => l.name === 'tunnel-relay')).toBe(true);
  });

  it('one request is found by its Tunnel-Request-Id on the relay and on the connector', async () => {
    for (const [relayName, publicUrl] of [['relay-a', relayA.publicUrl], ['relay-b', relayBPublic]] as const) {
      const res = await waitFor(async () => {
        const r = await req(`${publicUrl}/trace/${relayName}?q=1`, { host: 'logs.test' });
        return r.status === 200 ? r : null;
      }, 5_000);
      const rid = res.header('tunnel-request-id')!;
      expect(rid).toMatch(/^[0-9a-f]{21}$/);
      expect(res.text).toBe(`origin /trace/${relayName}?q=1 rid=${rid}`);
      const relayLogs = () => (relayName === 'relay-a' ? relayA.proc.logs : fileLogs(relayFile));
      const atRelay = await waitFor(() => relayLogs().find((l) => l.requestId === rid && l.event === 'request'), 5_000, { message: `${relayName} request line` });
      expect(atRelay).toMatchObject({ level: 20, method: 'GET', host: 'logs.test', path: `/trace/${relayName}?q=1`, status: 200, complete: true, kind: 'public' });
      const atConnector = await waitFor(() => fileLogs(connFile).find((l) => l.requestId === rid), 5_000, { message: 'connector request line' });
      expect(atConnector).toMatchObject({ level: 20, event: 'origin-request', method: 'GET', path: `/trace/${relayName}?q=1`, status: 200, origin: origin.url });
      expect(typeof atConnector.connectorId).toBe('string');
    }
  });

  it('a request forwarded between relays carries the same id on both, and on the connector', async () => {
    // Relay C holds no connection of the tunnel: it forwards to A or B over the peer endpoint.
    const relayC = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-c' });
    const res = await waitFor(async () => {
      const r = await req(`${relayC.publicUrl}/forwarded`, { host: 'logs.test' });
      return r.status === 200 ? r : null;
    }, 10_000, { message: 'forwarded request' });
    const rid = res.header('tunnel-request-id')!;
    expect(res.text).toBe(`origin /forwarded rid=${rid}`);
    const atC = await waitFor(() => relayC.proc.logs.find((l) => l.event === 'request' && l.requestId === rid), 5_000, { message: 'relay-c line' });
    expect(atC).toMatchObject({ kind: 'public', status: 200, path: '/forwarded' });
    const served = await waitFor(
      () => [...relayA.proc.logs, ...fileLogs(relayFile)].find((l) => l.event === 'request' && l.requestId === rid),
      5_000,
      { message: 'serving relay line' },
    );
    expect(served).toMatchObject({ kind: 'peer', status: 200, path: '/forwarded' });
    expect(await waitFor(() => fileLogs(connFile).find((l) => l.requestId === rid), 5_000)).toMatchObject({ event: 'origin-request', status: 200 });
    await relayC.proc.stop();
  });

  it('every connection event is one line with connector id, connection index and relay id', async () => {
    // Drain relay A (GoAway: its connections move to B and drain), then kill B:
    // the connector logs goaway, drained, lost and backoff too.
    await relayA.proc.stop();
    await waitFor(() => fileLogs(connFile).filter((l) => l.event === 'drained').length >= 2, 10_000, { message: 'drained lines' });
    await waitFor(() => fileLogs(connFile).filter((l) => l.event === 'registered' && l.relayId === 'relay-b').length >= 4, 10_000, { message: 'all on relay-b' });
    await relayB.kill9();
    await waitFor(() => fileLogs(connFile).some((l) => l.event === 'backoff'), 10_000, { message: 'backoff lines' });

    const lines = fileLogs(connFile).filter((l) => CONNECTION_EVENTS.has(String(l.event)));
    const connectorId = fileLogs(connFile).find((l) => l.event === 'starting')?.connectorId;
    expect(connectorId).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(lines.map((l) => l.event))).toEqual(CONNECTION_EVENTS);
    for (const l of lines) {
      expect(l.connectorId, JSON.stringify(l)).toBe(connectorId);
      expect(l.connIndex, JSON.stringify(l)).toEqual(expect.any(Number));
      expect('relayId' in l, JSON.stringify(l)).toBe(true);
      // The relay id is known for every event but a first dial to a relay never reached.
      if (l.event !== 'dial' && l.event !== 'backoff') expect(l.relayId, JSON.stringify(l)).toMatch(/^relay-[ab]$/);
    }
    const lost = lines.filter((l) => l.event === 'lost');
    expect(lost.length).toBeGreaterThanOrEqual(1);
    for (const l of lost) expect(l).toMatchObject({ relayId: 'relay-b', reasonKind: 'network', reason: expect.any(String) });
    for (const l of lines.filter((x) => x.event === 'drained')) expect(l.relayId).toBe('relay-a');
    // After relay-b has been seen, a dial to it names it.
    expect(lines.some((l) => l.event === 'dial' && l.relayId === 'relay-b')).toBe(true);
    // Relay side: its connection lines carry relay id, connector id and index.
    const relaySide = relayA.proc.logs.filter((l) => l.event === 'active');
    expect(relaySide.length).toBeGreaterThanOrEqual(2);
    for (const l of relaySide) expect(l).toMatchObject({ relayId: 'relay-a', connectorId, connIndex: expect.any(Number) });
    await connector.stop();
  });

  it('--log-format pretty writes lines for people', async () => {
    const file = path.join(tmp.dir, 'logs', 'pretty.log');
    const p = new Proc('relay-pretty', process.execPath, [
      RELAY_CLI, 'serve', '--id', 'relay-pretty', '--store', `file:${path.join(tmp.dir, 'store-pretty')}`, '--keys', keys,
      '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off',
      '--log-format', 'pretty', '--log-file', file,
    ], {}, tmp.dir);
    const text = await waitFor(() => (existsSync(file) && readFileSync(file, 'utf8').includes('relay listening') ? readFileSync(file, 'utf8') : null), 15_000, { message: 'pretty log line' });
    await p.stop();
    const line = text.split('\n').find((l) => l.includes('relay listening'))!;
    expect(line.startsWith('{')).toBe(false);
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(tunnel-relay\): relay listening/);
    expect(text).not.toMatch(/\x1b\[/); // no colour codes in a file
  });

  const haveScript = spawnSync('sh', ['-c', 'command -v script'], { encoding: 'utf8' }).status === 0;
  if (!haveScript) console.log(process.env.CI === 'true' ? '[fail] script(1) is missing and CI=true' : '[skip] script(1) (bsdutils) is not installed: the terminal status block test is skipped');
  it.skipIf(!haveScript && process.env.CI !== 'true')('`tunnel run` on a terminal prints a status block; piped JSON output has none', async () => {
    if (!haveScript) throw new Error('script(1) is required when CI=true (.ci/run installs bsdutils)');
    // The hostnames come from the control API named in the token (relay-a's or
    // relay-b's, both gone by now): bring a relay up on that control port.
    const claims = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8')) as { controlUrl: string };
    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-tty', ports: { control: Number(new URL(claims.controlUrl).port) } });
    // Piped (the harness): stdout is nothing but JSON lines.
    const piped = await startConnector({ token, relays: [relay.connectUrl], url: origin.url, extraArgs: ['--no-discover'] });
    for (const l of piped.stdout.trim().split('\n')) expect(l.startsWith('{'), l).toBe(true);
    expect(piped.stdout).not.toContain('Public hostname');
    await piped.stop();

    // A pseudo-terminal via script(1). SHELL=/bin/sh: where that is dash, the
    // connector runs as the shell's child, as it does under a login shell.
    const onTerminal = async (name: string, close: (script: ChildProcess, connectorPid: number | undefined) => void | Promise<void>): Promise<{ out: string; logged: string }> => {
      const logFile = path.join(tmp.dir, 'logs', `${name}.log`);
      const cmd = [process.execPath, CONNECTOR_CLI, 'run', '--url', origin.url, '--relay', relay.connectUrl, '--no-discover', '--metrics', '127.0.0.1:0', '--loglevel', 'info', '--logfile', logFile];
      const child: ChildProcess = spawn('script', ['-qefc', cmd.map((a) => `'${a}'`).join(' '), '/dev/null'], {
        env: { ...process.env, TUNNEL_TOKEN: token, NO_COLOR: '1', TERM: 'dumb', SHELL: '/bin/sh' },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
      let inside: Array<{ pid: number; start: string }> = [];
      try {
        await waitFor(() => out.includes('Logs'), 20_000, { message: `${name}: status block on the terminal` });
        inside = descendants(child.pid!);
        await close(
          child,
          inside.find((p) => cmdlineOf(p.pid).includes(CONNECTOR_CLI) && !cmdlineOf(p.pid).startsWith('/bin/sh') && !cmdlineOf(p.pid).startsWith('sh '))?.pid,
        );
        const metricsUrl = /Metrics\s+(http:\/\/\S+)\/metrics/.exec(out.replace(/\r/g, ''))?.[1];
        expect(metricsUrl).toBeDefined();
        await waitFor(() => fetch(`${metricsUrl}/healthcheck`).then(() => false, () => true), 15_000, { message: `${name}: connector exited` });
        // Its last lines are in the file once it has gone: wait for them rather than read once, and say what the terminal showed if they never come.
        const logged = await waitFor(() => (existsSync(logFile) && readFileSync(logFile, 'utf8').includes('connector stopped') ? readFileSync(logFile, 'utf8') : null), 10_000, {
          message: `${name}: 'connector stopped' in ${logFile} (exists: ${existsSync(logFile)}); its last lines:\n${existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-8).join('\n') : ''}\nthe terminal showed:\n${out.replace(/\r/g, '')}`,
        });
        return { out: out.replace(/\r/g, ''), logged };
      } finally {
        try {
          process.kill(child.pid!, 'SIGKILL'); // script(1): our own child
        } catch {
          /* already gone */
        }
        // The shell and connector it ran, only while each PID is still the process seen then (a freed PID may belong to another test's process by now).
        for (const p of inside) {
          try {
            if (startTimeOf(p.pid) === p.start) process.kill(p.pid, 'SIGKILL');
          } catch {
            /* exited between the check and the kill */
          }
        }
      }
    };
    // The terminal goes away (its window is closed): SIGHUP with no terminal
    // left; the connector drains and exits rather than taking it for a reload
    // and living on as an orphan.
    // The kernel hangs up a closed terminal's processes, and again when the
    // shell that led its session exits: a second SIGHUP is one hang-up, not a
    // second signal to exit at once. A request the origin holds keeps the
    // drain open while the test sends that second SIGHUP itself.
    let answered: Promise<{ status: number; text: string }> | undefined;
    const closed = await onTerminal('tty-closed', async (script, connectorPid) => {
      expect(connectorPid, 'the connector among the terminal processes').toBeDefined();
      const before = held.length;
      answered = req(`${relay.publicUrl}/hold`, { host: 'logs.test' });
      await waitFor(() => held.length > before, 10_000, { message: 'the origin holds the request' });
      script.kill('SIGKILL');
      const logFile = path.join(tmp.dir, 'logs', 'tty-closed.log');
      await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('connector draining'), 10_000, { message: 'the connector drains' });
      process.kill(connectorPid!, 'SIGHUP');
      // Handled before the held request is let go.
      await waitFor(() => /second signal|hang-up again/.test(readFileSync(logFile, 'utf8')) || !pidAlive(connectorPid!), 10_000, { message: 'the second SIGHUP handled' });
      while (held.length > 0) held.shift()!();
    });
    expect(closed.logged).toContain('terminal closed: draining and exiting');
    expect(closed.logged).not.toContain('second signal');
    expect(closed.logged).toContain('terminal hang-up again: already draining');
    expect(closed.logged).toContain('connector stopped');
    expect((await answered!).text, 'the request in flight at the hang-up is answered').toBe('held');
    // The shell that ran it exits while the terminal stays (script(1) passes
    // SIGTERM to its shell): under dash the connector gets SIGHUP, re-parented;
    // where the shell exec'd it, the SIGTERM reaches it directly. Either way it drains and exits.
    const shellGone = await onTerminal('shell-exit', (script) => void script.kill('SIGTERM'));
    expect(shellGone.logged).toContain('connector stopped');
    if (realpathSync('/bin/sh').endsWith('dash')) expect(shellGone.logged).toContain('terminal closed: draining and exiting');
    const out = closed.out;
    const logFile = path.join(tmp.dir, 'logs', 'tty-closed.log');
    const block = out;
    expect(block).toContain('tunnel logs connected');
    expect(block).toMatch(/Public hostname\s+logs\.test/);
    for (let i = 0; i < 4; i++) expect(block).toMatch(new RegExp(`#${i}\\s+relay-tty \\(local\\)\\s+${relay.connectUrl.replace(/[.]/g, '\\.')}`));
    expect(block).toMatch(/Metrics\s+http:\/\/127\.0\.0\.1:\d+\/metrics/);
    expect(block).toMatch(new RegExp(`Logs\\s+${logFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(JSON lines\\)`));
  });
});

/** The fields of /proc/PID/stat after "pid (comm)" (comm may hold spaces, so read after the last ')'); null once it has exited. */
function statOf(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** When a process started (clock ticks since boot): with its PID, what tells it from a later process given the same PID. */
function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function startTimeOf(pid: number): string | undefined {
  return statOf(pid)?.[19];
}

/** Every live process below `root` (read from /proc), children first, with its start time. */
function descendants(root: number): Array<{ pid: number; start: string }> {
  const parentOf = new Map<number, { ppid: number; start: string }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statOf(Number(name));
    if (f) parentOf.set(Number(name), { ppid: Number(f[1]), start: f[19]! });
  }
  const out: Array<{ pid: number; start: string }> = [];
  const walk = (pid: number) => {
    for (const [c, p] of parentOf) if (p.ppid === pid) (walk(c), out.push({ pid: c, start: p.start }));
  };
  walk(root);
  return out;
}
