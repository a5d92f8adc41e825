// What a relay and a connector do not load until a feature needs it (README,
// "Memory"): jose and openid-client with the first Access use, acme-client
// and @peculiar/x509 with the first ACME use, ioredis only for a Redis store.
// Each is 2–17 MB of idle RSS. A real relay (file store, no Access, no TLS)
// and a real connector serving requests, each with a preload that logs every
// module it resolves.
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir } from './harness/procs.js';
import { req } from './harness/http.js';
import { startOrigin } from './harness/origin.js';
import { waitFor } from './harness/wait.js';

const preload = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/module-log.mjs')).href;

/** The packages a module list holds, from their node_modules paths. */
function packagesIn(file: string): Set<string> {
  const out = new Set<string>();
  for (const url of readFileSync(file, 'utf8').split('\n')) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (m) out.add(m[1]!);
  }
  return out;
}

describe('modules loaded only when a feature needs them', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  generateKeyFile(keys);
  const origin = startOrigin((_req, res) => res.end('ok'));

  afterAll(async () => {
    await stopAll();
    await (await origin).close();
    tmp.cleanup();
  });

  it('an idle relay without Access, ACME or Redis, and a connector serving requests, load none of them', async () => {
    const store = `file:${path.join(tmp.dir, 'store')}`;
    const hostname = 'app.lazy.test';
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'app', hostnames: [hostname] });
    const relayLog = path.join(tmp.dir, 'relay-modules.txt');
    const connectorLog = path.join(tmp.dir, 'connector-modules.txt');
    const relay = await startRelay({ dir: tmp.dir, store, keys, control: false, env: { NODE_OPTIONS: `--import ${preload}`, MODULE_LOG: relayLog } });
    const o = await origin;
    await startConnector({ token, relays: [relay.connectUrl], url: `http://127.0.0.1:${o.port}`, ha: 2, env: { NODE_OPTIONS: `--import ${preload}`, MODULE_LOG: connectorLog } });
    // Requests through both: the whole request path has been loaded.
    await waitFor(async () => (await req(relay.publicUrl, { host: hostname })).status === 200, 10_000, { message: 'a request served' });

    const relayPackages = packagesIn(relayLog);
    const connectorPackages = packagesIn(connectorLog);
    // The log works: what the run path does load is in it.
    expect([...relayPackages]).toEqual(expect.arrayContaining(['ws', 'pino']));
    expect([...connectorPackages]).toEqual(expect.arrayContaining(['ws', 'undici']));
    for (const lazy of ['jose', 'openid-client', 'acme-client', '@peculiar/x509', 'ioredis']) {
      expect(relayPackages.has(lazy), `relay loaded ${lazy}`).toBe(false);
      expect(connectorPackages.has(lazy), `connector loaded ${lazy}`).toBe(false);
    }
  });
});
