import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { startFleet, type Fleet } from './harness/fleet.js';
import { CONNECTOR_CLI, Proc, runCli, type RelayProc } from './harness/procs.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { parsePromText, sumOf } from './harness/prom-text.js';

// A tcp:// ingress rule reached with `tunnel access tcp`, the way SSH is
// published with cloudflared: a real TCP origin, relays, a connector, and the
// access client in both of its forms (a local listener, and stdin/stdout for
// ssh -o ProxyCommand).

/** An echo origin that keeps answering after the client's FIN, then ends: half-close must survive the trip. */
function startEcho(): Promise<{ port: number; server: net.Server; close(): Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end('<eof>'));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ port: (server.address() as net.AddressInfo).port, server, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

/** Send `data`, half-close, and collect everything until the other side ends. */
function roundTrip(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => {
      s.end();
      resolve(Buffer.concat(got));
    });
    s.on('error', reject);
    s.setTimeout(30_000, () => s.destroy(new Error('round trip timed out')));
    s.end(data);
  });
}

/** `tunnel access tcp` on stdin/stdout, as ssh runs it for a ProxyCommand. */
function stdioAccess(hostname: string, relayUrl: string) {
  const child = spawn(process.execPath, [CONNECTOR_CLI, 'access', 'tcp', '--hostname', hostname, '--relay', relayUrl], { stdio: ['pipe', 'pipe', 'pipe'] });
  const io = { out: '', err: '' };
  child.stdout.setEncoding('utf8').on('data', (d: string) => (io.out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (io.err += d));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    io,
    /** Its exit code; fails the test if it has not exited within `ms`. */
    exited(ms = 15_000): Promise<number | null> {
      let t: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`access (stdio) still running after ${ms} ms`)), ms)));
      return Promise.race([exit, late]).finally(() => clearTimeout(t));
    },
    kill(): void {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('tcp:// services and `tunnel access tcp`', () => {
  let fleet: Fleet;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let relay: RelayProc;
  let connector: Proc;
  const access = (args: string[]) => new Proc('access', process.execPath, [CONNECTOR_CLI, 'access', 'tcp', '--hostname', fleet.hostname, ...args]);

  beforeAll(async () => {
    echo = await startEcho();
    fleet = await startFleet({ relays: 2, relayArgs: ['--metrics', '127.0.0.1:0'] });
    relay = fleet.relays[0]!;
    // One connection, to relay-0 only: relay-1 must forward the upgrade to its peer.
    connector = await fleet.connector({ url: `tcp://127.0.0.1:${echo.port}`, ha: 1, relays: [relay.connectUrl], extraArgs: ['--no-discover'] });
  });
  afterAll(async () => {
    await fleet?.close();
    await echo?.close();
  });

  /** Upgrades counted by the relays, by status class (summed over both). */
  const upgradesCounted = async (cls: string): Promise<number> => {
    let n = 0;
    for (const r of fleet.relays) {
      const port = (await r.proc.waitForLog((x) => x.event === 'metrics-listening')).port as number;
      const fams = parsePromText(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
      n += sumOf(fams, 'tunnel_relay_requests_total', { status_class: cls });
    }
    return n;
  };

  it('--url listens locally and carries each connection, bytes exact and half-close kept, through either relay', async () => {
    const before = await upgradesCounted('1xx');
    for (const via of fleet.relays) {
      const p = access(['--url', '127.0.0.1:0', '--relay', via.publicUrl]);
      try {
        const m = await waitFor(() => /listening on 127\.0\.0\.1:(\d+)/.exec(p.stderr), 10_000, { message: 'access listening' });
        const port = Number(m[1]);
        const payloads = [Buffer.from('hello\n'), randomBytes(3 * 1024 * 1024), randomBytes(100_000)];
        const echoed = await Promise.all(payloads.map((d) => roundTrip(port, d)));
        echoed.forEach((got, i) => {
          expect(got.length, `${via.id} payload ${i}`).toBe(payloads[i]!.length + 5);
          expect(sha(got)).toBe(sha(Buffer.concat([payloads[i]!, Buffer.from('<eof>')])));
        });
      } finally {
        await p.stop();
      }
    }
    // Each carried connection is one request in the relays' metrics (a 101), counted where it was served.
    expect(await upgradesCounted('1xx')).toBe(before + 6);
  });

  it('stdin/stdout (ssh ProxyCommand): the answer on stdout, exit 0 when the origin ends', async () => {
    const a = stdioAccess(fleet.hostname, relay.publicUrl);
    try {
      a.child.stdin.end('SSH-2.0-test\r\n');
      const code = await a.exited();
      expect(a.io.err).toBe('');
      expect(code).toBe(0);
      expect(a.io.out).toBe('SSH-2.0-test\r\n<eof>');
    } finally {
      a.kill();
    }
  });

  it('a connector given one relay says once that it has no relay redundancy', async () => {
    const warn = await connector.waitForLog((l) => l.event === 'single-relay', 10_000, 'single-relay warning');
    expect(warn.level).toBe(40);
    expect(warn.msg).toBe('only one relay is up: all connections are on it (no relay redundancy)');
    expect(connector.countLogs((l) => l.event === 'single-relay')).toBe(1);
  });

  it('a plain HTTP request to the tcp hostname gets a 502 naming the access command', async () => {
    const r = await req(`${relay.publicUrl}/`, { host: fleet.hostname, headers: { accept: 'application/json' } });
    expect(r.status).toBe(502);
    expect(r.header('tunnel-error')).toBe('tcp_service_over_http');
    expect(r.text).toContain('tunnel access tcp --hostname');
  });

  it('an origin that refuses: the access client says why and exits non-zero', async () => {
    await echo.close();
    try {
      const r = await runCli(CONNECTOR_CLI, ['access', 'tcp', '--hostname', fleet.hostname, '--relay', relay.publicUrl], {}, undefined, 15_000);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^tunnel: refused: 502 origin_refused \(from the origin\)/);
    } finally {
      echo = await new Promise((resolve) => {
        const again = echo.server.listen(echo.port, '127.0.0.1', () => resolve({ ...echo, server: again }));
      });
    }
  });

  it('an unknown hostname and an unreachable relay are clear errors', async () => {
    const unknown = await runCli(CONNECTOR_CLI, ['access', 'tcp', '--hostname', 'nope.test', '--relay', relay.publicUrl], {}, undefined, 15_000);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/refused: 404 unknown_hostname/);
    expect(await upgradesCounted('4xx')).toBeGreaterThanOrEqual(1);
    const closed = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => r(port));
      });
    });
    const down = await runCli(CONNECTOR_CLI, ['access', 'tcp', '--hostname', fleet.hostname, '--relay', `http://127.0.0.1:${closed}`], {}, undefined, 15_000);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/nothing answers at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED \(relay_unreachable\)/);
  });

  it('a connection cut mid-way (the connector dies) is reported and exits non-zero, never passed off as complete', async () => {
    const a = stdioAccess(fleet.hostname, relay.publicUrl);
    try {
      a.child.stdin.write('ping\n'); // and keep stdin open: the session is live
      await waitFor(() => a.io.out === 'ping\n', 10_000, { message: 'echo through the tunnel' });
      await connector.kill9();
      expect(await a.exited()).toBe(1);
      expect(a.io.err).toMatch(/^tunnel: the connection to .* was cut/);
      expect(a.io.out).toBe('ping\n');
    } finally {
      a.kill();
    }
  });
});
