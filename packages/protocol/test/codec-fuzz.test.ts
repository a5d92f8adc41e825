// Fuzzing the codecs with hostile bytes: random sequences and mutations of
// valid encodings (bit flips, truncations, corrupted length fields, splices).
// The only exception allowed out of a decoder is its own error class; a
// TypeError or a RangeError from a Buffer read would be a crash in the relay.
//
// Deterministic: a seeded PRNG drives everything, so a failure names the seed
// and iteration, and reruns reproduce it.

import { describe, it, expect } from 'vitest';
import nacl from 'tweetnacl';
import {
  decodeRequestHead,
  decodeResponseHead,
  encodeRequestHead,
  encodeResponseHead,
  HeadDecodeError,
  HeadReader,
  type HeaderPairs,
  type RequestHead,
  type ResponseHead,
} from '../src/heads.js';
import { ControlDecodeError, ControlDecoder, encodeControl, type ControlMessage } from '../src/control.js';
import { boxKeyPair, generateSigningKeyPair, openSealed, sealTo, signToken, TokenError, verifyToken } from '../src/token.js';

const SEED = 0x5eed_2024;

/** mulberry32: small, fast, good enough to drive a fuzzer. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n); // 0..n-1
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const bytes = (n: number): Buffer => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const latin1 = (max: number): string => {
    const n = int(max + 1);
    let s = '';
    // Mostly ASCII, sometimes high latin1, like real headers.
    for (let i = 0; i < n; i++) s += String.fromCharCode(int(8) === 0 ? 0x80 + int(128) : 0x20 + int(95));
    return s;
  };
  return { next, int, pick, bytes, latin1 };
}
type Rng = ReturnType<typeof prng>;

const INTERESTING_U16 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x3ff, 0x400, 0x401, 0x4000, 0x4001, 0x7fff, 0x8000, 0xfffe, 0xffff];

/** One to three mutations of `input`; never modifies it. */
function mutate(rng: Rng, input: Buffer, splice: () => Buffer): Buffer {
  let b = Buffer.from(input);
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(8)) {
      case 0: // bit flips
        for (let k = 1 + rng.int(8); k > 0 && b.length > 0; k--) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 1: // truncation
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 2: // extension with garbage
        b = Buffer.concat([b, rng.bytes(1 + rng.int(16))]);
        break;
      case 3: // corrupt what may be a u16 length field
        if (b.length >= 2) {
          const at = rng.int(b.length - 1);
          const v = rng.int(3) === 0 ? rng.int(0x10000) : rng.pick(INTERESTING_U16);
          b[at] = v >>> 8;
          b[at + 1] = v & 0xff;
        }
        break;
      case 4: // insert bytes
        {
          const at = rng.int(b.length + 1);
          b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(4)), b.subarray(at)]);
        }
        break;
      case 5: // delete a range
        {
          const at = rng.int(b.length + 1);
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
        }
        break;
      case 6: // overwrite one byte
        if (b.length > 0) b[rng.int(b.length)] = rng.pick([0, 1, 2, 3, 0x7f, 0x80, 0xff, rng.int(256)]);
        break;
      default: // splice with another valid encoding
        {
          const other = splice();
          const at = rng.int(b.length + 1);
          b = Buffer.concat([b.subarray(0, at), other.subarray(rng.int(other.length + 1))]);
        }
    }
  }
  return b;
}

function randomHeaders(rng: Rng): HeaderPairs {
  const headers: HeaderPairs = [];
  for (let n = rng.int(12); n > 0; n--) headers.push([rng.latin1(20), rng.latin1(60)]);
  return headers;
}

function randomRequest(rng: Rng): RequestHead {
  return {
    kind: rng.pick(['http', 'websocket', 'tcp'] as const),
    method: rng.pick(['GET', 'POST', 'OPTIONS', '', rng.latin1(8)]),
    path: `/${rng.latin1(80)}`,
    host: rng.latin1(30),
    scheme: rng.pick(['http', 'https'] as const),
    clientIp: rng.pick(['203.0.113.7', '2001:db8::1', '']),
    requestId: rng.latin1(24),
    headers: randomHeaders(rng),
  };
}

function randomResponse(rng: Rng): ResponseHead {
  return { status: 100 + rng.int(900), statusText: rng.latin1(20), headers: randomHeaders(rng) };
}

