import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, Proc, createTunnel, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

// Outbound-only, proven: the origin and the connector run in a network
// namespace whose firewall drops every inbound connection; it can only dial
// out to the relays. The public request still succeeds.

function why(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  for (const bin of ['ip', 'nft']) {
    try {
      execFileSync('which', [bin], { stdio: 'ignore' });
    } catch {
      return `${bin} is not installed (apt-get install ${bin === 'ip' ? 'iproute2' : 'nftables'})`;
    }
  }
  return null;
}

const reason = why();
if (reason && process.env.CI === 'true') throw new Error(`outbound-only test cannot run in CI: ${reason}`);
if (reason) console.log(`skipping outbound-only test: ${reason}`);

const sh = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

describe.skipIf(reason !== null)('outbound-only origin host (network namespace)', () => {
  const n = process.pid % 250;
  const ns = `tunnel-test-${process.pid}`;
  const hostIf = `tth${process.pid % 100000}`;
  const nsIf = `ttn${process.pid % 100000}`;
  const hostIp = `10.231.${n}.1`;
  const nsIp = `10.231.${n}.2`;
  const tmp = tempDir();
  let relays: RelayProc[] = [];
  let origin: Proc;
  let canary: Proc;
  const canaryPort = 8001;
  let connector: Proc;

  beforeAll(async () => {
    sh('ip', 'netns', 'add', ns);
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    sh('ip', 'link', 'set', nsIf, 'netns', ns);
    sh('ip', 'addr', 'add', `${hostIp}/30`, 'dev', hostIf);
    sh('ip', 'link', 'set', hostIf, 'up');
    sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', nsIf);
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
    // The origin host's firewall: nothing new comes in (loopback aside).
    sh('ip', 'netns', 'exec', ns, 'nft', 'add table inet host; add chain inet host input { type filter hook input priority 0; policy drop; }; add rule inet host input iif lo accept; add rule inet host input ct state established,related accept');

    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    for (const id of ['relay-a', 'relay-b']) {
      // A private veth link: plain ws:// off loopback is said out loud.
      relays.push(await startRelay({ dir: tmp.dir, store, keys, id, extraArgs: ['--connect', `${hostIp}:0`, '--insecure-http-control'] }));
    }
    const connectUrls = relays.map((r) => `ws://${hostIp}:${r.connect}`);
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'private', hostnames: ['private.test'], relays: connectUrls });

    origin = new Proc('origin', 'ip', ['netns', 'exec', ns, process.execPath, '-e', "require('http').createServer((q,s)=>s.end('private origin: '+q.url)).listen(8000,'127.0.0.1',()=>console.log(JSON.stringify({event:'origin-up'})))"]);
    await origin.waitForLog((l) => l.event === 'origin-up');
    canary = new Proc('canary', 'ip', ['netns', 'exec', ns, process.execPath, '-e', `require('net').createServer((s)=>s.end('open')).listen(${canaryPort},'0.0.0.0',()=>console.log(JSON.stringify({event:'canary-up'})))`]);
    await canary.waitForLog((l) => l.event === 'canary-up');
    connector = new Proc('connector', 'ip', ['netns', 'exec', ns, process.execPath, CONNECTOR_CLI, 'run', '--url', 'http://127.0.0.1:8000', '--no-discover', ...connectUrls.flatMap((u) => ['--relay', u]), '--log-format', 'json'], { TUNNEL_TOKEN: token });
    await waitFor(() => connector.countLogs((l) => l.event === 'registered') >= 4, 20_000, { message: 'connector registered from inside the namespace' });
  });

  afterAll(async () => {
    await stopAll();
    try {
      sh('ip', 'link', 'del', hostIf);
    } catch {
      /* gone with the namespace */
    }
    try {
      sh('ip', 'netns', 'del', ns);
    } catch {
      /* already gone */
    }
    tmp.cleanup();
  });

  it('serves the public request through connections dialed out of the namespace', async () => {
    for (const r of relays) {
      const res = await req(`${r.publicUrl}/hello`, { host: 'private.test' });
      expect(res.status).toBe(200);
      expect(res.text).toBe('private origin: /hello');
    }
  });

  it('the origin host accepts no connection from outside', async () => {
    // Nothing in the namespace listens beyond its loopback (but the test's own canary)...
    const listening = sh('ip', 'netns', 'exec', ns, 'ss', '-Htln');
    for (const line of listening.trim().split('\n').filter(Boolean)) {
      if (line.includes(`:${canaryPort} `)) continue;
      expect(line).toMatch(/127\.0\.0\.1:|\[::1\]:/);
    }
    // ...and even the origin's port, tried from the relays' side, gets no
    // answer at all: the firewall drops the SYN, so the connect times out.
    // (A refusal would not prove anything: nothing listens on nsIp, so the
    // kernel refuses with or without the firewall.) A canary listening on
    // every address inside the namespace is dropped the same way.
    const probe = (port: number) =>
      new Promise<string>((resolve) => {
        const s = connect({ host: nsIp, port, timeout: 1_500 });
        s.once('connect', () => (s.destroy(), resolve('connected')));
        s.once('timeout', () => (s.destroy(), resolve('timeout')));
        s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
    expect(await probe(8000)).toBe('timeout');
    expect(await probe(canaryPort)).toBe('timeout');
    // The connector's connections are all outbound, from the namespace to the relays.
    const est = sh('ip', 'netns', 'exec', ns, 'ss', '-Htn', 'state', 'established');
    const toRelays = est.split('\n').filter((l) => l.includes(`${hostIp}:`));
    expect(toRelays.length).toBeGreaterThanOrEqual(4);
    for (const l of toRelays) expect(l).toMatch(new RegExp(`${nsIp.replace(/\./g, '\\.')}:\\d+\\s+${hostIp.replace(/\./g, '\\.')}:\\d+`));
  });
});
