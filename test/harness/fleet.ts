// A small fleet for a test file: fleet keys, a file store, N relays, a tunnel
// routed to a hostname, and helpers to start connectors against it.

import * as path from 'node:path';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type ConnectorStartOptions, type Proc, type RelayProc } from './procs.js';

export interface Fleet {
  dir: string;
  keys: string;
  store: string;
  relays: RelayProc[];
  token: string;
  hostname: string;
  connector(o?: Partial<ConnectorStartOptions>): Promise<Proc>;
  close(): Promise<void>;
}

export async function startFleet(o: { relays?: number; hostname?: string; store?: string; relayArgs?: string[] } = {}): Promise<Fleet> {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  generateKeyFile(keys);
  const store = o.store ?? `file:${path.join(tmp.dir, 'store')}`;
  const relays: RelayProc[] = [];
  for (let i = 0; i < (o.relays ?? 2); i++) {
    relays.push(await startRelay({ dir: tmp.dir, store, keys, id: `relay-${i}`, extraArgs: o.relayArgs }));
  }
  const hostname = o.hostname ?? 'app.test';
  const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'app', hostnames: [hostname], relays: relays.map((r) => r.connectUrl) });
  return {
    dir: tmp.dir,
    keys,
    store,
    relays,
    token,
    hostname,
    connector: (c = {}) => startConnector({ token, relays: relays.map((r) => r.connectUrl), ...c }),
    async close() {
      await stopAll();
      tmp.cleanup();
    },
  };
}
