import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  ControlDecodeError,
  ControlDecoder,
  decodeControl,
  encodeControl,
  type ControlDecodeErrorCode,
  type ControlMessage,
} from '../src/control.js';
import { MAX_CONN_INDEX, MAX_CONTROL_BYTES, MAX_CONTROL_FEATURES, MAX_CONTROL_STRING } from '../src/limits.js';

const samples: ControlMessage[] = [
  { type: 'register', connectorId: 'c0nn-1', connIndex: 0, version: '0.1.0', features: ['drain', 'ws'] },
  { type: 'register', connectorId: '', connIndex: MAX_CONN_INDEX, version: 'ü-ñ 🚀', features: [] },
  { type: 'registered', relayId: 'relay-a', region: 'eu-west', connectionId: 'x9' },
  { type: 'drain' },
  { type: 'error', code: 'REVOKED', message: 'credential revoked' },
];

/** Frames any JSON text by hand, bypassing encodeControl's validation. */
function frame(json: string | Buffer): Buffer {
  const body = typeof json === 'string' ? Buffer.from(json, 'utf8') : json;
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(body.length);
  return Buffer.concat([prefix, body]);
}

function expectCode(fn: () => unknown, code: ControlDecodeErrorCode): ControlDecodeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ControlDecodeError);
    expect((err as ControlDecodeError).code).toBe(code);
    return err as ControlDecodeError;
  }
  throw new Error(`expected ControlDecodeError ${code}, nothing was thrown`);
}

const decodeOne = (value: unknown): ControlMessage => decodeControl(Buffer.from(JSON.stringify(value), 'utf8'));

describe('control round trip', () => {
  it('every message type survives encode → ControlDecoder', () => {
    for (const m of samples) {
      const framed = encodeControl(m);
      expect(framed.readUInt32BE(0)).toBe(framed.length - 4);
      expect(JSON.parse(framed.subarray(4).toString('utf8'))).toEqual(m);
      expect(new ControlDecoder().push(framed)).toEqual([m]);
    }
  });

  it('many messages in one chunk, in order', () => {
    const all = Buffer.concat(samples.map(encodeControl));
    expect(new ControlDecoder().push(all)).toEqual(samples);
  });

  it('messages split at every byte position, and fed one byte at a time', () => {
    const all = Buffer.concat(samples.map(encodeControl));
    for (let cut = 0; cut <= all.length; cut++) {
      const d = new ControlDecoder();
      expect([...d.push(all.subarray(0, cut)), ...d.push(all.subarray(cut))]).toEqual(samples);
      expect(d.bufferedBytes).toBe(0);
    }
    const d = new ControlDecoder();
    const out: ControlMessage[] = [];
    for (let i = 0; i < all.length; i++) out.push(...d.push(all.subarray(i, i + 1)));
    expect(out).toEqual(samples);
  });

  it('reports a partial message through bufferedBytes', () => {
    const d = new ControlDecoder();
    const framed = encodeControl({ type: 'drain' });
    expect(d.push(framed.subarray(0, 6))).toEqual([]);
    expect(d.bufferedBytes).toBe(6);
  });

  it('drops unknown fields and copies arrays', () => {
    const input = { type: 'register', connectorId: 'a', connIndex: 1, version: 'v', features: ['x'], extra: { deep: true } };
    const m = decodeOne(input);
    expect(m).toEqual({ type: 'register', connectorId: 'a', connIndex: 1, version: 'v', features: ['x'] });
    expect(Object.keys(m)).not.toContain('extra');
    expect(decodeOne({ type: 'drain', reason: 'later versions may add this' })).toEqual({ type: 'drain' });
  });

  it('accepts the limits exactly', () => {
    const m: ControlMessage = {
      type: 'register',
      connectorId: 'c'.repeat(MAX_CONTROL_STRING),
      connIndex: MAX_CONN_INDEX,
      version: 'v',
      features: Array.from({ length: MAX_CONTROL_FEATURES }, (_, i) => `${i}`.padEnd(MAX_CONTROL_STRING, 'f')),
    };
    expect(new ControlDecoder().push(encodeControl(m))).toEqual([m]);
  });
});

