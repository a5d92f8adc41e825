// One relay ordering certificates over DNS-01 through the operator's hook,
// from a real pebble that looks the TXT records up in the harness's DNS
// server: the test bed of the DNS-hook tests (file store, one tunnel).

import * as path from 'node:path';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { createTunnel, startRelay, type RelayProc } from './procs.js';
import { makeCa, type Ca } from './certs.js';
import { freePort } from './ports.js';
import { startDns, type TestDns } from './dns.js';
import { writeDnsHook, type DnsHookScript } from './acme-dns-hook.js';
import { startPebble, type Pebble } from './pebble.js';

export interface DnsHookRelay {
  ca: Ca;
  dns: TestDns;
  hook: DnsHookScript;
  pebble: Pebble;
  relay: RelayProc;
  httpsPort: number;
  /** The run token of the tunnel routing `hostnames`. */
  token: string;
  /** Stops pebble and the DNS server (the relay goes with the test's stopAll). */
  close(): Promise<void>;
}

export async function startDnsHookRelay(o: {
  dir: string;
  id: string;
  hostnames: string[];
  hook?: { hang?: string[]; fail?: string[] };
  /** Lifetime of pebble's certificates (default: pebble's 5 years). */
  validitySeconds?: number;
  relayArgs?: string[];
}): Promise<DnsHookRelay> {
  const ca = makeCa(o.dir);
  const dns = await startDns({ control: true });
  const hook = writeDnsHook(o.dir, { controlUrl: dns.controlUrl!, ...o.hook });
  // Only DNS-01: pebble's HTTP and TLS validation ports lead nowhere.
  const pebble = await startPebble({ dir: o.dir, ca, dnsPort: dns.port, httpPort: await freePort(), tlsPort: await freePort(), validitySeconds: o.validitySeconds });
  const keys = path.join(o.dir, 'fleet-key.json');
  generateKeyFile(keys);
  const store = `file:${path.join(o.dir, 'store')}`;
  const token = await createTunnel({ dir: o.dir, store, keys, name: 'hooked', hostnames: o.hostnames });
  const httpsPort = await freePort();
  const relay = await startRelay({
    dir: o.dir,
    store,
    keys,
    id: o.id,
    env: { NODE_EXTRA_CA_CERTS: ca.cert },
    extraArgs: ['--https', `127.0.0.1:${httpsPort}`, '--acme-directory', pebble.directory, '--acme-email', 'ops@example.com',
      '--acme-challenge', 'dns-01', '--acme-dns-hook', hook.file, ...(o.relayArgs ?? [])],
  });
  return {
    ca,
    dns,
    hook,
    pebble,
    relay,
    httpsPort,
    token,
    async close() {
      await pebble.stop();
      await dns.close();
    },
  };
}
