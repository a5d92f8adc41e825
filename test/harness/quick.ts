// Quick tunnels in tests: relays started with a quick zone, `tunnel --url`
// processes, and the control API's POST /v1/quick spoken directly.

import * as path from 'node:path';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import type { QuickGrant } from '../../packages/relay/src/quick/quick-tunnels.js';
import { CONNECTOR_CLI, Proc, startRelay, tempDir, type RelayProc } from './procs.js';
import { waitFor } from './wait.js';

export const QUICK_ZONE = 'try.test';

export interface QuickFleet {
  dir: string;
  keys: string;
  store: string;
  relays: RelayProc[];
  cleanup(): void;
}

export async function startQuickRelays(o: { relays?: number; store?: string; relayArgs?: string[]; quick?: boolean } = {}): Promise<QuickFleet> {
  const tmp = tempDir('tunnel-quick-');
  const keys = path.join(tmp.dir, 'fleet-key.json');
  generateKeyFile(keys);
  const store = o.store ?? `file:${path.join(tmp.dir, 'store')}`;
  const relays: RelayProc[] = [];
  for (let i = 0; i < (o.relays ?? 1); i++) {
    relays.push(await startRelay({ dir: tmp.dir, store, keys, id: `relay-${i}`, extraArgs: [...(o.quick === false ? [] : ['--quick-zone', QUICK_ZONE]), ...(o.relayArgs ?? [])] }));
  }
  return { dir: tmp.dir, keys, store, relays, cleanup: tmp.cleanup };
}

export interface QuickConnector {
  proc: Proc;
  url: string;
  hostname: string;
  tunnelId: string;
}

/** `tunnel --url URL --relay CONTROL`, waited on until `registered` connections are up. */
export async function startQuickConnector(o: { relay: string; url?: string; args?: string[]; env?: Record<string, string>; registered?: number; ha?: number }): Promise<QuickConnector> {
  const proc = new Proc('quick-connector', process.execPath, [
    CONNECTOR_CLI,
    ...(o.url ? ['--url', o.url] : ['--hello-world']),
    '--relay',
    o.relay,
    '--ha-connections',
    String(o.ha ?? 2),
    '--log-format',
    'json',
    '--loglevel',
    'debug',
    ...(o.args ?? []),
  ], o.env ?? {});
  const line = await proc.waitForLog((l) => l.event === 'quick-tunnel', 15_000, 'quick-tunnel created');
  const want = o.registered ?? o.ha ?? 2;
  await waitFor(() => proc.countLogs((l) => l.event === 'registered') >= want || !proc.running, 15_000, { message: `quick connector: ${want} registered` });
  if (!proc.running) throw new Error(`quick connector exited: ${proc.stderr}`);
  return { proc, url: line.url as string, hostname: line.hostname as string, tunnelId: line.tunnelId as string };
}

/** What POST /v1/quick answers: the relay's own type. */
export type Grant = QuickGrant;

/** POST /v1/quick as a connector would; the raw answer (status, body, Retry-After). */
export async function postQuick(controlUrl: string, connectorId = 'test-connector'): Promise<{ status: number; body: Grant & { error?: { code: string; message: string } }; retryAfter: string | null }> {
  const r = await fetch(`${controlUrl}/v1/quick`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ connectorId }) });
  return { status: r.status, body: (await r.json()) as Grant & { error?: { code: string; message: string } }, retryAfter: r.headers.get('retry-after') };
}