describe('control decode errors', () => {
  it('TOO_LARGE on the length prefix, before buffering the body', () => {
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(MAX_CONTROL_BYTES + 1);
    expectCode(() => new ControlDecoder().push(prefix), 'TOO_LARGE');
    expectCode(() => decodeControl(Buffer.alloc(MAX_CONTROL_BYTES + 1, 0x20)), 'TOO_LARGE');
    const d = new ControlDecoder();
    expect(d.push(prefix.subarray(0, 2))).toEqual([]);
    expectCode(() => d.push(prefix.subarray(2)), 'TOO_LARGE');
  });

  it('BAD_JSON for invalid JSON, invalid UTF-8, empty bodies and non-objects', () => {
    const d = () => new ControlDecoder();
    expectCode(() => d().push(frame('{"type":')), 'BAD_JSON');
    expectCode(() => d().push(frame('')), 'BAD_JSON');
    expectCode(() => d().push(frame(Buffer.from([0x7b, 0xff, 0x7d]))), 'BAD_JSON');
    // Overlong UTF-8 for '"' would be a lenient decoder's U+FFFD, not a quote.
    expectCode(() => d().push(frame(Buffer.from([0x22, 0xc0, 0xa2, 0x22]))), 'BAD_JSON');
    expectCode(() => d().push(frame(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"type":"drain"}')]))), 'BAD_JSON');
    for (const v of ['null', '[]', '[{"type":"drain"}]', '42', '"drain"', 'true']) {
      expectCode(() => d().push(frame(v)), 'BAD_JSON');
    }
  });

  it('UNKNOWN_TYPE for missing, unknown, non-string and prototype-key types', () => {
    for (const type of [undefined, 'nope', 'Drain', 42, null, ['drain'], '__proto__', 'toString', 'constructor', 'hasOwnProperty']) {
      expectCode(() => decodeOne({ type }), 'UNKNOWN_TYPE');
    }
    expectCode(() => decodeControl(Buffer.from('{"__proto__":{"type":"drain"}}')), 'UNKNOWN_TYPE');
  });

  it('BAD_FIELD for missing fields, wrong types and out-of-range values', () => {
    const reg = { type: 'register', connectorId: 'a', connIndex: 1, version: 'v', features: [] };
    const bad: Array<Record<string, unknown>> = [
      { ...reg, connectorId: undefined },
      { ...reg, connectorId: 7 },
      { ...reg, connectorId: 'c'.repeat(MAX_CONTROL_STRING + 1) },
      { ...reg, connIndex: -1 },
      { ...reg, connIndex: MAX_CONN_INDEX + 1 },
      { ...reg, connIndex: 1.5 },
      { ...reg, connIndex: '1' },
      { ...reg, connIndex: null },
      { ...reg, connIndex: 1e300 },
      { ...reg, version: ['v'] },
      { ...reg, features: 'drain' },
      { ...reg, features: [1] },
      { ...reg, features: ['ok', null] },
      { ...reg, features: ['f'.repeat(MAX_CONTROL_STRING + 1)] },
      { ...reg, features: Array.from({ length: MAX_CONTROL_FEATURES + 1 }, () => 'f') },
      { type: 'registered', relayId: 'r', region: 'eu' },
      { type: 'registered', relayId: 'r', region: {}, connectionId: 'c' },
      { type: 'error', code: 'X' },
      { type: 'error', code: 'X', message: 'm'.repeat(MAX_CONTROL_STRING + 1) },
    ];
    for (const m of bad) {
      const err = expectCode(() => new ControlDecoder().push(frame(JSON.stringify(m))), 'BAD_FIELD');
      expect(err.message).toMatch(/field \w+/);
    }
  });

  it('keeps error messages short enough to echo back in an error message', () => {
    const long = `{"type":"drain","x":"${'a'.repeat(5000)}"`;
    for (const body of [long, `[${'1,'.repeat(3000)}x]`, JSON.stringify({ type: 'q'.repeat(5000) })]) {
      const err = expectCode(() => new ControlDecoder().push(frame(body)), body.startsWith('{"type":"q') ? 'UNKNOWN_TYPE' : 'BAD_JSON');
      expect(() => encodeControl({ type: 'error', code: err.code, message: err.message })).not.toThrow();
    }
  });

  it('stays failed after an error', () => {
    const d = new ControlDecoder();
    const err = expectCode(() => d.push(frame('{')), 'BAD_JSON');
    expect(() => d.push(encodeControl({ type: 'drain' }))).toThrow(err);
  });
});

describe('encodeControl validates', () => {
  it('throws RangeError for anything the decoder would refuse', () => {
    const reg = { type: 'register' as const, connectorId: 'a', connIndex: 1, version: 'v', features: [] };
    const bad: unknown[] = [
      { ...reg, connIndex: 64 },
      { ...reg, connIndex: 0.5 },
      { ...reg, connectorId: 'x'.repeat(MAX_CONTROL_STRING + 1) },
      { ...reg, features: [3] },
      { type: 'bogus' },
      { type: 'error', code: 'X' },
      null,
    ];
    for (const m of bad) expect(() => encodeControl(m as ControlMessage)).toThrow(RangeError);
  });

  it('sends only the known fields', () => {
    const m = { type: 'drain', secret: 'do not leak' } as unknown as ControlMessage;
    expect(encodeControl(m).subarray(4).toString()).toBe('{"type":"drain"}');
  });
});

// Property tests over arbitrary valid messages.
const ctlString = fc.string({ maxLength: MAX_CONTROL_STRING, unit: 'binary' }).filter((s) => s.length <= MAX_CONTROL_STRING);
const message: fc.Arbitrary<ControlMessage> = fc.oneof(
  fc.record({
    type: fc.constant('register' as const),
    connectorId: ctlString,
    connIndex: fc.integer({ min: 0, max: MAX_CONN_INDEX }),
    version: ctlString,
    features: fc.array(ctlString, { maxLength: 8 }),
  }),
  fc.record({ type: fc.constant('registered' as const), relayId: ctlString, region: ctlString, connectionId: ctlString }),
  fc.constant({ type: 'drain' as const }),
  fc.record({ type: fc.constant('error' as const), code: ctlString, message: ctlString }),
);

describe('control properties', () => {
  it('any sequence of messages cut anywhere decodes to the same sequence', () => {
    const input = fc.array(message, { minLength: 1, maxLength: 6 }).chain((msgs) => {
      const bytes = Buffer.concat(msgs.map(encodeControl));
      const points = fc.uniqueArray(fc.integer({ min: 0, max: bytes.length }), { maxLength: 40 }).map((a) => a.sort((x, y) => x - y));
      return fc.record({ msgs: fc.constant(msgs), bytes: fc.constant(bytes), points: fc.oneof(points, fc.constant(Array.from({ length: bytes.length }, (_, i) => i))) });
    });
    fc.assert(
      fc.property(input, ({ msgs, bytes, points }) => {
        const d = new ControlDecoder();
        const out: ControlMessage[] = [];
        const bounds = [0, ...points, bytes.length];
        for (let i = 0; i + 1 < bounds.length; i++) out.push(...d.push(bytes.subarray(bounds[i]!, bounds[i + 1]!)));
        expect(out).toEqual(msgs);
        expect(d.bufferedBytes).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
