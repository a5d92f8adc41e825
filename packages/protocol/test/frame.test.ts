// The 12-byte yamux header: encoded big-endian, decoded from any offset of a
// larger buffer (the session parses in place), and GoAway codes named for logs.
import { describe, expect, it } from 'vitest';
import { FrameType, GoAwayCode, decodeHeader, encodeHeader, goAwayName } from '../src/frame.js';

describe('frame header', () => {
  it('round-trips from an offset inside a larger buffer, every field big-endian', () => {
    const h = encodeHeader(FrameType.WindowUpdate, 0x0102, 0x0a0b0c0d, 0xfffffffe);
    expect([...h]).toEqual([0, 1, 0x01, 0x02, 0x0a, 0x0b, 0x0c, 0x0d, 0xff, 0xff, 0xff, 0xfe]);
    const buf = Buffer.concat([Buffer.from([9, 9, 9, 9, 9]), h, Buffer.from([7, 7, 7])]);
    expect(decodeHeader(buf, 5)).toEqual({ type: FrameType.WindowUpdate, flags: 0x0102, streamId: 0x0a0b0c0d, length: 0xfffffffe });
    const two = Buffer.concat([encodeHeader(FrameType.Data, 1, 3, 4), encodeHeader(FrameType.GoAway, 0, 0, 2)]);
    expect(decodeHeader(two, 12)).toEqual({ type: FrameType.GoAway, flags: 0, streamId: 0, length: 2 });
  });

  it('names GoAway codes, and says which unknown one it got', () => {
    expect(goAwayName(GoAwayCode.Normal)).toBe('normal');
    expect(goAwayName(GoAwayCode.ProtocolError)).toBe('protocol error');
    expect(goAwayName(GoAwayCode.InternalError)).toBe('internal error');
    expect(goAwayName(7)).toBe('unknown (7)');
  });
});
