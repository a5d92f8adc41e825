import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  decodeRequestHead,
  decodeResponseHead,
  encodeRequestHead,
  encodeResponseHead,
  HeadDecodeError,
  HeadReader,
  type HeadDecodeErrorCode,
  type RequestHead,
  type ResponseHead,
} from '../src/heads.js';
import { MAX_HEAD_BYTES, MAX_HEADERS, MAX_HEADER_NAME, MAX_HEADER_VALUE, MAX_PATH, MAX_SHORT_FIELD } from '../src/limits.js';

const typical: RequestHead = {
  kind: 'http',
  method: 'GET',
  path: '/api/v1/items?id=42&q=caf%C3%A9',
  host: 'app.example.com',
  scheme: 'https',
  clientIp: '203.0.113.7',
  requestId: 'b3f1c2d4e5f60718293a4b5c',
  headers: [
    ['Host', 'app.example.com'],
    ['User-Agent', 'curl/8.5.0'],
    ['Accept', '*/*'],
    ['Cookie', 'a=1'],
    ['cookie', 'b=2'],
    ['Cookie', 'a=1'],
  ],
};

const typicalResponse: ResponseHead = {
  status: 200,
  statusText: 'OK',
  headers: [
    ['Content-Type', 'text/html; charset=utf-8'],
    ['Set-Cookie', 'a=1; Path=/'],
    ['Set-Cookie', 'b=2; Path=/'],
  ],
};

const body = (framed: Buffer): Buffer => framed.subarray(4);
const latin1High = Array.from({ length: 128 }, (_, i) => String.fromCharCode(0x80 + i)).join('');

function decodeError(fn: () => unknown): HeadDecodeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HeadDecodeError);
    return err as HeadDecodeError;
  }
  throw new Error('expected a HeadDecodeError, nothing was thrown');
}

function expectCode(fn: () => unknown, code: HeadDecodeErrorCode): HeadDecodeError {
  const err = decodeError(fn);
  expect(err.code).toBe(code);
  return err;
}

describe('request head round trip', () => {
  it('keeps every field, duplicate headers, order and case', () => {
    const framed = encodeRequestHead(typical);
    expect(framed.readUInt32BE(0)).toBe(framed.length - 4);
    expect(framed[4]).toBe(1); // version
    expect(framed[5]).toBe(1); // type: request
    expect(decodeRequestHead(body(framed))).toEqual(typical);
  });

  it('round-trips every kind and scheme', () => {
    for (const kind of ['http', 'websocket', 'tcp'] as const) {
      for (const scheme of ['http', 'https'] as const) {
        const h = { ...typical, kind, scheme };
        expect(decodeRequestHead(body(encodeRequestHead(h)))).toEqual(h);
      }
    }
  });

  it('carries latin1 bytes 0x80-0xff unchanged, byte for byte', () => {
    const h: RequestHead = { ...typical, path: `/x${latin1High}`, headers: [['X-Bin', latin1High], [`X-${latin1High.slice(0, 8)}`, 'é']] };
    const framed = encodeRequestHead(h);
    expect(framed.includes(Buffer.from(latin1High, 'latin1'))).toBe(true);
    expect(decodeRequestHead(body(framed))).toEqual(h);
  });

  it('handles empty strings and no headers', () => {
    const h: RequestHead = { kind: 'tcp', method: '', path: '', host: '', scheme: 'http', clientIp: '', requestId: '', headers: [] };
    const framed = encodeRequestHead(h);
    expect(framed.length).toBe(4 + 4 + 5 * 2 + 2);
    expect(decodeRequestHead(body(framed))).toEqual(h);
    const h2 = { ...typical, headers: [['', ''], ['X-Empty', '']] as Array<[string, string]> };
    expect(decodeRequestHead(body(encodeRequestHead(h2)))).toEqual(h2);
  });

  it('accepts every field at its maximum size', () => {
    const h: RequestHead = {
      ...typical,
      method: 'M'.repeat(MAX_SHORT_FIELD),
      path: '/'.repeat(MAX_PATH),
      host: 'h'.repeat(MAX_SHORT_FIELD),
      headers: [
        ['n'.repeat(MAX_HEADER_NAME), 'v'.repeat(MAX_HEADER_VALUE)],
        ['X', 'w'.repeat(MAX_HEADER_VALUE)],
      ],
    };
    expect(decodeRequestHead(body(encodeRequestHead(h)))).toEqual(h);
    const many: RequestHead = { ...typical, headers: Array.from({ length: MAX_HEADERS }, (_, i) => [`h${i}`, `${i}`] as [string, string]) };
    expect(decodeRequestHead(body(encodeRequestHead(many)))).toEqual(many);
  });

  it('accepts a head of exactly MAX_HEAD_BYTES and refuses one byte more', () => {
    const base = encodeRequestHead({ ...typical, headers: [] }).length - 4;
    const perHeader = 4 + 1; // name 'x' + value length prefix
    let remaining = MAX_HEAD_BYTES - base; // base includes the (empty) header count
    const headers: Array<[string, string]> = [];
    while (remaining > 0) {
      const v = Math.min(MAX_HEADER_VALUE, remaining - perHeader);
      headers.push(['x', 'v'.repeat(v)]);
      remaining -= perHeader + v;
    }
    const exact = encodeRequestHead({ ...typical, headers });
    expect(exact.length - 4).toBe(MAX_HEAD_BYTES);
    expect(decodeRequestHead(body(exact)).headers).toEqual(headers);
    const last = headers[headers.length - 1]!;
    const over = [...headers.slice(0, -1), [last[0], `${last[1]}v`] as [string, string]];
    expect(() => encodeRequestHead({ ...typical, headers: over })).toThrow(RangeError);
  });

  it('decodes from a view with a non-zero byteOffset (pooled buffers)', () => {
    const framed = encodeRequestHead(typical);
    const big = Buffer.concat([Buffer.from('garbage-before'), framed, Buffer.from('after')]);
    const view = big.subarray(14 + 4, 14 + framed.length);
    expect(decodeRequestHead(view)).toEqual(typical);
  });
});

