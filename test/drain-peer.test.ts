// A relay that drains while peers forward to it (the rolling-restart 502
// `peer_relay_failed`): a peer learns of the drain only when the store's event
// reaches it, under load up to a second later, and meanwhile keeps sending on
// its pooled keep-alive connections. The draining relay must answer every
// forwarded request it took -- one still in its body/nonce phase included,
// before any connector stream opens -- close a peer's connection only after
// an answer saying `Connection: close`, and leave idle ones to the peers,
// which close their pool to a draining relay themselves.
//
// The test plays a lagging peer itself (it holds the fleet key, so it signs
// like one) over raw sockets, next to a real peer relay that forwards to the
// draining one.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { startRedis } from './harness/redis.js';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { PeerAuth, headersDigest, sha256, type BodySeal } from '../packages/relay/src/fleet/peer-auth.js';
import { MemoryReplayCache } from '../packages/relay/src/fleet/replay-cache.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type Proc, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { rawConnect, type RawConn } from './harness/raw-client.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

const redis = await startRedis();

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The first complete Content-Length answer in `text` past `from`, and where it ends; null until it is all there. */
function answerIn(text: string, from = 0): { answer: RawAnswer; end: number } | null {
  const headEnd = text.indexOf('\r\n\r\n', from);
  if (headEnd < 0) return null;
  const [statusLine, ...lines] = text.slice(from, headEnd).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const length = Number(headers['content-length'] ?? NaN);
  if (!Number.isInteger(length)) throw new Error(`answer without a Content-Length: ${text.slice(from, headEnd)}`);
  const end = headEnd + 4 + length;
  if (text.length < end) return null;
  return { answer: { status: Number(statusLine!.split(' ')[1]), headers, body: text.slice(headEnd + 4, end) }, end };
}

