// Bad heads get a clear error that names the field at fault (DESIGN §11:
// hostile bytes end one request with a logged reason): every encoding
// refusal and every truncation point, message by message.
import { describe, expect, it } from 'vitest';
import {
  HeadDecodeError,
  decodeRequestHead,
  decodeResponseHead,
  encodeRequestHead,
  encodeResponseHead,
  type RequestHead,
  type ResponseHead,
} from '../src/heads.js';
import { MAX_HEADERS, MAX_HEADER_NAME, MAX_HEADER_VALUE, MAX_HEAD_BYTES, MAX_PATH, MAX_SHORT_FIELD } from '../src/limits.js';

const req: RequestHead = { kind: 'http', method: 'GET', path: '/p', host: 'h.test', scheme: 'http', clientIp: '1.2.3.4', requestId: 'r1', headers: [['A', 'b']] };
const res: ResponseHead = { status: 200, statusText: 'OK', headers: [['C', 'd']] };
const x = (n: number) => 'x'.repeat(n);
const thrown = (f: () => unknown): Error => {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('did not throw');
};

describe('encoding refusals name the field', () => {
  const over: Array<[string, Partial<RequestHead>, number]> = [
    ['method', { method: x(MAX_SHORT_FIELD + 1) }, MAX_SHORT_FIELD],
    ['path', { path: x(MAX_PATH + 1) }, MAX_PATH],
    ['host', { host: x(MAX_SHORT_FIELD + 1) }, MAX_SHORT_FIELD],
    ['clientIp', { clientIp: x(MAX_SHORT_FIELD + 1) }, MAX_SHORT_FIELD],
    ['requestId', { requestId: x(MAX_SHORT_FIELD + 1) }, MAX_SHORT_FIELD],
    ['headers[1].name', { headers: [['a', 'b'], [x(MAX_HEADER_NAME + 1), 'v']] }, MAX_HEADER_NAME],
    ['headers[0].value', { headers: [['a', x(MAX_HEADER_VALUE + 1)]] }, MAX_HEADER_VALUE],
  ];
  for (const [field, patch, max] of over) {
    it(`${field} over ${max}`, () => {
      const e = thrown(() => encodeRequestHead({ ...req, ...patch }));
      expect(e).toBeInstanceOf(RangeError);
      expect(e.message).toBe(`${field}: ${max + 1} bytes exceeds the limit of ${max}`);
    });
  }
  it('statusText over its limit', () => {
    expect(thrown(() => encodeResponseHead({ ...res, statusText: x(MAX_SHORT_FIELD + 1) })).message).toBe(`statusText: ${MAX_SHORT_FIELD + 1} bytes exceeds the limit of ${MAX_SHORT_FIELD}`);
  });
  it('wrong types, counts, kinds, schemes and statuses', () => {
    expect(thrown(() => encodeRequestHead({ ...req, path: undefined as unknown as string })).message).toBe('path: expected a string, got undefined');
    expect(thrown(() => encodeRequestHead({ ...req, headers: [['a', 5 as unknown as string]] })).message).toBe('headers[0].value: expected a string, got number');
    expect(thrown(() => encodeRequestHead({ ...req, headers: null as unknown as [] })).message).toBe('headers: expected an array of [name, value] pairs');
    expect(thrown(() => encodeRequestHead({ ...req, headers: [['a', 'b'], 'c' as unknown as [string, string]] })).message).toBe('headers[1]: expected a [name, value] pair');
    const many = Array.from({ length: MAX_HEADERS + 1 }, (_, i): [string, string] => [`h${i}`, 'v']);
    expect(thrown(() => encodeRequestHead({ ...req, headers: many })).message).toBe(`headers: ${MAX_HEADERS + 1} pairs exceeds the limit of ${MAX_HEADERS}`);
    expect(thrown(() => encodeRequestHead({ ...req, kind: 'ftp' as 'http' })).message).toBe('request head: unknown kind "ftp"');
    expect(thrown(() => encodeRequestHead({ ...req, scheme: 'gopher' as 'http' })).message).toBe('request head: unknown scheme "gopher"');
    expect(thrown(() => encodeResponseHead({ ...res, status: 99 })).message).toBe('response head: status 99 is not an integer in 100..999');
    expect(thrown(() => encodeResponseHead({ ...res, status: 200.5 })).message).toBe('response head: status 200.5 is not an integer in 100..999');
  });
  it('a head whose fields are each within limits but together too large', () => {
    const headers = Array.from({ length: 5 }, (_, i): [string, string] => [`h${i}`, x(MAX_HEADER_VALUE)]);
    const e = thrown(() => encodeRequestHead({ ...req, headers }));
    expect(e.message).toMatch(new RegExp(`^request head: encoded size \\d+ exceeds the limit of ${MAX_HEAD_BYTES}$`));
    const r = thrown(() => encodeResponseHead({ ...res, headers }));
    expect(r.message).toMatch(new RegExp(`^response head: encoded size \\d+ exceeds the limit of ${MAX_HEAD_BYTES}$`));
  });
  it('the field with a character latin1 cannot carry is named, for request and response heads', () => {
    expect(thrown(() => encodeRequestHead({ ...req, requestId: 'r\u0101' })).message).toBe('request head: requestId contains a character above U+00FF, which latin1 cannot carry');
    expect(thrown(() => encodeRequestHead({ ...req, clientIp: '\u0101' })).message).toMatch(/^request head: clientIp contains/);
    expect(thrown(() => encodeRequestHead({ ...req, method: '\u0101' })).message).toMatch(/^request head: method contains/);
    expect(thrown(() => encodeRequestHead({ ...req, path: '/\u0101' })).message).toMatch(/^request head: path contains/);
    expect(thrown(() => encodeRequestHead({ ...req, headers: [['\u0101', 'v']] })).message).toMatch(/^request head: headers\[0\]\.name contains/);
    expect(thrown(() => encodeResponseHead({ ...res, headers: [['n', '\u0101']] })).message).toMatch(/^response head: headers\[0\]\.value contains/);
  });
});

