// Request and response heads: the first bytes of every request stream.
//
// Binary rather than JSON because one of each is encoded and decoded per
// proxied request. Every head is framed as
//
//   u32 BE body length | body
//
// and the body is
//
//   request:  u8 version=1 | u8 type=1 | u8 kind | u8 scheme
//             | str16 method | str16 path | str16 host | str16 clientIp | str16 requestId
//             | u16 headerCount | headerCount × (str16 name | str16 value)
//   response: u8 version=1 | u8 type=2 | u16 status | str16 statusText
//             | u16 headerCount | headerCount × (str16 name | str16 value)
//
// where str16 is a u16 BE byte length followed by that many bytes. Every
// string is latin1: Node's HTTP/1 parser hands us header names, values and
// the request target as latin1 strings (one char per byte), so latin1 carries
// exactly the bytes the client sent, including 0x80-0xff, with no re-encoding.
// The encoding is canonical: a body that decodes re-encodes to the same bytes.

import {
  MAX_HEAD_BYTES,
  MAX_HEADERS,
  MAX_HEADER_NAME,
  MAX_HEADER_VALUE,
  MAX_PATH,
  MAX_SHORT_FIELD,
} from './limits.js';

export type RequestKind = 'http' | 'websocket' | 'tcp';
export type Scheme = 'http' | 'https';
/** Raw header pairs in arrival order, duplicates and case kept (`req.rawHeaders`, paired). */
export type HeaderPairs = Array<[string, string]>;

export interface RequestHead {
  kind: RequestKind;
  method: string;
  path: string;
  host: string;
  scheme: Scheme;
  clientIp: string;
  requestId: string;
  headers: HeaderPairs;
}

export interface ResponseHead {
  /** 100..999 */
  status: number;
  statusText: string;
  headers: HeaderPairs;
}

export const HEAD_VERSION = 1;
export const HEAD_TYPE_REQUEST = 1;
export const HEAD_TYPE_RESPONSE = 2;
/** Size of the u32 length prefix in front of every head body. */
export const HEAD_PREFIX_BYTES = 4;

export type HeadDecodeErrorCode =
  | 'TRUNCATED' // a length points past the end of the bytes we have
  | 'TOO_LARGE' // a length or count over the limits in limits.ts
  | 'BAD_VERSION'
  | 'BAD_TYPE' // a response head where a request head was expected, or vice versa
  | 'BAD_FIELD' // an enum or number outside its domain (kind, scheme, status)
  | 'TRAILING_BYTES';

