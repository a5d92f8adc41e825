// The relay-to-relay signature scheme (peer forwarding and relay-stats):
// every field the receiver acts on is covered, a nonce is accepted once
// (in-memory, and through a real Redis shared by two store instances as two
// relays would), and a streamed body's MAC trailer catches any change.
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PeerAuth, decodeBodySeal, encodeBodySeal, headersDigest, peerRefusalReason, readSignedRequest, sha256, upgradeProtocol, type SignedRequest } from '../src/fleet/peer-auth.js';
import { MemoryReplayCache, ReplayCacheFull } from '../src/fleet/replay-cache.js';
import { openStore } from '../src/store/open.js';
import { startRedis } from '../../../test/harness/redis.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const SECRET = 'fleet-secret-for-tests';
const redis = await startRedis();
afterAll(async () => {
  await redis?.stop();
});

function request(over: Partial<SignedRequest> = {}): SignedRequest {
  return {
    from: 'relay-a',
    time: Date.now(),
    nonce: PeerAuth.nonce(),
    requestId: 'req-1',
    method: 'POST',
    host: 'app.test',
    target: '/orders?id=7',
    clientIp: '203.0.113.9',
    scheme: 'https',
    headers: headersDigest(['Host', 'app.test', 'Content-Type', 'application/json']),
    body: { kind: 'digest', length: 9, sha256: sha256(Buffer.from('payload-1')) },
    ...over,
  };
}

