// Debian's `pebble` (Let's Encrypt's ACME test server) on 127.0.0.1 for a
// test: its own HTTPS certificate from a private CA the test makes, free
// ports, validation against the relay's public ports, names resolved by the
// harness's DNS server. Suites skip with a reason when pebble is absent, and
// fail under CI=true (.ci/run installs it).

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Agent, request } from 'undici';
import { readFileSync } from 'node:fs';
import { Proc } from './procs.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';
import { issueCert, type Ca } from './certs.js';

export function pebbleMissing(suite: string): string | null {
  try {
    execFileSync('pebble', ['-h'], { stdio: 'ignore' });
    return null;
  } catch (e) {
    // `pebble -h` exits 2 after printing its usage: it is there.
    if ((e as { status?: number }).status === 2) return null;
    const why = 'pebble is not installed (apt-get install pebble)';
    if (process.env.CI === 'true') throw new Error(`${suite}: ${why}`);
    console.log(`skipping ${suite}: ${why}`);
    return why;
  }
}

export interface Pebble {
  proc: Proc;
  /** ACME directory URL. */
  directory: string;
  /** PEM of the root the issued certificates chain to (from the management endpoint). */
  root(): Promise<string>;
  stop(): Promise<void>;
}

export async function startPebble(o: {
  dir: string;
  /** CA that signs pebble's own HTTPS certificate (the relay trusts it through NODE_EXTRA_CA_CERTS). */
  ca: Ca;
  dnsPort: number;
  /** The relay's public ports pebble validates against. */
  httpPort: number;
  tlsPort: number;
  /** Lifetime of issued certificates, in seconds. */
  validitySeconds?: number;
}): Promise<Pebble> {
  const [acmePort, mgmtPort] = [await freePort(), await freePort()];
  const leaf = issueCert(o.ca, path.join(o.dir, `pebble-${acmePort}`), { names: ['pebble.test'] });
  const config = path.join(o.dir, `pebble-${acmePort}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: leaf.cert,
        privateKey: leaf.key,
        httpPort: o.httpPort,
        tlsPort: o.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(o.validitySeconds ? { certificateValidityPeriod: o.validitySeconds } : {}),
      },
    }),
  );
  const proc = new Proc('pebble', 'pebble', ['-config', config, '-dnsserver', `127.0.0.1:${o.dnsPort}`], {
    PEBBLE_VA_NOSLEEP: '1',
    PEBBLE_WFE_NONCEREJECT: '0',
    // Every order validates afresh: a reused authorization would let a test pass without a challenge.
    PEBBLE_AUTHZREUSE: '0',
  });
  const dispatcher = new Agent({ connect: { ca: readFileSync(o.ca.cert) } });
  const directory = `https://127.0.0.1:${acmePort}/dir`;
  await waitFor(
    async () => {
      if (!proc.running) throw new Error(`pebble exited: ${proc.stderr.slice(-500)} ${proc.stdout.slice(-500)}`);
      try {
        const r = await request(directory, { dispatcher });
        await r.body.text();
        return r.statusCode === 200;
      } catch {
        return false;
      }
    },
    15_000,
    { message: 'pebble answering' },
  );
  return {
    proc,
    directory,
    async root() {
      const r = await request(`https://127.0.0.1:${mgmtPort}/roots/0`, { dispatcher });
      return r.body.text();
    },
    async stop() {
      await proc.stop(2_000);
      await dispatcher.close();
    },
  };
}
