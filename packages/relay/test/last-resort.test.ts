// README, "Hostile input": each request's handler entry point on the relay is
// wrapped; a throw nothing foresaw ends that one request (its client
// connection) with an error log line, never the process, and the relay serves
// on. Here a real relay's route lookup throws for one hostname (standing in
// for a bug no input check foresaw): that request's connection is cut and
// logged, and the next request on the same listener is answered as usual.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKeyPair } from '@tunnel/protocol';
import { Relay } from '../src/relay.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';

/** One request; resolves with the status, or with the socket error that ended it. */
function get(port: number, host: string): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const q = http.get({ host: '127.0.0.1', port, path: '/', headers: { host, accept: 'application/json' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    q.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    q.setTimeout(10_000, () => q.destroy(new Error('no answer in 10 s')));
  });
}

describe('relay: the last-resort wrapper around a public request', () => {
  let dir: string;
  let store: Store;
  let relay: Relay;
  let port: number;
  const logs: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tunnel-last-resort-'));
    store = await openStore(`file:${dir}`, { watch: false });
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    relay = new Relay(
      { id: 'relay-lr', region: 'test', listen: { http: { host: '127.0.0.1', port: 0 }, connect: { host: '127.0.0.1', port: 0 } }, drainTimeoutMs: 1_000 },
      { store, keys: { ...generateSigningKeyPair(), createdAt: new Date().toISOString() }, log: pino({ level: 'info' }, sink) },
    );
    port = (await relay.start()).http!;
    // The stand-in for a bug: routing this one hostname throws.
    const lookup = relay.routes.lookup.bind(relay.routes);
    relay.routes.lookup = (host: string) => {
      if (host.startsWith('boom.test')) throw new Error('unforeseen: boom');
      return lookup(host);
    };
  });
  afterAll(async () => {
    await relay?.stop();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a throw while handling one request cuts that request only, logged with its reason; the relay serves on', async () => {
    const before = await get(port, 'nobody.test');
    expect(before).toEqual({ status: 404 });
    const boom = await get(port, 'boom.test');
    expect(boom).toHaveProperty('error'); // the connection was ended, no answer written
    const line = logs.find((l) => String(l.msg).startsWith('request handler failed'));
    expect(line, 'the failure is logged').toBeDefined();
    expect(line!.err).toBe('unforeseen: boom');
    // Same listener, same process: served as before.
    for (let i = 0; i < 3; i++) expect(await get(port, 'nobody.test')).toEqual({ status: 404 });
  });
});