describe('peer signature: coverage', () => {
  const alterations: Array<[string, Partial<SignedRequest>]> = [
    ['from', { from: 'relay-x' }],
    ['time', { time: Date.now() - 1 }],
    ['nonce', { nonce: PeerAuth.nonce() }],
    ['request id', { requestId: 'req-2' }],
    ['method', { method: 'PUT' }],
    ['host', { host: 'other.test' }],
    ['path', { target: '/admin?id=7' }],
    ['query', { target: '/orders?id=8' }],
    ['client ip', { clientIp: '198.51.100.1' }],
    ['scheme', { scheme: 'http' }],
    ['headers (an added Cookie)', { headers: headersDigest(['Host', 'app.test', 'Content-Type', 'application/json', 'Cookie', 'session=stolen']) }],
    ['body digest', { body: { kind: 'digest', length: 9, sha256: sha256(Buffer.from('payload-2')) } }],
    ['body length', { body: { kind: 'digest', length: 10, sha256: sha256(Buffer.from('payload-1')) } }],
    ['body kind (digest → stream)', { body: { kind: 'stream', length: 9 } }],
  ];

  it('an upgrade seal carries its protocol, signed (websocket vs the tcp bridge)', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request({ method: 'GET', body: { kind: 'upgrade', protocol: 'tunnel-tcp' } });
    const sig = auth.sign(r);
    expect(await auth.verify({ ...r, body: { kind: 'upgrade', protocol: 'websocket' } }, sig)).toBe('bad signature');
    expect(await auth.verify({ ...r, body: { kind: 'none' } }, sig)).toBe('bad signature');
    expect(await auth.verify(r, sig)).toBeNull();
    for (const protocol of ['websocket', 'tunnel-tcp'] as const) {
      expect(decodeBodySeal(encodeBodySeal({ kind: 'upgrade', protocol }))).toEqual({ kind: 'upgrade', protocol });
    }
    for (const bad of ['upgrade;h2c', 'upgrade;', 'upgrade;WebSocket', 'upgrade;websocket ']) expect(decodeBodySeal(bad)).toBeNull();
  });

  it('a signed request verifies once', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request();
    const sig = auth.sign(r);
    expect(await auth.verify(r, sig)).toBeNull();
  });

  for (const [what, change] of alterations) {
    it(`altering ${what} is refused`, async () => {
      const auth = new PeerAuth(SECRET, new MemoryReplayCache());
      const r = request();
      const sig = auth.sign(r);
      expect(await auth.verify({ ...r, ...change }, sig)).toBe('bad signature');
    });
  }

  it('another fleet key, a stale or future time, a missing nonce are refused', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache(), 60_000);
    const r = request();
    expect(await new PeerAuth('another-fleet', new MemoryReplayCache()).verify(r, auth.sign(r))).toBe('bad signature');
    const old = request({ time: Date.now() - 61_000 });
    expect(await auth.verify(old, auth.sign(old))).toBe('stale or missing timestamp');
    const future = request({ time: Date.now() + 61_000 });
    expect(await auth.verify(future, auth.sign(future))).toBe('stale or missing timestamp');
    const noNonce = request({ nonce: '' });
    expect(await auth.verify(noNonce, auth.sign(noNonce))).toBe('missing nonce');
  });

  it('a field holding a newline never verifies (no field can shift another)', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request({ host: 'app.test\n/admin' });
    expect(await auth.verify(r, auth.sign(r))).toBe('bad signature');
  });

  it('the headers digest is canonical: name case does not matter, order, values and additions do; framing headers are not covered', () => {
    const base = headersDigest(['Host', 'a', 'X-A', '1', 'X-B', '2']);
    expect(headersDigest(['host', 'a', 'x-a', '1', 'x-b', '2'])).toBe(base);
    expect(headersDigest(['Host', 'a', 'X-B', '2', 'X-A', '1'])).not.toBe(base);
    expect(headersDigest(['Host', 'a', 'X-A', '1 ', 'X-B', '2'])).not.toBe(base);
    expect(headersDigest(['Host', 'a', 'X-A', '1', 'X-B', '2', 'Cookie', 'c=1'])).not.toBe(base);
    expect(headersDigest(['Host', 'a', 'Connection', 'keep-alive', 'X-A', '1', 'Transfer-Encoding', 'chunked', 'X-B', '2', 'Tunnel-Peer-Client-Ip', '1.2.3.4'])).toBe(base);
  });

  it('body seals round-trip and malformed ones are refused', () => {
    for (const b of [{ kind: 'none' }, { kind: 'digest', length: 3, sha256: sha256(Buffer.from('abc')) }, { kind: 'stream', length: 'chunked' }, { kind: 'stream', length: 12 }] as const) {
      expect(decodeBodySeal(encodeBodySeal(b))).toEqual(b);
    }
    for (const bad of ['', 'digest;len=-1;sha256=x', 'digest;len=3', 'stream;len=01', 'stream', 'none;x']) expect(decodeBodySeal(bad)).toBeNull();
  });

  it('readSignedRequest takes the fields from the request as received', () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request({ headers: headersDigest(['Host', 'app.test']) });
    const pairs = auth.headerPairs(r, auth.sign(r));
    const rawHeaders = ['Host', 'app.test', ...pairs];
    const headers: Record<string, string> = {};
    for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] = rawHeaders[i + 1]!;
    const read = readSignedRequest({ method: 'POST', url: '/orders?id=7', headers, rawHeaders });
    expect(read).toEqual({ fields: r, sig: auth.sign(r) });
    // A forged client IP header (a second one is joined by node: "a, b") changes the signed field.
    const forged = readSignedRequest({ method: 'POST', url: '/orders?id=7', headers: { ...headers, 'tunnel-peer-client-ip': '198.51.100.1' }, rawHeaders });
    expect(typeof forged !== 'string' && forged.fields.clientIp).toBe('198.51.100.1');
  });
});