/**
 * Runs `fn`, letting only `allowed` errors through (counted by code). Anything
 * else fails the test with enough context to reproduce it.
 */
function guard(allowed: new (...args: never[]) => Error & { code: string }, counts: Map<string, number>, iteration: number, input: unknown, fn: () => void): void {
  try {
    fn();
    counts.set('ok', (counts.get('ok') ?? 0) + 1);
  } catch (err) {
    if (err instanceof allowed) {
      counts.set(err.code, (counts.get(err.code) ?? 0) + 1);
      return;
    }
    const shown = Buffer.isBuffer(input) ? input.toString('hex') : JSON.stringify(input);
    throw new Error(`seed ${SEED} iteration ${iteration}: ${String(err)} escaped for input ${shown}`, { cause: err });
  }
}

const N_REQUEST = 35_000;
const N_RESPONSE = 25_000;
const N_READER = 20_000;
const N_CONTROL = 20_000;
const N_TOKEN = 12_000;
const N_SEALED = 3_000;

describe(`codec fuzz (seed ${SEED})`, () => {
  const rng = prng(SEED);
  const requests = Array.from({ length: 64 }, () => encodeRequestHead(randomRequest(rng)).subarray(4));
  const responses = Array.from({ length: 64 }, () => encodeResponseHead(randomResponse(rng)).subarray(4));
  const anyHead = (): Buffer => (rng.int(2) === 0 ? rng.pick(requests) : rng.pick(responses));

  /** Random bytes, often with a plausible version/type preamble so the fuzz gets past byte 2. */
  const randomBody = (type: number): Buffer => {
    const b = rng.bytes(rng.int(200));
    if (b.length >= 2 && rng.int(2) === 0) {
      b[0] = 1;
      b[1] = type;
      if (type === 1 && b.length >= 4 && rng.int(2) === 0) {
        b[2] = 1 + rng.int(3);
        b[3] = 1 + rng.int(2);
      }
    }
    return b;
  };

  it(`decodeRequestHead: ${N_REQUEST} inputs, only HeadDecodeError escapes, successes are canonical`, () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < N_REQUEST; i++) {
      const input = rng.int(4) === 0 ? randomBody(1) : mutate(rng, rng.pick(requests), anyHead);
      guard(HeadDecodeError, counts, i, input, () => {
        const head = decodeRequestHead(input);
        // The encoding is canonical: whatever decodes re-encodes to the same bytes.
        expect(encodeRequestHead(head).subarray(4).equals(input)).toBe(true);
      });
    }
    for (const code of ['ok', 'TRUNCATED', 'TOO_LARGE', 'BAD_VERSION', 'BAD_TYPE', 'BAD_FIELD', 'TRAILING_BYTES']) {
      expect(counts.get(code), `${code} in ${JSON.stringify([...counts])}`).toBeGreaterThan(0);
    }
  });

  it(`decodeResponseHead: ${N_RESPONSE} inputs, only HeadDecodeError escapes, successes are canonical`, () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < N_RESPONSE; i++) {
      const input = rng.int(4) === 0 ? randomBody(2) : mutate(rng, rng.pick(responses), anyHead);
      guard(HeadDecodeError, counts, i, input, () => {
        const head = decodeResponseHead(input);
        expect(encodeResponseHead(head).subarray(4).equals(input)).toBe(true);
      });
    }
    for (const code of ['ok', 'TRUNCATED', 'TOO_LARGE', 'BAD_VERSION', 'BAD_TYPE', 'BAD_FIELD', 'TRAILING_BYTES']) {
      expect(counts.get(code), `${code} in ${JSON.stringify([...counts])}`).toBeGreaterThan(0);
    }
  });

  it(`HeadReader: ${N_READER} chunked streams, only HeadDecodeError escapes, head and rest are exact`, () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < N_READER; i++) {
      const framed = Buffer.concat([rng.int(2) === 0 ? encodeRequestHead(randomRequest(rng)) : encodeResponseHead(randomResponse(rng)), rng.bytes(rng.int(40))]);
      const r = rng.int(10);
      const stream = r === 0 ? rng.bytes(rng.int(64)) : r < 5 ? framed : mutate(rng, framed, anyHead);
      const maxBytes = rng.int(8) === 0 ? rng.int(300) : undefined;
      guard(HeadDecodeError, counts, i, stream, () => {
        const reader = new HeadReader(maxBytes);
        let pos = 0;
        let head: Buffer | null = null;
        while (pos < stream.length && head === null) {
          // Chunks of 1 byte up to the whole stream.
          const size = rng.int(3) === 0 ? 1 : 1 + rng.int(stream.length);
          head = reader.push(stream.subarray(pos, pos + size));
          pos = Math.min(stream.length, pos + size);
        }
        if (head === null) {
          expect(reader.bufferedBytes).toBe(stream.length);
          return;
        }
        const len = stream.readUInt32BE(0);
        expect(head.equals(stream.subarray(4, 4 + len))).toBe(true);
        expect(Buffer.concat([reader.rest(), stream.subarray(pos)]).equals(stream.subarray(4 + len))).toBe(true);
        if (head[1] === 2) decodeResponseHead(head);
        else decodeRequestHead(head);
      });
    }
    for (const code of ['ok', 'TOO_LARGE', 'TRUNCATED']) {
      expect(counts.get(code), `${code} in ${JSON.stringify([...counts])}`).toBeGreaterThan(0);
    }
  });

  it(`ControlDecoder: ${N_CONTROL} chunked streams, only ControlDecodeError escapes, decoded messages re-encode`, () => {
    const valid: ControlMessage[] = [
      { type: 'register', connectorId: 'c-1', connIndex: 3, version: '1.2.3', features: ['a', 'b'] },
      { type: 'registered', relayId: 'r', region: 'eu', connectionId: 'x' },
      { type: 'drain' },
      { type: 'error', code: 'E', message: 'm' },
    ];
    const framedValid = valid.map(encodeControl);
    const jsonValues: unknown[] = [null, true, 0, -1, 63, 64, 1.5, 1e308, '', 'x'.repeat(300), [], ['s'], [1], {}, { type: 'drain' }, '__proto__'];
    const frame = (json: string): Buffer => {
      const body = Buffer.from(json, 'utf8');
      const p = Buffer.alloc(4);
      p.writeUInt32BE(body.length);
      return Buffer.concat([p, body]);
    };
    /** A structurally mutated message: a field replaced, removed or added, bypassing encodeControl. */
    const jsonMutant = (): Buffer => {
      const m: Record<string, unknown> = { ...rng.pick(valid) };
      const keys = [...Object.keys(m), 'type', 'extra', 'connIndex', 'features'];
      const key = rng.pick(keys);
      if (rng.int(4) === 0) delete m[key];
      else m[key] = rng.pick(jsonValues);
      return frame(JSON.stringify(m));
    };
    const counts = new Map<string, number>();
    for (let i = 0; i < N_CONTROL; i++) {
      const parts: Buffer[] = [];
      for (let n = 1 + rng.int(4); n > 0; n--) {
        const r = rng.int(4);
        parts.push(r === 0 ? rng.pick(framedValid) : r === 1 ? jsonMutant() : mutate(rng, rng.pick(framedValid), () => rng.pick(framedValid)));
      }
      if (rng.int(10) === 0) parts.push(rng.bytes(rng.int(32)));
      const stream = Buffer.concat(parts);
      guard(ControlDecodeError, counts, i, stream, () => {
        const d = new ControlDecoder();
        for (let pos = 0; pos < stream.length; ) {
          const size = rng.int(3) === 0 ? 1 : 1 + rng.int(stream.length);
          for (const m of d.push(stream.subarray(pos, pos + size))) encodeControl(m);
          pos += size;
        }
      });
    }
    for (const code of ['ok', 'TOO_LARGE', 'BAD_JSON', 'UNKNOWN_TYPE', 'BAD_FIELD']) {
      expect(counts.get(code), `${code} in ${JSON.stringify([...counts])}`).toBeGreaterThan(0);
    }
  });

  it(`verifyToken: ${N_TOKEN} strings, only TokenError escapes, and only genuinely signed tokens pass`, () => {
    const fleet = generateSigningKeyPair();
    const signed = [
      signToken('tunnel', { jti: 'a', tunnelId: 't', relays: ['wss://r:7844'] }, fleet.secretKey),
      signToken('account', { jti: 'b', accountId: 'acc' }, fleet.secretKey),
      signToken('tunnel', { jti: 'c', exp: 1 }, fleet.secretKey),
      signToken('tunnel', {}, fleet.secretKey),
    ];
    // Signed by the fleet key but with odd payloads signToken would refuse to produce.
    const secret = Buffer.from(fleet.secretKey, 'base64url');
    const rawSigned = (json: string, kind: string): string => {
      const payload = Buffer.from(json, 'utf8');
      const sig = nacl.sign.detached(Buffer.concat([Buffer.from(`tunnel-token/v1\n${kind}\n`), payload]), secret);
      return `${payload.toString('base64url')}.${Buffer.from(sig).toString('base64url')}`;
    };
    const oddPayloads = ['[]', 'null', '"x"', '{}', '{"kind":1}', '{"kind":"tunnel","exp":"x"}', '{"kind":"tunnel","exp":null}', '{"kind":"tunnel","__proto__":{"x":1}}'];
    for (const p of oddPayloads) signed.push(rawSigned(p, 'tunnel'));
    const genuine = new Set(signed);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n\u00e9';
    const mutateToken = (t: string): string => {
      let s = t;
      for (let r = 1 + rng.int(3); r > 0; r--) {
        const at = rng.int(s.length + 1);
        switch (rng.int(6)) {
          case 0:
            s = s.slice(0, at) + rng.pick([...alphabet]) + s.slice(at + 1);
            break;
          case 1:
            s = s.slice(0, at);
            break;
          case 2:
            s = s.slice(0, at) + rng.pick([...alphabet]) + s.slice(at);
            break;
          case 3:
            s = s.slice(0, at) + s.slice(at + 1 + rng.int(4));
            break;
          case 4: { // graft the other half of another token
            const [p2, s2] = rng.pick(signed).split('.') as [string, string];
            const [p1, s1] = s.split('.');
            s = rng.int(2) === 0 ? `${p1 ?? ''}.${s2}` : `${p2}.${s1 ?? ''}`;
            break;
          }
          default: // flip a bit in one decoded part, re-encoded canonically
            {
              const parts = s.split('.');
              const k = rng.int(parts.length);
              const bytes = Buffer.from(parts[k]!, 'base64url');
              if (bytes.length > 0) bytes[rng.int(bytes.length)]! ^= 1 << rng.int(8);
              parts[k] = bytes.toString('base64url');
              s = parts.join('.');
            }
        }
      }
      return s;
    };
    const counts = new Map<string, number>();
    const now = Date.now();
    for (let i = 0; i < N_TOKEN; i++) {
      const r = rng.int(10);
      const token =
        r === 0
          ? rng.bytes(rng.int(120)).toString(rng.pick(['latin1', 'base64url', 'utf8'] as const))
          : r === 1
            ? `${rng.bytes(rng.int(80)).toString('base64url')}.${rng.bytes(rng.pick([0, 63, 64, 65])).toString('base64url')}`
            : r === 2
              ? rng.pick(signed)
              : mutateToken(rng.pick(signed));
      const kind = rng.pick(['tunnel', 'account']);
      guard(TokenError, counts, i, token, () => {
        verifyToken(kind, token, fleet.publicKey, { now });
        expect(genuine.has(token), `a forged token verified: ${token}`).toBe(true);
      });
    }
    for (const code of ['ok', 'MALFORMED', 'BAD_SIGNATURE', 'WRONG_KIND', 'EXPIRED']) {
      expect(counts.get(code), `${code} in ${JSON.stringify([...counts])}`).toBeGreaterThan(0);
    }
  });

  it(`openSealed: ${N_SEALED} inputs, only TokenError escapes`, () => {
    const me = boxKeyPair();
    const sealed = [sealTo(me.publicKey, 'credential'), sealTo(me.publicKey, '')];
    const counts = new Map<string, number>();
    for (let i = 0; i < N_SEALED; i++) {
      const base = Buffer.from(rng.pick(sealed), 'base64url');
      const input = (rng.int(4) === 0 ? rng.bytes(rng.int(100)) : mutate(rng, base, () => base)).toString('base64url');
      const text = rng.int(20) === 0 ? `${input}!` : input;
      guard(TokenError, counts, i, text, () => {
        openSealed(me.secretKey, text);
      });
    }
    for (const code of ['MALFORMED', 'DECRYPT_FAILED']) expect(counts.get(code)).toBeGreaterThan(0);
  });
});
