// yamux frame header, hashicorp/yamux spec.md version 0:
//   version u8 | type u8 | flags u16 | stream id u32 | length u32   (big-endian)
// For Data frames `length` is the payload size; for WindowUpdate it is the
// window delta, for Ping the opaque value, for GoAway the error code.

export const YAMUX_VERSION = 0;
export const HEADER_SIZE = 12;

export const FrameType = {
  Data: 0,
  WindowUpdate: 1,
  Ping: 2,
  GoAway: 3,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const Flag = {
  SYN: 1,
  ACK: 2,
  FIN: 4,
  RST: 8,
} as const;

export const GoAwayCode = {
  Normal: 0,
  ProtocolError: 1,
  InternalError: 2,
} as const;
export type GoAwayCode = (typeof GoAwayCode)[keyof typeof GoAwayCode];

/** The spec's initial per-stream window; both sides assume it until told otherwise. */
export const INITIAL_WINDOW = 256 * 1024;

export interface FrameHeader {
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

export function encodeHeader(type: FrameType, flags: number, streamId: number, length: number): Buffer {
  // allocUnsafe for small sizes slices Node's shared pool: no syscall, no zeroing.
  const b = Buffer.allocUnsafe(HEADER_SIZE);
  b[0] = YAMUX_VERSION;
  b[1] = type;
  b.writeUInt16BE(flags, 2);
  b.writeUInt32BE(streamId >>> 0, 4);
  b.writeUInt32BE(length >>> 0, 8);
  return b;
}

export function decodeHeader(b: Buffer, off: number): FrameHeader {
  return {
    type: b[off + 1]!,
    flags: b.readUInt16BE(off + 2),
    streamId: b.readUInt32BE(off + 4),
    length: b.readUInt32BE(off + 8),
  };
}

export function goAwayName(code: number): string {
  switch (code) {
    case GoAwayCode.Normal:
      return 'normal';
    case GoAwayCode.ProtocolError:
      return 'protocol error';
    case GoAwayCode.InternalError:
      return 'internal error';
    default:
      return `unknown (${code})`;
  }
}