describe.skipIf(!redis)('a draining relay and the peers that forward to it', () => {
  const tmp = tempDir('tunnel-drain-peer-');
  const keysFile = path.join(tmp.dir, 'fleet-key.json');
  let store: string;
  let origin: Origin;
  let a: RelayProc;
  let b: RelayProc;
  let connector: Proc;
  let auth: PeerAuth;
  let seq = 0;

  /** A request signed as peer relay `test-peer` would sign it: head as text, body to send after it. */
  const peerRequest = (method: 'GET' | 'POST', target: string, body?: string): { head: string; body: string } => {
    const signedHeaders = ['Host', 'app.test'];
    const bytes = body === undefined ? null : Buffer.from(body);
    const seal: BodySeal = bytes === null ? { kind: 'none' } : { kind: 'digest', length: bytes.length, sha256: sha256(bytes) };
    const fields = {
      from: 'test-peer',
      time: Date.now(),
      nonce: PeerAuth.nonce(),
      requestId: `drainpeer${String(seq++).padStart(12, '0')}`,
      method,
      host: 'app.test',
      target,
      clientIp: '127.0.0.1',
      scheme: 'http',
      headers: headersDigest(signedHeaders),
      body: seal,
    };
    const pairs = [...signedHeaders, ...auth.headerPairs(fields, auth.sign(fields))];
    if (bytes !== null) pairs.push('Content-Length', String(bytes.length));
    let head = `${method} ${target} HTTP/1.1\r\n`;
    for (let i = 0; i < pairs.length; i += 2) head += `${pairs[i]}: ${pairs[i + 1]}\r\n`;
    return { head: `${head}\r\n`, body: body ?? '' };
  };

  const answered = (c: RawConn, from = 0, what = 'an answer') =>
    waitFor(() => answerIn(c.text, from) ?? (c.closed ? Promise.reject(new Error(`connection closed first; got ${JSON.stringify(c.text.slice(from))}`)) : null), 20_000, { message: what });

  beforeAll(async () => {
    store = `${redis!.url}/?prefix=drainpeer:`;
    auth = new PeerAuth(generateKeyFile(keysFile).secretKey, new MemoryReplayCache());
    origin = await startOrigin((q, s) => {
      const parts: Buffer[] = [];
      q.on('data', (c: Buffer) => parts.push(c));
      q.on('end', () => s.end(q.method === 'POST' ? `echo:${Buffer.concat(parts).toString()}` : `get:${q.url}`));
    });
    a = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: 'relay-a' });
    b = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: 'relay-b' });
    const token = await createTunnel({ dir: tmp.dir, store, keys: keysFile, name: 'app', hostnames: ['app.test'] });
    // Only A holds the tunnel's connection: B forwards everything to it.
    connector = await startConnector({ token, relays: [a.connectUrl], url: origin.url, ha: 1, extraArgs: ['--no-discover'] });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    await redis?.stop();
    tmp.cleanup();
  });

  it('answers a forwarded request still in its body, closes a kept-alive peer connection only after an answer with Connection: close, and its real peer closes its own pool', async () => {
    // B forwards to A: B's pool now holds a kept-alive connection to A.
    const viaB = await waitFor(async () => {
      const r = await req(`${b.publicUrl}/warm`, { host: 'app.test', method: 'POST', body: 'warm' });
      return r.status === 200 ? r : null;
    }, 10_000, { message: 'B forwards to A' });
    expect(viaB.text).toBe('echo:warm');

    // A lagging peer: one connection kept alive after an answer, one request in the middle of its body.
    const kept = await rawConnect(a.peer!);
    const first = peerRequest('GET', '/kept/1');
    kept.socket.write(first.head);
    const one = await answered(kept, 0, 'first answer on the kept-alive connection');
    expect(one.answer.status).toBe(200);
    expect(one.answer.body).toBe('get:/kept/1');
    expect(one.answer.headers.connection).toBe('keep-alive');

    const midBody = await rawConnect(a.peer!);
    const post = peerRequest('POST', '/mid-body', 'half-and-half');
    midBody.socket.write(post.head + post.body.slice(0, 5));

    a.proc.signal('SIGTERM');
    // The drain has nothing else in flight: without counting the forwarded
    // request it would end now and cut that connection.
    await waitFor(() => midBody.closed || a.proc.logs.some((l) => l.event === 'drain-waiting' && l.peer === 1 && l.streams === 0 && l.public === 0), 20_000, {
      message: 'A waits for the forwarded request in its body',
    });
    expect(midBody.closed, `A cut a forwarded request in its body: ${JSON.stringify(midBody.text)}`).toBe(false);
    midBody.socket.write(post.body.slice(5));
    const mid = await answered(midBody, 0, 'answer to the request sent mid-drain');
    // Its own draining connection serves it, or, if the connector has left, the refusal a peer retries elsewhere.
    if (mid.answer.status === 200) expect(mid.answer.body).toBe('echo:half-and-half');
    else expect([mid.answer.status, mid.answer.headers['tunnel-error'], mid.answer.headers['tunnel-error-source']]).toEqual([530, 'tunnel_offline', 'relay']);
    console.log(`mid-body request answered ${mid.answer.status}`);
    expect(mid.answer.headers.connection).toBe('close');
    await midBody.done;

    // Only idle peer connections are left: A waits for them rather than close one under a request.
    await waitFor(() => kept.closed || a.proc.logs.some((l) => l.event === 'drain-peers'), 20_000, { message: 'A waits for its peers to close their connections' });
    expect(kept.closed, 'A closed an idle peer connection a lagging peer may be writing on').toBe(false);
    const second = peerRequest('GET', '/kept/2');
    kept.socket.write(second.head);
    const two = await answered(kept, one.end, 'second answer on the kept-alive connection');
    if (two.answer.status === 200) expect(two.answer.body).toBe('get:/kept/2');
    else expect([two.answer.status, two.answer.headers['tunnel-error']]).toEqual([530, 'tunnel_offline']);
    expect(two.answer.headers.connection).toBe('close');
    await kept.done;

    // B closed its pooled connection when it learned of the drain: A was not left waiting on it.
    expect((await a.proc.exited).code).toBe(0);
    const drained = a.proc.logs.find((l) => l.event === 'drained');
    expect(drained, 'A drained').toBeDefined();
    expect(a.proc.logs.filter((l) => l.event === 'drain-peers-left')).toEqual([]);
    expect(b.proc.logs.filter((l) => l.msg === 'forwarding to peer relay failed')).toEqual([]);
    expect(connector.running).toBe(true);
  });
});