describe('decoding: every truncation point names the field and the bytes left', () => {
  // Field layout of `req`'s body, byte by byte.
  const reqLayout: Array<[string, number]> = [
    ['version', 1], ['type', 1], ['kind', 1], ['scheme', 1],
    ['method', 2 + 3], ['path', 2 + 2], ['host', 2 + 6], ['clientIp', 2 + 7], ['requestId', 2 + 2],
    ['headerCount', 2], ['headers[0].name', 2 + 1], ['headers[0].value', 2 + 1],
  ];
  const resLayout: Array<[string, number]> = [['version', 1], ['type', 1], ['status', 2], ['statusText', 2 + 2], ['headerCount', 2], ['headers[0].name', 2 + 1], ['headers[0].value', 2 + 1]];
  const check = (body: Buffer, layout: Array<[string, number]>, decode: (b: Buffer) => unknown) => {
    expect(layout.reduce((a, [, n]) => a + n, 0)).toBe(body.length);
    let start = 0;
    for (const [field, size] of layout) {
      for (let cut = start; cut < start + size; cut++) {
        const e = thrown(() => decode(body.subarray(0, cut)));
        expect(e).toBeInstanceOf(HeadDecodeError);
        expect((e as HeadDecodeError).code, `cut at ${cut}`).toBe('TRUNCATED');
        // A string's length prefix and its bytes are both the field's.
        const lenPart = size > 2 && cut < start + 2;
        const at = lenPart ? start : start + 2;
        const need = lenPart ? 2 : size - 2;
        const whole = size <= 2;
        expect(e.message, `cut at ${cut}`).toBe(
          whole ? `${field}: needs ${size} bytes at offset ${start}, ${cut - start} left` : `${field}: needs ${need} bytes at offset ${at}, ${cut - at} left`,
        );
      }
      start += size;
    }
    expect(() => decode(body)).not.toThrow();
  };
  it('request head', () => check(encodeRequestHead(req).subarray(4), reqLayout, decodeRequestHead));
  it('response head', () => check(encodeResponseHead(res).subarray(4), resLayout, decodeResponseHead));
  it('trailing bytes, bad version and type, and a body over the limit are named', () => {
    const body = encodeRequestHead(req).subarray(4);
    const e = thrown(() => decodeRequestHead(Buffer.concat([body, Buffer.from('zz')])));
    expect((e as HeadDecodeError).code).toBe('TRAILING_BYTES');
    expect(e.message).toBe(`request head: 2 unexpected bytes at offset ${body.length}`);
    const r = encodeResponseHead(res).subarray(4);
    expect(thrown(() => decodeResponseHead(Buffer.concat([r, Buffer.from('z')]))).message).toBe(`response head: 1 unexpected bytes at offset ${r.length}`);
    expect(thrown(() => decodeResponseHead(body)).message).toBe('response head: type 1 at offset 1, expected 2');
    expect(thrown(() => decodeRequestHead(r)).message).toBe('request head: type 2 at offset 1, expected 1');
    const big = Buffer.alloc(MAX_HEAD_BYTES + 1);
    const t = thrown(() => decodeRequestHead(big));
    expect((t as HeadDecodeError).code).toBe('TOO_LARGE');
    expect(t.message).toBe(`request head: body of ${MAX_HEAD_BYTES + 1} bytes exceeds the limit of ${MAX_HEAD_BYTES}`);
    expect(thrown(() => decodeResponseHead(big)).message).toBe(`response head: body of ${MAX_HEAD_BYTES + 1} bytes exceeds the limit of ${MAX_HEAD_BYTES}`);
    expect(new HeadDecodeError('TRUNCATED', 'm').name).toBe('HeadDecodeError');
  });
  it('a decoded head has exactly its header count of pairs', () => {
    const h = decodeRequestHead(encodeRequestHead({ ...req, headers: [['a', '1'], ['b', '2']] }).subarray(4));
    expect(h.headers).toEqual([['a', '1'], ['b', '2']]);
    expect(Object.keys(h.headers)).toEqual(['0', '1']);
  });
});