describe('response head round trip', () => {
  it('keeps status, text and duplicate headers', () => {
    const framed = encodeResponseHead(typicalResponse);
    expect(framed[5]).toBe(2);
    expect(decodeResponseHead(body(framed))).toEqual(typicalResponse);
  });

  it('accepts the status range edges and empty text', () => {
    for (const status of [100, 101, 204, 502, 530, 999]) {
      const h = { status, statusText: '', headers: [] };
      expect(decodeResponseHead(body(encodeResponseHead(h)))).toEqual(h);
    }
  });

  it('carries latin1 status text and header values', () => {
    const h: ResponseHead = { status: 418, statusText: `I'm a teapot ${latin1High}`, headers: [['X-L', latin1High]] };
    expect(decodeResponseHead(body(encodeResponseHead(h)))).toEqual(h);
  });
});

describe('encoding refuses what the peer would reject', () => {
  const cases: Array<[string, () => unknown]> = [
    ['path over MAX_PATH', () => encodeRequestHead({ ...typical, path: 'p'.repeat(MAX_PATH + 1) })],
    ['method over MAX_SHORT_FIELD', () => encodeRequestHead({ ...typical, method: 'M'.repeat(MAX_SHORT_FIELD + 1) })],
    ['host over MAX_SHORT_FIELD', () => encodeRequestHead({ ...typical, host: 'h'.repeat(MAX_SHORT_FIELD + 1) })],
    ['clientIp over MAX_SHORT_FIELD', () => encodeRequestHead({ ...typical, clientIp: '1'.repeat(MAX_SHORT_FIELD + 1) })],
    ['requestId over MAX_SHORT_FIELD', () => encodeRequestHead({ ...typical, requestId: 'r'.repeat(MAX_SHORT_FIELD + 1) })],
    ['too many headers', () => encodeRequestHead({ ...typical, headers: Array.from({ length: MAX_HEADERS + 1 }, () => ['a', 'b'] as [string, string]) })],
    ['header name too long', () => encodeRequestHead({ ...typical, headers: [['n'.repeat(MAX_HEADER_NAME + 1), 'v']] })],
    ['header value too long', () => encodeResponseHead({ ...typicalResponse, headers: [['n', 'v'.repeat(MAX_HEADER_VALUE + 1)]] })],
    ['whole head too large', () => encodeRequestHead({ ...typical, headers: Array.from({ length: 5 }, () => ['n', 'v'.repeat(MAX_HEADER_VALUE)] as [string, string]) })],
    ['char above U+00FF in a short field', () => encodeRequestHead({ ...typical, host: 'ex\u0100mple.com' })],
    ['char above U+00FF in a long value', () => encodeRequestHead({ ...typical, headers: [['X', `${'a'.repeat(100)}\u010d\u010a`]] })],
    ['char above U+00FF in a header name', () => encodeResponseHead({ ...typicalResponse, headers: [['X-\u2603', 'v']] })],
    ['unknown kind', () => encodeRequestHead({ ...typical, kind: 'udp' as RequestHead['kind'] })],
    ['unknown scheme', () => encodeRequestHead({ ...typical, scheme: 'ftp' as RequestHead['scheme'] })],
    ['status 99', () => encodeResponseHead({ ...typicalResponse, status: 99 })],
    ['status 1000', () => encodeResponseHead({ ...typicalResponse, status: 1000 })],
    ['status 200.5', () => encodeResponseHead({ ...typicalResponse, status: 200.5 })],
    ['status NaN', () => encodeResponseHead({ ...typicalResponse, status: Number.NaN })],
    ['statusText too long', () => encodeResponseHead({ ...typicalResponse, statusText: 's'.repeat(MAX_SHORT_FIELD + 1) })],
  ];
  for (const [name, fn] of cases) {
    it(`RangeError: ${name}`, () => expect(fn).toThrow(RangeError));
  }

  it('names the field holding a character latin1 cannot carry', () => {
    expect(() => encodeRequestHead({ ...typical, host: 'ex\u0100mple.com' })).toThrow(/host/);
    expect(() => encodeRequestHead({ ...typical, headers: [['a', 'b'], ['X', '\u20ac']] })).toThrow(/headers\[1\]\.value/);
    expect(() => encodeResponseHead({ ...typicalResponse, statusText: 'O\u1234K' })).toThrow(/statusText/);
  });

  it('TypeError for non-string fields and malformed header lists', () => {
    expect(() => encodeRequestHead({ ...typical, headers: [['Content-Length', 5 as unknown as string]] })).toThrow(TypeError);
    expect(() => encodeRequestHead({ ...typical, path: undefined as unknown as string })).toThrow(TypeError);
    expect(() => encodeRequestHead({ ...typical, headers: ['a' as unknown as [string, string]] })).toThrow(TypeError);
    expect(() => encodeResponseHead({ ...typicalResponse, headers: null as unknown as [] })).toThrow(TypeError);
  });
});