describe('peer signature: replay cache', () => {
  it('in memory: a replay within the window is refused; the cache is bounded and refuses (fails closed) when full', async () => {
    const cache = new MemoryReplayCache(3);
    const auth = new PeerAuth(SECRET, cache);
    const r = request();
    const sig = auth.sign(r);
    expect(await auth.verify(r, sig)).toBeNull();
    expect(await auth.verify(r, sig)).toBe('replayed request (nonce already used)');
    for (let i = 0; i < 2; i++) {
      const x = request();
      expect(await auth.verify(x, auth.sign(x))).toBeNull();
    }
    expect(cache.size).toBe(3);
    const over = request();
    expect(await auth.verify(over, auth.sign(over))).toMatch(/^replay check unavailable: replay cache full/);
    expect(() => cache.claimSync('k', 1_000)).toThrow(ReplayCacheFull);
    // Expired entries make room again.
    expect(cache.claimSync('k', 1_000, Date.now() + 10 * 60_000)).toBe(true);
    expect(cache.size).toBe(1);
  });

  it('the embedded store keeps at most nonceCacheEntries live nonces and then refuses', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tunnel-nonces-'));
    const store = await openStore(`file:${dir}`, { nonceCacheEntries: 3 });
    try {
      const auth = new PeerAuth(SECRET, { claim: (k, t) => store.claimNonce(k, t) });
      for (let i = 0; i < 3; i++) {
        const r = request();
        expect(await auth.verify(r, auth.sign(r))).toBeNull();
      }
      const r = request();
      expect(await auth.verify(r, auth.sign(r))).toMatch(/^replay check unavailable: replay cache full \(3 live nonces\)/);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a forged signature does not consume the nonce of the real request', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request();
    expect(await auth.verify(r, 'x'.repeat(43))).toBe('bad signature');
    expect(await auth.verify(r, auth.sign(r))).toBeNull();
  });

  it.skipIf(!redis)('Redis (real redis-server): a request accepted by one relay is refused as a replay by another', async () => {
    const prefix = `peer-auth-${process.pid}:`;
    const a = await openStore(redis!.url, { keyPrefix: prefix });
    const b = await openStore(redis!.url, { keyPrefix: prefix });
    try {
      const relayA = new PeerAuth(SECRET, { claim: (k, t) => a.claimNonce(k, t) }, 500);
      const relayB = new PeerAuth(SECRET, { claim: (k, t) => b.claimNonce(k, t) }, 500);
      const r = request();
      const sig = relayA.sign(r);
      expect(await relayA.verify(r, sig)).toBeNull();
      expect(await relayB.verify(r, sig)).toBe('replayed request (nonce already used)');
      expect(await relayA.verify(r, sig)).toBe('replayed request (nonce already used)');
      const other = request();
      expect(await relayB.verify(other, relayB.sign(other))).toBeNull();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('peer signature: streamed body MAC trailer', () => {
  const auth = new PeerAuth(SECRET, new MemoryReplayCache());
  const sig = auth.sign(request({ body: { kind: 'stream', length: 'chunked' } }));
  const chunks = [Buffer.from('first chunk,'), Buffer.alloc(70_000, 7), Buffer.from('x'), Buffer.from('last')];
  const total = chunks.reduce((n, c) => n + c.length, 0);

  async function sealed(): Promise<Buffer> {
    const out: Buffer[] = [];
    await pipeline(Readable.from(chunks), auth.sealStream(sig), async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) out.push(c);
    });
    return Buffer.concat(out);
  }

  async function open(wire: Buffer, length: number | 'chunked', key = sig, splitAt = [5, 40, 70_020]): Promise<Buffer> {
    const parts: Buffer[] = [];
    let last = 0;
    for (const at of [...splitAt, wire.length]) {
      parts.push(wire.subarray(last, Math.min(at, wire.length)));
      last = Math.min(at, wire.length);
    }
    const out: Buffer[] = [];
    await pipeline(Readable.from(parts.filter((p) => p.length > 0)), auth.openStream(key, length), async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) out.push(c);
    });
    return Buffer.concat(out);
  }

  it('passes the body through unchanged, minus the trailer, whatever the chunking', async () => {
    const wire = await sealed();
    expect(wire.length).toBe(total + 32);
    expect((await open(wire, 'chunked')).equals(Buffer.concat(chunks))).toBe(true);
    expect((await open(wire, total, sig, [1, 2, 3, wire.length - 1])).equals(Buffer.concat(chunks))).toBe(true);
  });

  it('a body shorter than the trailer, arriving in pieces that straddle it, passes through whole', async () => {
    const out: Buffer[] = [];
    await pipeline(Readable.from([Buffer.from('x')]), auth.sealStream(sig), async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) out.push(c);
    });
    const wire = Buffer.concat(out);
    expect(wire.length).toBe(33);
    for (const splitAt of [[30], [20], [1, 17], [32]]) expect((await open(wire, 1, sig, splitAt)).toString(), String(splitAt)).toBe('x');
  });

  it('a changed byte, a cut body, another request\'s key or a wrong signed length fails the stream', async () => {
    const wire = await sealed();
    const flipped = Buffer.from(wire);
    flipped[100] = flipped[100]! ^ 1;
    await expect(open(flipped, 'chunked')).rejects.toThrow(/MAC does not verify/);
    await expect(open(wire.subarray(0, wire.length - 1), 'chunked')).rejects.toThrow(/MAC does not verify/);
    await expect(open(wire.subarray(0, 20), 'chunked')).rejects.toThrow(/MAC does not verify/);
    await expect(open(wire, 'chunked', auth.sign(request()))).rejects.toThrow(/MAC does not verify/);
    await expect(open(wire, total + 1)).rejects.toThrow(/length differs/);
    await expect(open(wire, total - 100)).rejects.toThrow(/longer than signed/);
  });
});