export class HeadDecodeError extends Error {
  override readonly name = 'HeadDecodeError';
  readonly code: HeadDecodeErrorCode;
  constructor(code: HeadDecodeErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

// Wire codes start at 1 so that a zero-filled body is rejected, not read as 'http'.
const KINDS: readonly (RequestKind | undefined)[] = [undefined, 'http', 'websocket', 'tcp'];
const SCHEMES: readonly (Scheme | undefined)[] = [undefined, 'http', 'https'];

function kindCode(kind: RequestKind): number {
  switch (kind) {
    case 'http':
      return 1;
    case 'websocket':
      return 2;
    case 'tcp':
      return 3;
    default:
      throw new RangeError(`request head: unknown kind ${JSON.stringify(kind)}`);
  }
}

function schemeCode(scheme: Scheme): number {
  switch (scheme) {
    case 'http':
      return 1;
    case 'https':
      return 2;
    default:
      throw new RangeError(`request head: unknown scheme ${JSON.stringify(scheme)}`);
  }
}

// ---------------------------------------------------------------- encoding
//
// The body is built as one latin1 string (length prefixes as chars) and
// written with a single native call: one C++ crossing per head rather than one
// per field, measured ~10% faster than a per-field byte loop and ~2x faster
// than a native write per field.

const NON_LATIN1 = /[^\u0000-\u00ff]/;
const chr = String.fromCharCode;

/** A str16 field as latin1 chars, after checking it can be encoded at all. */
function str16(s: string, max: number, what: string, index = -1): string {
  if (typeof s !== 'string') {
    throw new TypeError(`${fieldName(what, index)}: expected a string, got ${typeof s}`);
  }
  const n = s.length;
  if (n > max) {
    throw new RangeError(`${fieldName(what, index)}: ${n} bytes exceeds the limit of ${max}`);
  }
  return chr(n >>> 8, n & 0xff) + s;
}

function headersStr(headers: HeaderPairs): string {
  if (!Array.isArray(headers)) throw new TypeError('headers: expected an array of [name, value] pairs');
  const count = headers.length;
  if (count > MAX_HEADERS) {
    throw new RangeError(`headers: ${count} pairs exceeds the limit of ${MAX_HEADERS}`);
  }
  let s = chr(count >>> 8, count & 0xff);
  for (let i = 0; i < count; i++) {
    const pair = headers[i];
    if (!Array.isArray(pair)) throw new TypeError(`headers[${i}]: expected a [name, value] pair`);
    s += str16(pair[0], MAX_HEADER_NAME, 'name', i);
    s += str16(pair[1], MAX_HEADER_VALUE, 'value', i);
  }
  return s;
}

/** Frames a body string; `fields` names the body's strings, only to say which one is at fault. */
function frame(body: string, what: string, fields: () => Array<[string, string]>): Buffer {
  const size = body.length;
  if (size > MAX_HEAD_BYTES) {
    throw new RangeError(`${what}: encoded size ${size} exceeds the limit of ${MAX_HEAD_BYTES}`);
  }
  // A latin1 write keeps only the low byte of a wider char, which would
  // silently turn e.g. U+010D U+010A into CR LF on the other side.
  if (NON_LATIN1.test(body)) {
    const bad = fields().find(([, v]) => NON_LATIN1.test(v));
    throw new RangeError(`${what}: ${bad?.[0] ?? 'a field'} contains a character above U+00FF, which latin1 cannot carry`);
  }
  // allocUnsafe serves small sizes from Node's shared pool: no zero-fill, no
  // per-head ArrayBuffer. Every byte is overwritten below.
  const buf = Buffer.allocUnsafe(HEAD_PREFIX_BYTES + size);
  buf.writeUInt32BE(size, 0);
  buf.write(body, HEAD_PREFIX_BYTES, size, 'latin1');
  return buf;
}

function headerFields(headers: HeaderPairs): Array<[string, string]> {
  return headers.flatMap(([n, v], i): Array<[string, string]> => [
    [`headers[${i}].name`, n],
    [`headers[${i}].value`, v],
  ]);
}

/** Encodes a request head, length prefix included, ready to write to the stream. */
export function encodeRequestHead(h: RequestHead): Buffer {
  const body =
    chr(HEAD_VERSION, HEAD_TYPE_REQUEST, kindCode(h.kind), schemeCode(h.scheme)) +
    str16(h.method, MAX_SHORT_FIELD, 'method') +
    str16(h.path, MAX_PATH, 'path') +
    str16(h.host, MAX_SHORT_FIELD, 'host') +
    str16(h.clientIp, MAX_SHORT_FIELD, 'clientIp') +
    str16(h.requestId, MAX_SHORT_FIELD, 'requestId') +
    headersStr(h.headers);
  return frame(body, 'request head', () => [
    ['method', h.method],
    ['path', h.path],
    ['host', h.host],
    ['clientIp', h.clientIp],
    ['requestId', h.requestId],
    ...headerFields(h.headers),
  ]);
}

/** Encodes a response head, length prefix included, ready to write to the stream. */
export function encodeResponseHead(h: ResponseHead): Buffer {
  const status = h.status;
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new RangeError(`response head: status ${String(status)} is not an integer in 100..999`);
  }
  const body =
    chr(HEAD_VERSION, HEAD_TYPE_RESPONSE, status >>> 8, status & 0xff) +
    str16(h.statusText, MAX_SHORT_FIELD, 'statusText') +
    headersStr(h.headers);
  return frame(body, 'response head', () => [['statusText', h.statusText], ...headerFields(h.headers)]);
}

// ---------------------------------------------------------------- decoding

function fieldName(field: string, index: number): string {
  return index < 0 ? field : `headers[${index}].${field}`;
}

/**
 * Bounds-checked reader over one head body. Strings are cut from a single
 * latin1 decode of the whole body: one native call per head instead of one
 * per field makes decoding about 4× faster.
 */
class Cursor {
  readonly buf: Buffer;
  readonly text: string;
  readonly end: number;
  off = 0;