/** A body from raw parts, for crafting invalid heads by hand. */
function raw(...parts: Array<number[] | string | Buffer>): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
}
const str16 = (s: string): Buffer => raw([s.length >> 8, s.length & 0xff], s);
const u16 = (n: number): number[] => [n >> 8, n & 0xff];
const requestPrefix = (): Buffer => raw([1, 1, 1, 2], str16('GET'), str16('/'), str16('h'), str16('ip'), str16('id'));

describe('decode errors', () => {
  it('sanity: the hand-built request body decodes', () => {
    expect(decodeRequestHead(raw(requestPrefix(), u16(1), str16('a'), str16('b')))).toMatchObject({ method: 'GET', headers: [['a', 'b']] });
  });

  it('TRUNCATED at every cut of a valid request and response', () => {
    for (const framed of [encodeRequestHead(typical), encodeResponseHead(typicalResponse)]) {
      const full = body(framed);
      const decode = full[1] === 1 ? decodeRequestHead : decodeResponseHead;
      for (let cut = 0; cut < full.length; cut++) {
        expectCode(() => decode(full.subarray(0, cut)), 'TRUNCATED');
      }
    }
  });

  it('TRUNCATED names the field and offset', () => {
    const err = expectCode(() => decodeRequestHead(raw(requestPrefix(), u16(2), str16('a'), str16('b'), str16('c'), [0, 9], 'xy')), 'TRUNCATED');
    expect(err.message).toContain('headers[1].value');
    expect(err.message).toMatch(/offset \d+/);
    expect(expectCode(() => decodeRequestHead(Buffer.alloc(0)), 'TRUNCATED').message).toContain('version');
  });

  it('TOO_LARGE for lengths and counts over the limits', () => {
    expectCode(() => decodeRequestHead(raw([1, 1, 1, 1], u16(MAX_SHORT_FIELD + 1))), 'TOO_LARGE');
    expectCode(() => decodeRequestHead(raw([1, 1, 1, 1], str16('GET'), u16(MAX_PATH + 1))), 'TOO_LARGE');
    expect(expectCode(() => decodeRequestHead(raw(requestPrefix(), u16(MAX_HEADERS + 1))), 'TOO_LARGE').message).toContain('headerCount');
    const nameErr = expectCode(() => decodeRequestHead(raw(requestPrefix(), u16(1), u16(MAX_HEADER_NAME + 1))), 'TOO_LARGE');
    expect(nameErr.message).toContain('headers[0].name');
    expectCode(() => decodeResponseHead(raw([1, 2], u16(200), str16('OK'), u16(1), str16('n'), u16(MAX_HEADER_VALUE + 1))), 'TOO_LARGE');
    expectCode(() => decodeResponseHead(raw([1, 2], u16(200), u16(MAX_SHORT_FIELD + 1))), 'TOO_LARGE');
    expectCode(() => decodeRequestHead(Buffer.alloc(MAX_HEAD_BYTES + 1, 1)), 'TOO_LARGE');
  });

  it('BAD_VERSION', () => {
    const b = Buffer.from(body(encodeRequestHead(typical)));
    b[0] = 2;
    expect(expectCode(() => decodeRequestHead(b), 'BAD_VERSION').message).toContain('version 2');
    expectCode(() => decodeResponseHead(raw([0, 2])), 'BAD_VERSION');
  });

  it('BAD_TYPE when a head of the other direction arrives', () => {
    expectCode(() => decodeRequestHead(body(encodeResponseHead(typicalResponse))), 'BAD_TYPE');
    expectCode(() => decodeResponseHead(body(encodeRequestHead(typical))), 'BAD_TYPE');
    expectCode(() => decodeResponseHead(raw([1, 0])), 'BAD_TYPE');
  });

  it('BAD_FIELD for unknown kind, unknown scheme and out-of-range status', () => {
    for (const kind of [0, 4, 255]) {
      expect(expectCode(() => decodeRequestHead(raw([1, 1, kind, 1])), 'BAD_FIELD').message).toContain('kind');
    }
    for (const scheme of [0, 3]) {
      expect(expectCode(() => decodeRequestHead(raw([1, 1, 1, scheme])), 'BAD_FIELD').message).toContain('scheme');
    }
    for (const status of [0, 99, 1000, 65535]) {
      expect(expectCode(() => decodeResponseHead(raw([1, 2], u16(status), str16(''), u16(0))), 'BAD_FIELD').message).toContain('status');
    }
  });

  it('TRAILING_BYTES after a complete head', () => {
    const b = Buffer.concat([body(encodeResponseHead(typicalResponse)), Buffer.from([0])]);
    expect(expectCode(() => decodeResponseHead(b), 'TRAILING_BYTES').message).toContain(`offset ${b.length - 1}`);
    expectCode(() => decodeRequestHead(Buffer.concat([body(encodeRequestHead(typical)), Buffer.from('xx')])), 'TRAILING_BYTES');
  });
});