describe('peer signature: refusal labels and upgrade names', () => {
  // The peer endpoint counts each refusal under a bounded label
  // (`peer_refused_total{reason}`); the messages are the ones PeerAuth and
  // the endpoint really give, prefixed as the endpoint prefixes them.
  it('each refusal the endpoint can give is counted under its own reason', async () => {
    const refused = (why: string | null) => peerRefusalReason(`peer request refused: ${why ?? 'accepted?'}`);
    const full = new MemoryReplayCache(1);
    const auth = new PeerAuth(SECRET, full, 60_000);
    const r = request();
    const sig = auth.sign(r);
    expect(refused(await auth.verify(r, 'x'.repeat(43)))).toBe('signature');
    const old = request({ time: Date.now() - 61_000 });
    expect(refused(await auth.verify(old, auth.sign(old)))).toBe('stale');
    expect(await auth.verify(r, sig)).toBeNull();
    expect(refused(await auth.verify(r, sig))).toBe('replay');
    const next = request();
    expect(refused(await auth.verify(next, auth.sign(next)))).toBe('replay_check_unavailable');
    expect(refused('body does not match its signed digest')).toBe('body');
    expect(refused('digest body over the limit')).toBe('body');
    const noNonce = request({ nonce: '' });
    expect(refused(await auth.verify(noNonce, auth.sign(noNonce)))).toBe('malformed');
    expect(refused('an upgrade seal on a plain request')).toBe('malformed');
  });

  it('the Upgrade header names a carried protocol whatever its case and surrounding space; anything else is none', () => {
    expect(upgradeProtocol('WebSocket')).toBe('websocket');
    expect(upgradeProtocol(' websocket ')).toBe('websocket');
    expect(upgradeProtocol('Tunnel-TCP')).toBe('tunnel-tcp');
    expect(upgradeProtocol('h2c')).toBeNull();
    expect(upgradeProtocol('websocket, h2c')).toBeNull();
    expect(upgradeProtocol('')).toBeNull();
    expect(upgradeProtocol(undefined)).toBeNull();
  });
});

