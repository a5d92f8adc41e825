// What a refused control message says. The relay and the connector log these
// and echo them back to the peer in an `error` message, so the words are part
// of the contract: each names the field, the rule and what was sent. Also the
// size limit at its exact edge, on both sides (the mutation run found these
// unguarded: docs/mutation.md).

import { describe, expect, it } from 'vitest';
import { ControlDecodeError, ControlDecoder, decodeControl, encodeControl, type ControlMessage } from '../src/control.js';
import { MAX_CONN_INDEX, MAX_CONTROL_BYTES, MAX_CONTROL_FEATURES, MAX_CONTROL_STRING } from '../src/limits.js';

const refusal = (value: unknown): ControlDecodeError => {
  try {
    decodeControl(Buffer.from(typeof value === 'string' ? value : JSON.stringify(value), 'utf8'));
  } catch (err) {
    expect(err).toBeInstanceOf(ControlDecodeError);
    return err as ControlDecodeError;
  }
  throw new Error(`accepted: ${String(value).slice(0, 80)}`);
};

const reg = { type: 'register', connectorId: 'a', connIndex: 1, version: 'v', features: [] as unknown[] };

/** A register message whose JSON is exactly `bytes` long (control characters are 6 bytes each in JSON). */
function registerOfSize(bytes: number): ControlMessage {
  const m = { type: 'register' as const, connectorId: '', connIndex: 0, version: '', features: [] as string[] };
  const size = () => Buffer.byteLength(JSON.stringify(m), 'utf8');
  const full = '\u0001'.repeat(MAX_CONTROL_STRING);
  // Whole features until what is left fits in one (at most 251 wide characters and 5 narrow).
  while (bytes - size() > 6 * (MAX_CONTROL_STRING - 5) && m.features.length < MAX_CONTROL_FEATURES - 1) m.features.push(full);
  m.features.push('');
  const rest = bytes - size();
  const wide = Math.floor(rest / 6);
  m.features[m.features.length - 1] = '\u0001'.repeat(wide) + 'a'.repeat(rest - 6 * wide);
  expect(size()).toBe(bytes);
  return m;
}

describe('control refusals name the field, the rule and the value', () => {
  it('is a ControlDecodeError by name', () => {
    expect(refusal('null').name).toBe('ControlDecodeError');
  });

  it('field errors: strings, the connection index, the feature list', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ ...reg, connectorId: 7 }, "control message 'register': field connectorId: expected a string, got 7"],
      [{ ...reg, version: true }, "control message 'register': field version: expected a string, got boolean"],
      [{ ...reg, connectorId: 'c'.repeat(MAX_CONTROL_STRING + 1) }, `control message 'register': field connectorId: string of ${MAX_CONTROL_STRING + 1} chars exceeds the limit of ${MAX_CONTROL_STRING}`],
      [{ ...reg, connIndex: null }, `control message 'register': field connIndex: expected an integer in 0..${MAX_CONN_INDEX}, got null`],
      [{ ...reg, connIndex: [1] }, `control message 'register': field connIndex: expected an integer in 0..${MAX_CONN_INDEX}, got array`],
      [{ ...reg, connIndex: '1' }, `control message 'register': field connIndex: expected an integer in 0..${MAX_CONN_INDEX}, got string`],
      [{ ...reg, connIndex: 1.5 }, `control message 'register': field connIndex: expected an integer in 0..${MAX_CONN_INDEX}, got 1.5`],
      [{ ...reg, features: 'drain' }, "control message 'register': field features: expected an array of strings, got string"],
      [{ ...reg, features: Array.from({ length: MAX_CONTROL_FEATURES + 1 }, () => 'f') }, `control message 'register': field features: ${MAX_CONTROL_FEATURES + 1} entries exceeds the limit of ${MAX_CONTROL_FEATURES}`],
      [{ ...reg, features: ['ok', null] }, "control message 'register': field features: [1]: expected a string, got null"],
      [{ type: 'registered', relayId: 'r', region: 'eu' }, "control message 'registered': field connectionId: expected a string, got undefined"],
    ];
    for (const [m, words] of cases) {
      const err = refusal(m);
      expect(err.code).toBe('BAD_FIELD');
      expect(err.message).toBe(words);
    }
  });

  it('not an object, an unknown type', () => {
    for (const [body, got] of [['null', 'null'], ['[]', 'array'], ['42', '42'], ['"drain"', 'string'], ['true', 'boolean']] as const) {
      const err = refusal(body);
      expect(err.code).toBe('BAD_JSON');
      expect(err.message).toBe(`control message: expected a JSON object, got ${got}`);
    }
    for (const [m, shown] of [[{ type: 'nope' }, '"nope"'], [{ type: 42 }, '42'], [{}, 'undefined'], [{ type: null }, 'null'], [{ type: ['drain'] }, 'array']] as const) {
      const err = refusal(m);
      expect(err.code).toBe('UNKNOWN_TYPE');
      expect(err.message).toBe(`control message: unknown type ${shown}`);
    }
  });

  it('bytes that are not JSON or not UTF-8 say what the parser said', () => {
    const cut = refusal('{"type":');
    expect(cut.code).toBe('BAD_JSON');
    expect(cut.message).toMatch(/^control message: .*JSON/);
    expect(cut.message).not.toMatch(/expected a JSON object/);
    const bytes = (() => {
      try {
        decodeControl(Buffer.from([0x7b, 0xff, 0x7d]));
      } catch (err) {
        return err as ControlDecodeError;
      }
      throw new Error('accepted invalid UTF-8');
    })();
    expect(bytes.code).toBe('BAD_JSON');
    expect(bytes.message).toMatch(/^control message: .*(utf-8|encoded data)/i);
  });
});

describe('the size limit at its edge', () => {
  it(`a message of exactly ${MAX_CONTROL_BYTES} bytes is sent and taken; one byte more is refused on both sides`, () => {
    const edge = registerOfSize(MAX_CONTROL_BYTES);
    const framed = encodeControl(edge);
    expect(framed.length).toBe(4 + MAX_CONTROL_BYTES);
    expect(decodeControl(framed.subarray(4))).toEqual(edge);
    expect(new ControlDecoder().push(framed)).toEqual([edge]);

    const over = registerOfSize(MAX_CONTROL_BYTES + 1);
    expect(() => encodeControl(over)).toThrow(new RangeError(`control message: ${MAX_CONTROL_BYTES + 1} bytes exceeds the limit of ${MAX_CONTROL_BYTES}`));
    const body = Buffer.from(JSON.stringify(over), 'utf8');
    const err = refusal(body.toString('utf8'));
    expect(err.code).toBe('TOO_LARGE');
    expect(err.message).toBe(`control message: ${MAX_CONTROL_BYTES + 1} bytes exceeds the limit of ${MAX_CONTROL_BYTES}`);
  });
});