describe('HeadReader', () => {
  const framed = encodeRequestHead(typical);
  const bodyBytes = Buffer.from('body bytes that follow the head');
  const stream = Buffer.concat([framed, bodyBytes]);

  it('returns views into a chunk holding the whole head: zero copies', () => {
    const reader = new HeadReader();
    const head = reader.push(stream);
    expect(head).not.toBeNull();
    expect(head!.buffer).toBe(stream.buffer);
    expect(head!.byteOffset).toBe(stream.byteOffset + 4);
    expect(reader.rest().buffer).toBe(stream.buffer);
    expect(reader.rest()).toEqual(bodyBytes);
    expect(reader.done).toBe(true);
    expect(decodeRequestHead(head!)).toEqual(typical);
  });

  it('gives an empty rest when the chunk ends with the head', () => {
    const reader = new HeadReader();
    expect(reader.push(framed)).toEqual(body(framed));
    expect(reader.rest().length).toBe(0);
  });

  it('assembles a head cut at every position, keeping the rest exact', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const reader = new HeadReader();
      const first = reader.push(stream.subarray(0, cut));
      const second = first ?? reader.push(stream.subarray(cut));
      expect(second).toEqual(body(framed));
      const rest = first ? Buffer.concat([reader.rest(), stream.subarray(cut)]) : reader.rest();
      expect(rest).toEqual(bodyBytes);
    }
  });

  it('assembles a head fed one byte at a time, with empty chunks in between', () => {
    const reader = new HeadReader();
    let head: Buffer | null = null;
    let i = 0;
    for (; i < stream.length && head === null; i++) {
      expect(reader.push(Buffer.alloc(0))).toBeNull();
      head = reader.push(stream.subarray(i, i + 1));
    }
    expect(i).toBe(framed.length);
    expect(reader.rest().length).toBe(0);
    expect(decodeRequestHead(head!)).toEqual(typical);
  });

  it('TOO_LARGE as soon as the length prefix is in, even split across chunks', () => {
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(MAX_HEAD_BYTES + 1);
    expectCode(() => new HeadReader().push(prefix), 'TOO_LARGE');
    const reader = new HeadReader();
    expect(reader.push(prefix.subarray(0, 1))).toBeNull();
    expect(reader.push(prefix.subarray(1, 3))).toBeNull();
    expectCode(() => reader.push(prefix.subarray(3)), 'TOO_LARGE');
    expectCode(() => new HeadReader(100).push(framed), 'TOO_LARGE');
    expect(new HeadReader(framed.length - 4).push(framed)).not.toBeNull();
  });

  it('counts buffered bytes and refuses pushes once complete', () => {
    const reader = new HeadReader();
    reader.push(stream.subarray(0, 10));
    expect(reader.bufferedBytes).toBe(10);
    reader.push(stream.subarray(10));
    expect(() => reader.push(Buffer.from('x'))).toThrow(/already complete/);
  });
});