describe('peer signature: time window and nonce lifetime', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });
  const at = (ms: number) => vi.spyOn(Date, 'now').mockReturnValue(ms);
  const T = 1_800_000_000_000;

  it('a time less than one window away is accepted, exactly one window away is not, on either side; a missing time never verifies', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache(), 60_000);
    const r = request({ time: T });
    const sig = auth.sign(r);
    at(T + 59_999);
    expect(auth.checkSignature(r, sig)).toBeNull();
    at(T - 59_999);
    expect(auth.checkSignature(r, sig)).toBeNull();
    at(T + 60_000);
    expect(auth.checkSignature(r, sig)).toBe('stale or missing timestamp');
    at(T - 60_000);
    expect(auth.checkSignature(r, sig)).toBe('stale or missing timestamp');
    // A request read without a time header carries NaN: refused even when signed as such.
    vi.restoreAllMocks();
    const untimed = request({ time: NaN });
    expect(await auth.verify(untimed, auth.sign(untimed))).toBe('stale or missing timestamp');
  });

  it('a nonce is remembered for as long as its request could still verify: first seen at the window’s start, replayed at its end', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache(), 60_000);
    const r = request({ time: T });
    const sig = auth.sign(r);
    at(T - 59_999);
    expect(await auth.verify(r, sig)).toBeNull();
    at(T + 59_999);
    expect(await auth.verify(r, sig)).toBe('replayed request (nonce already used)');
  });

  it('a signature of the wrong length is refused as bad, not thrown', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request();
    const sig = auth.sign(r);
    for (const bad of ['', 'x', sig.slice(0, -1), sig + 'A']) expect(await auth.verify(r, bad)).toBe('bad signature');
    expect(await auth.verify(r, sig)).toBeNull();
  });
});

describe('peer signature: the wire format is fixed', () => {
  // Relays of two versions forward to each other during a rolling deploy, so
  // the scheme cannot drift. These values were computed from the scheme as
  // written, with node:crypto alone: key = SHA-256("tunnel-peer/v2\n" +
  // secret); signature = HMAC-SHA-256(key, the canonical fields joined by
  // "\n"), base64url; headers digest = SHA-256 over "name:value\n" in
  // latin1; stream key = HMAC(key, "stream\n" + signature), trailer =
  // HMAC(stream key, body).
  it('signature, headers digest and stream trailer match known answers', async () => {
    const auth = new PeerAuth('fleet-secret-for-tests', new MemoryReplayCache());
    const headers = headersDigest(['Host', 'app.test', 'X-Name', 'Zo\u00eb']);
    expect(headers).toBe('DwEstsB3UogBdCZZcItYDUPk0TF2oHmOwdDCO-hCPNM');
    const r: SignedRequest = {
      from: 'relay-a', time: 1_800_000_000_000, nonce: '6f1c1d9e-8b1e-4a58-9c57-2c3f0c7f5a10', requestId: 'req-1', method: 'POST',
      host: 'app.test', target: '/orders?id=7', clientIp: '203.0.113.9', scheme: 'https', headers, body: { kind: 'stream', length: 5 },
    };
    const sig = auth.sign(r);
    expect(sig).toBe('Ojrtq3zZ1g23cd1wuRg6POy3ay9oJFarcaf7gxxYajs');
    const out: Buffer[] = [];
    await pipeline(Readable.from([Buffer.from('hello')]), auth.sealStream(sig), async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) out.push(c);
    });
    const wire = Buffer.concat(out);
    expect(wire.subarray(0, 5).toString()).toBe('hello');
    expect(wire.subarray(5).toString('base64url')).toBe('xOACW1GPHN3L2xg6jhK2PZGveH6wnUqJSx0h2VbyBFI');
  });

  it('a peer header left out reads as empty: a request sent without its nonce is refused for that', async () => {
    const auth = new PeerAuth(SECRET, new MemoryReplayCache());
    const r = request({ nonce: '', headers: headersDigest(['Host', 'app.test']) });
    const pairs = auth.headerPairs(r, auth.sign(r));
    const headers: Record<string, string> = { host: 'app.test' };
    for (let i = 0; i < pairs.length; i += 2) if (pairs[i] !== 'tunnel-peer-nonce') headers[pairs[i]!] = pairs[i + 1]!;
    const read = readSignedRequest({ method: 'POST', url: '/orders?id=7', headers, rawHeaders: ['Host', 'app.test'] });
    if (typeof read === 'string') throw new Error(read);
    expect(read.fields.nonce).toBe('');
    expect(await auth.verify(read.fields, read.sig)).toBe('missing nonce');
  });

  it('a request without a body seal is refused, saying so', () => {
    expect(readSignedRequest({ method: 'GET', url: '/', headers: { host: 'app.test' }, rawHeaders: ['Host', 'app.test'] })).toBe('missing or malformed body seal');
  });
});
