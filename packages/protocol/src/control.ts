// Control-stream messages: the first stream of every connector session,
// opened by the connector. Each message is framed as
//
//   u32 BE body length | UTF-8 JSON body
//
// JSON because these are a handful per connection and easy to read in a
// packet dump; strictly validated because the peer is untrusted.
//
// To add a message: add it to ControlMessage and give it a FIELDS entry.
// Unknown *fields* are dropped on decode (so a newer peer may add optional
// fields without breaking an older one); unknown *types* are refused.

import {
  MAX_CONN_INDEX,
  MAX_CONTROL_BYTES,
  MAX_CONTROL_FEATURES,
  MAX_CONTROL_STRING,
} from './limits.js';

export type ControlMessage =
  | { type: 'register'; connectorId: string; connIndex: number; version: string; features: string[] }
  | { type: 'registered'; relayId: string; region: string; connectionId: string }
  /** The connector is shutting down: open no new streams on this connection. */
  | { type: 'drain' }
  | { type: 'error'; code: string; message: string };

export type ControlType = ControlMessage['type'];

const PREFIX_BYTES = 4;

type FieldKind = 'string' | 'connIndex' | 'features';

// The one table validation runs from; the `satisfies` ties its keys to the
// union above, so a message added there without a schema here fails to compile.
const FIELDS = {
  register: { connectorId: 'string', connIndex: 'connIndex', version: 'string', features: 'features' },
  registered: { relayId: 'string', region: 'string', connectionId: 'string' },
  drain: {},
  error: { code: 'string', message: 'string' },
} as const satisfies { [T in ControlType]: { [K in Exclude<keyof Extract<ControlMessage, { type: T }>, 'type'>]-?: FieldKind } };

export type ControlDecodeErrorCode =
  | 'TOO_LARGE' // length prefix over MAX_CONTROL_BYTES
  | 'BAD_JSON' // not UTF-8, not JSON, or not a JSON object
  | 'UNKNOWN_TYPE'
  | 'BAD_FIELD'; // missing field, wrong type, or out of range