  constructor(buf: Buffer, what: string) {
    if (buf.length > MAX_HEAD_BYTES) {
      throw new HeadDecodeError('TOO_LARGE', `${what}: body of ${buf.length} bytes exceeds the limit of ${MAX_HEAD_BYTES}`);
    }
    this.buf = buf;
    this.end = buf.length;
    this.text = buf.toString('latin1');
  }

  need(n: number, field: string, index: number): void {
    if (this.off + n > this.end) {
      throw new HeadDecodeError(
        'TRUNCATED',
        `${fieldName(field, index)}: needs ${n} bytes at offset ${this.off}, ${this.end - this.off} left`,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field, -1);
    return this.buf[this.off++]!;
  }

  u16(field: string, index = -1): number {
    this.need(2, field, index);
    const b = this.buf;
    const v = (b[this.off]! << 8) | b[this.off + 1]!;
    this.off += 2;
    return v;
  }

  str(field: string, max: number, index = -1): string {
    const at = this.off;
    const n = this.u16(field, index);
    if (n > max) {
      throw new HeadDecodeError('TOO_LARGE', `${fieldName(field, index)}: length ${n} at offset ${at} exceeds the limit of ${max}`);
    }
    this.need(n, field, index);
    const s = this.text.slice(this.off, this.off + n);
    this.off += n;
    return s;
  }

  preamble(type: number, what: string): void {
    const version = this.u8('version');
    if (version !== HEAD_VERSION) {
      throw new HeadDecodeError('BAD_VERSION', `${what}: version ${version} at offset 0, expected ${HEAD_VERSION}`);
    }
    const t = this.u8('type');
    if (t !== type) {
      throw new HeadDecodeError('BAD_TYPE', `${what}: type ${t} at offset 1, expected ${type}`);
    }
  }

  headers(): HeaderPairs {
    const at = this.off;
    const count = this.u16('headerCount');
    if (count > MAX_HEADERS) {
      throw new HeadDecodeError('TOO_LARGE', `headerCount: ${count} at offset ${at} exceeds the limit of ${MAX_HEADERS}`);
    }
    const headers: HeaderPairs = new Array(count);
    for (let i = 0; i < count; i++) {
      const name = this.str('name', MAX_HEADER_NAME, i);
      headers[i] = [name, this.str('value', MAX_HEADER_VALUE, i)];
    }
    return headers;
  }

  finish(what: string): void {
    if (this.off !== this.end) {
      throw new HeadDecodeError('TRAILING_BYTES', `${what}: ${this.end - this.off} unexpected bytes at offset ${this.off}`);
    }
  }
}

/** Decodes a request head body (the bytes after the u32 length prefix). Throws HeadDecodeError. */
export function decodeRequestHead(body: Buffer): RequestHead {
  const r = new Cursor(body, 'request head');
  r.preamble(HEAD_TYPE_REQUEST, 'request head');
  const kindAt = r.off;
  const kind = KINDS[r.u8('kind')];
  if (kind === undefined) {
    throw new HeadDecodeError('BAD_FIELD', `kind: unknown code ${body[kindAt]} at offset ${kindAt}`);
  }
  const schemeAt = r.off;
  const scheme = SCHEMES[r.u8('scheme')];
  if (scheme === undefined) {
    throw new HeadDecodeError('BAD_FIELD', `scheme: unknown code ${body[schemeAt]} at offset ${schemeAt}`);
  }
  const method = r.str('method', MAX_SHORT_FIELD);
  const path = r.str('path', MAX_PATH);
  const host = r.str('host', MAX_SHORT_FIELD);
  const clientIp = r.str('clientIp', MAX_SHORT_FIELD);
  const requestId = r.str('requestId', MAX_SHORT_FIELD);
  const headers = r.headers();
  r.finish('request head');
  return { kind, method, path, host, scheme, clientIp, requestId, headers };
}

/** Decodes a response head body (the bytes after the u32 length prefix). Throws HeadDecodeError. */
export function decodeResponseHead(body: Buffer): ResponseHead {
  const r = new Cursor(body, 'response head');
  r.preamble(HEAD_TYPE_RESPONSE, 'response head');
  const statusAt = r.off;
  const status = r.u16('status');
  if (status < 100 || status > 999) {
    throw new HeadDecodeError('BAD_FIELD', `status: ${status} at offset ${statusAt} is outside 100..999`);
  }
  const statusText = r.str('statusText', MAX_SHORT_FIELD);
  const headers = r.headers();
  r.finish('response head');
  return { status, statusText, headers };
}

// ---------------------------------------------------------------- incremental reading

const EMPTY = Buffer.alloc(0);

/**
 * Collects one length-prefixed head from a stream's chunks.
 *
 *   const reader = new HeadReader();
 *   stream.on('data', (chunk) => {
 *     const body = reader.push(chunk);       // null until the head is complete
 *     if (body) { decodeRequestHead(body); first body bytes = reader.rest(); }
 *   });
 *
 * When the whole head arrives in one chunk (the usual case) both the body and
 * rest() are views into that chunk: nothing is copied. Otherwise the head body
 * is assembled once, at exactly its announced size, and rest() is still a view
 * into the last chunk. The announced length is checked as soon as its four
 * bytes are in, so a hostile peer cannot make us buffer more than `maxBytes`.
 */
export class HeadReader {
  readonly #maxBytes: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #bodyLength = -1;
  #body: Buffer | null = null;
  #rest: Buffer = EMPTY;