// Arbitraries shared with the property tests below.
const latin1 = (maxLength: number) =>
  fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength });
const headerList = fc.array(fc.tuple(latin1(40), latin1(200)), { maxLength: 40 });
const requestHead: fc.Arbitrary<RequestHead> = fc.record({
  kind: fc.constantFrom('http' as const, 'websocket' as const, 'tcp' as const),
  method: latin1(12),
  path: latin1(300),
  host: latin1(60),
  scheme: fc.constantFrom('http' as const, 'https' as const),
  clientIp: latin1(45),
  requestId: latin1(40),
  headers: headerList,
});
const responseHead: fc.Arbitrary<ResponseHead> = fc.record({
  status: fc.integer({ min: 100, max: 999 }),
  statusText: latin1(40),
  headers: headerList,
});

/** Cut points splitting `length` bytes into chunks, sometimes 1-byte ones. */
const cuts = (length: number) => fc.uniqueArray(fc.integer({ min: 0, max: length }), { maxLength: Math.min(length + 1, 64) }).map((a) => a.sort((x, y) => x - y));

function feed(reader: HeadReader, bytes: Buffer, points: number[]): { head: Buffer; rest: Buffer } {
  const bounds = [0, ...points, bytes.length];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const head = reader.push(bytes.subarray(bounds[i]!, bounds[i + 1]!));
    if (head !== null) return { head, rest: Buffer.concat([reader.rest(), bytes.subarray(bounds[i + 1]!)]) };
  }
  throw new Error('head never completed');
}

describe('properties', () => {
  it('decodeRequestHead(encodeRequestHead(x)) equals x', () => {
    fc.assert(fc.property(requestHead, (h) => {
      expect(decodeRequestHead(body(encodeRequestHead(h)))).toEqual(h);
    }), { numRuns: 500 });
  });

  it('decodeResponseHead(encodeResponseHead(x)) equals x', () => {
    fc.assert(fc.property(responseHead, (h) => {
      expect(decodeResponseHead(body(encodeResponseHead(h)))).toEqual(h);
    }), { numRuns: 500 });
  });

  it('HeadReader over any chunking yields the same head and the exact body bytes', () => {
    const framedStream = fc
      .record({ h: requestHead, trailing: fc.uint8Array({ maxLength: 300 }) })
      .chain(({ h, trailing }) => {
        const stream = Buffer.concat([encodeRequestHead(h), trailing]);
        const bytewise = fc.constant(Array.from({ length: stream.length - 1 }, (_, i) => i + 1));
        return fc.record({ h: fc.constant(h), trailing: fc.constant(trailing), stream: fc.constant(stream), points: fc.oneof(cuts(stream.length), bytewise) });
      });
    fc.assert(
      fc.property(framedStream, ({ h, trailing, stream, points }) => {
        const { head, rest } = feed(new HeadReader(), stream, points);
        expect(decodeRequestHead(head)).toEqual(h);
        expect(rest).toEqual(Buffer.from(trailing));
      }),
      { numRuns: 300 },
    );
  });
});