export class ControlDecodeError extends Error {
  override readonly name = 'ControlDecodeError';
  readonly code: ControlDecodeErrorCode;
  constructor(code: ControlDecodeErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

function hasOwn(o: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

/** Returns null when valid, else why not. */
function checkField(kind: FieldKind, v: unknown): string | null {
  switch (kind) {
    case 'string':
      if (typeof v !== 'string') return `expected a string, got ${describe(v)}`;
      if (v.length > MAX_CONTROL_STRING) return `string of ${v.length} chars exceeds the limit of ${MAX_CONTROL_STRING}`;
      return null;
    case 'connIndex':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_CONN_INDEX) {
        return `expected an integer in 0..${MAX_CONN_INDEX}, got ${describe(v)}`;
      }
      return null;
    case 'features': {
      if (!Array.isArray(v)) return `expected an array of strings, got ${describe(v)}`;
      if (v.length > MAX_CONTROL_FEATURES) return `${v.length} entries exceeds the limit of ${MAX_CONTROL_FEATURES}`;
      for (let i = 0; i < v.length; i++) {
        const why = checkField('string', v[i]);
        if (why !== null) return `[${i}]: ${why}`;
      }
      return null;
    }
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return String(v);
  return typeof v;
}

/**
 * Validates an untrusted value as a ControlMessage and returns a fresh object
 * holding only the known fields. `fail` builds the error to throw.
 */
function validate<E extends Error>(value: unknown, fail: (code: ControlDecodeErrorCode, message: string) => E): ControlMessage {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw fail('BAD_JSON', `control message: expected a JSON object, got ${describe(value)}`);
  }
  const obj = value as Record<string, unknown>;
  const type = obj['type'];
  if (typeof type !== 'string' || !hasOwn(FIELDS, type)) {
    const shown = typeof type === 'string' ? JSON.stringify(type.slice(0, 64)) : describe(type);
    throw fail('UNKNOWN_TYPE', `control message: unknown type ${shown}`);
  }
  const fields: Record<string, FieldKind> = FIELDS[type as ControlType];
  const out: Record<string, unknown> = { type };
  for (const key of Object.keys(fields)) {
    const v = hasOwn(obj, key) ? obj[key] : undefined;
    const why = checkField(fields[key]!, v);
    if (why !== null) throw fail('BAD_FIELD', `control message '${type}': field ${key}: ${why}`);
    // Copy arrays so the caller never shares structure with parsed input.
    out[key] = Array.isArray(v) ? v.slice() : v;
  }
  return out as ControlMessage;
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decodes one control message body (the bytes after the length prefix). Throws ControlDecodeError. */
export function decodeControl(body: Buffer): ControlMessage {
  if (body.length > MAX_CONTROL_BYTES) {
    throw new ControlDecodeError('TOO_LARGE', `control message: ${body.length} bytes exceeds the limit of ${MAX_CONTROL_BYTES}`);
  }
  let parsed: unknown;
  try {
    // fatal: a lenient decode would turn invalid UTF-8 into U+FFFD and accept it;
    // ignoreBOM keeps a BOM in the text, where JSON.parse refuses it.
    parsed = JSON.parse(fatalUtf8.decode(body));
  } catch (err) {
    // Capped: peers echo decode errors back in an `error` message, whose strings are limited.
    const why = err instanceof Error ? err.message.slice(0, 160) : 'undecodable';
    throw new ControlDecodeError('BAD_JSON', `control message: ${why}`);
  }
  return validate(parsed, (code, message) => new ControlDecodeError(code, message));
}

/**
 * Encodes a control message, length prefix included. Validates first, with
 * the decoder's rules, so we never send what the peer must refuse: invalid
 * messages throw RangeError. Only the known fields are sent.
 */
export function encodeControl(m: ControlMessage): Buffer {
  const clean = validate(m, (_code, message) => new RangeError(message));
  const json = JSON.stringify(clean);
  const size = Buffer.byteLength(json, 'utf8');
  if (size > MAX_CONTROL_BYTES) {
    throw new RangeError(`control message: ${size} bytes exceeds the limit of ${MAX_CONTROL_BYTES}`);
  }
  const buf = Buffer.allocUnsafe(PREFIX_BYTES + size);
  buf.writeUInt32BE(size, 0);
  buf.write(json, PREFIX_BYTES, size, 'utf8');
  return buf;
}

/**
 * Splits the control stream back into messages: push each chunk as it
 * arrives, get back every message it completed (none, one or many). A
 * message's bytes are gathered once, when it is complete, so a peer dribbling
 * one byte at a time costs linear work, and the announced length is checked
 * before anything is buffered. After a throw the stream is unusable: every
 * later push throws the same error.
 */
export class ControlDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #failed: ControlDecodeError | null = null;

  /** Bytes of an incomplete message held; non-zero at end of stream means it was cut short. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  push(chunk: Buffer): ControlMessage[] {
    if (this.#failed !== null) throw this.#failed;
    try {
      return this.#push(chunk);
    } catch (err) {
      if (err instanceof ControlDecodeError) this.#failed = err;
      throw err;
    }
  }

  #push(chunk: Buffer): ControlMessage[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const out: ControlMessage[] = [];
    while (this.#buffered >= PREFIX_BYTES) {
      const len = this.#take(PREFIX_BYTES, true).readUInt32BE(0);
      if (len > MAX_CONTROL_BYTES) {
        throw new ControlDecodeError('TOO_LARGE', `control message: length prefix ${len} exceeds the limit of ${MAX_CONTROL_BYTES}`);
      }
      if (this.#buffered < PREFIX_BYTES + len) break;
      this.#take(PREFIX_BYTES, false);
      out.push(decodeControl(this.#take(len, false)));
    }
    return out;
  }

  /** The next `n` buffered bytes (n <= buffered), consumed unless `peek`. Zero-copy when they sit in one chunk. */
  #take(n: number, peek: boolean): Buffer {
    const first = this.#chunks[0];
    let out: Buffer;
    if (first !== undefined && first.length >= n) {
      out = first.subarray(0, n);
      if (!peek) {
        if (first.length === n) this.#chunks.shift();
        else this.#chunks[0] = first.subarray(n);
      }
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      let i = 0;
      while (got < n) {
        const c = this.#chunks[i]!;
        const k = Math.min(c.length, n - got);
        c.copy(out, got, 0, k);
        got += k;
        if (!peek) {
          if (k === c.length) {
            i++;
          } else {
            this.#chunks[i] = c.subarray(k);
          }
        } else {
          i++;
        }
      }
      if (!peek) this.#chunks.splice(0, i);
    }
    if (!peek) this.#buffered -= n;
    return out;
  }
}