  constructor(maxBytes: number = MAX_HEAD_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** True once push() has returned the head. */
  get done(): boolean {
    return this.#body !== null;
  }

  /** Bytes held so far (length prefix included) while the head is incomplete. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Feeds the next chunk; returns the head body once complete, else null. Throws HeadDecodeError. */
  push(chunk: Buffer): Buffer | null {
    if (this.#body !== null) throw new Error('HeadReader: the head is already complete; the caller owns the rest of the stream');
    if (this.#buffered === 0 && chunk.length >= HEAD_PREFIX_BYTES) {
      const len = this.#checkLength(chunk.readUInt32BE(0));
      if (chunk.length >= HEAD_PREFIX_BYTES + len) {
        return this.#complete(chunk.subarray(HEAD_PREFIX_BYTES, HEAD_PREFIX_BYTES + len), chunk.subarray(HEAD_PREFIX_BYTES + len));
      }
    }
    if (chunk.length === 0) return null;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.#bodyLength < 0) {
      if (this.#buffered < HEAD_PREFIX_BYTES) return null;
      this.#checkLength(this.#peekLength());
    }
    const total = HEAD_PREFIX_BYTES + this.#bodyLength;
    if (this.#buffered < total) return null;
    return this.#assemble(total);
  }

  /** Bytes that followed the head in the chunks pushed so far: the start of the body. */
  rest(): Buffer {
    return this.#rest;
  }

  #checkLength(len: number): number {
    if (len > this.#maxBytes) {
      throw new HeadDecodeError('TOO_LARGE', `head length prefix: ${len} at offset 0 exceeds the limit of ${this.#maxBytes}`);
    }
    this.#bodyLength = len;
    return len;
  }

  #peekLength(): number {
    let v = 0;
    let got = 0;
    for (const c of this.#chunks) {
      for (let i = 0; i < c.length && got < HEAD_PREFIX_BYTES; i++, got++) v = v * 256 + c[i]!;
      if (got === HEAD_PREFIX_BYTES) break;
    }
    return v;
  }

  // The last chunk pushed is the one that completed the head, so it alone can
  // hold bytes past the head: those stay a view, only the head is copied.
  #assemble(total: number): Buffer {
    const body = Buffer.allocUnsafe(this.#bodyLength);
    let pos = 0; // position in the framed stream
    let written = 0;
    for (const c of this.#chunks) {
      const from = Math.max(0, HEAD_PREFIX_BYTES - pos);
      const to = Math.min(c.length, total - pos);
      if (to > from) written += c.copy(body, written, from, to);
      pos += c.length;
    }
    const last = this.#chunks[this.#chunks.length - 1]!;
    const restStart = last.length - (this.#buffered - total);
    return this.#complete(body, last.subarray(restStart));
  }

  #complete(body: Buffer, rest: Buffer): Buffer {
    this.#chunks = [];
    this.#buffered = 0;
    this.#body = body;
    this.#rest = rest;
    return body;
  }
}
