// Helpers for the data-path e2e tests (http-*.test.ts, memory.test.ts): a raw
// HTTP/1.1 client over a net socket (byte-exact request targets and header
// lines), streamed pseudo-random bodies with SHA-256 on the fly, and process
// RSS from /proc.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export interface RawResponse {
  /** Everything the server sent, as latin1 (one char per byte). */
  raw: string;
  status: number;
  statusLine: string;
  /** Header lines as [name, value], in order, case as sent. */
  headers: Array<[string, string]>;
  /** The bytes after the head, undecoded (chunked framing left in). */
  body: string;
  header(name: string): string | undefined;
}

export function parseRawResponse(raw: string): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) throw new Error(`no complete response head in ${JSON.stringify(raw.slice(0, 200))}`);
  const lines = raw.slice(0, end).split('\r\n');
  const statusLine = lines.shift()!;
  const headers = lines.map((l): [string, string] => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  return {
    raw,
    status: Number(statusLine.split(' ')[1]),
    statusLine,
    headers,
    body: raw.slice(end + 4),
    header: (n) => headers.find(([k]) => k.toLowerCase() === n.toLowerCase())?.[1],
  };
}

/**
 * Send `request` (exact bytes, latin1) to 127.0.0.1:port and read until the
 * server closes the connection (send `Connection: close`) or `timeoutMs`.
 */
export function rawHttp(port: number, request: string | Buffer, timeoutMs = 15_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`raw request timed out; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1').slice(0, 300))}`));
    }, timeoutMs);
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      try {
        resolve(parseRawResponse(Buffer.concat(chunks).toString('latin1')));
      } catch (e) {
        reject(e);
      }
    });
    sock.write(typeof request === 'string' ? Buffer.from(request, 'latin1') : request);
  });
}

/** Decode a complete chunked body; throws if the terminating chunk is missing. */
export function dechunk(body: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', i);
    if (eol === -1) throw new Error('chunked body: truncated before the last chunk');
    const size = parseInt(body.slice(i, eol).split(';')[0]!, 16);
    if (Number.isNaN(size)) throw new Error(`chunked body: bad chunk size at ${i}`);
    if (size === 0) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    if (body.length < eol + 2 + size + 2) throw new Error('chunked body: truncated chunk');
    i = eol + 2 + size + 2;
  }
}

/**
 * `total` bytes of deterministic pseudo-random data, generated chunk by chunk
 * (never held whole). `sha256()` is the digest of what was produced so far.
 */
export class PatternSource extends Readable {
  private produced = 0;
  private readonly hash = createHash('sha256');
  private seed: number;
  private readonly block: Buffer;

  constructor(
    readonly total: number,
    seed = 1,
    private readonly chunkSize = 256 * 1024,
  ) {
    super({ highWaterMark: chunkSize });
    this.seed = seed >>> 0 || 1;
    // One random block, varied per chunk (its first 16 bytes), so repeated
    // chunks are distinct and a duplicated or dropped chunk changes the digest.
    this.block = Buffer.allocUnsafe(chunkSize);
    for (let i = 0; i < chunkSize; i += 4) this.block.writeUInt32LE(this.next(), i);
  }

  private next(): number {
    // xorshift32
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed;
  }

  override _read(): void {
    const n = Math.min(this.chunkSize, this.total - this.produced);
    if (n <= 0) {
      this.push(null);
      return;
    }
    const chunk = Buffer.from(this.block.subarray(0, n));
    chunk.writeUInt32LE(this.produced / this.chunkSize, 0);
    for (let i = 4; i < Math.min(16, n); i += 4) chunk.writeUInt32LE(this.next(), i);
    this.produced += n;
    this.hash.update(chunk);
    this.push(chunk);
  }

  get producedBytes(): number {
    return this.produced;
  }

  sha256(): string {
    return this.hash.copy().digest('hex');
  }
}

/** Consume a readable, returning its byte count and SHA-256. */
export async function hashReadable(src: Readable | AsyncIterable<Buffer>): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  await pipeline(
    src,
    new Writable({
      highWaterMark: 256 * 1024,
      write(chunk: Buffer, _e, cb) {
        bytes += chunk.length;
        h.update(chunk);
        cb();
      },
    }),
  );
  return { bytes, sha256: h.digest('hex') };
}

/** Resident set size of a process, in bytes (VmRSS from /proc/PID/status). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Samples the RSS of some processes every `everyMs` and keeps the peak of each. */
export function rssSampler(pids: Record<string, number>, everyMs = 100): { peak: Record<string, number>; sample(): void; stop(): Record<string, number> } {
  const peak: Record<string, number> = {};
  const sample = () => {
    for (const [name, pid] of Object.entries(pids)) {
      try {
        peak[name] = Math.max(peak[name] ?? 0, rssBytes(pid));
      } catch {
        /* process gone */
      }
    }
  };
  sample();
  const t = setInterval(sample, everyMs);
  return {
    peak,
    sample,
    stop() {
      clearInterval(t);
      sample();
      return peak;
    },
  };
}

export const fmtMiB = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

/** Merge `entry` under `key` into test-artifacts/FILE (a JSON object; created if missing). */
export function writeArtifact(file: string, key: string, entry: unknown): string {
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-artifacts');
  mkdirSync(dir, { recursive: true });
  const p = path.join(dir, file);
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
  } catch {
    /* first entry */
  }
  all[key] = entry;
  writeFileSync(p, JSON.stringify(all, null, 2) + '\n');
  return p;
}

export interface NodeReply {
  status: number;
  statusMessage: string;
  rawHeaders: string[];
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** A `100 Continue` arrived before the final response. */
  sawContinue: boolean;
}

/**
 * One request with node:http to 127.0.0.1:port, a chosen Host and raw header
 * order (`headers` as a flat [name, value, ...] array is sent as is). With
 * `expectContinue`, the body is sent only after the server's 100 Continue.
 */
export function nodeRequest(o: {
  port: number;
  method?: string;
  path?: string;
  host?: string;
  headers?: http.OutgoingHttpHeaders | string[];
  body?: Buffer | string | Readable | null;
  expectContinue?: boolean;
  timeoutMs?: number;
}): Promise<NodeReply> {
  return new Promise((resolve, reject) => {
    let headers: http.OutgoingHttpHeaders | string[] = o.headers ?? {};
    if (!Array.isArray(headers)) headers = { host: o.host ?? 'app.test', ...headers, ...(o.expectContinue ? { expect: '100-continue' } : {}) };
    const req = http.request({ host: '127.0.0.1', port: o.port, method: o.method ?? 'GET', path: o.path ?? '/', headers, agent: false, setHost: false });
    let sawContinue = false;
    const timer = setTimeout(() => req.destroy(new Error(`request timed out after ${o.timeoutMs ?? 30_000} ms`)), o.timeoutMs ?? 30_000);
    const sendBody = () => {
      const b = o.body;
      if (b === undefined || b === null) req.end();
      else if (typeof b === 'string' || Buffer.isBuffer(b)) req.end(b);
      else b.pipe(req);
    };
    req.on('continue', () => {
      sawContinue = true;
      if (o.expectContinue) sendBody();
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({
          status: res.statusCode!,
          statusMessage: res.statusMessage ?? '',
          rawHeaders: res.rawHeaders,
          headers: res.headers,
          body: Buffer.concat(chunks),
          sawContinue,
        });
      });
    });
    if (o.expectContinue) req.flushHeaders();
    else sendBody();
  });
}

/** Pairs from a flat rawHeaders array. */
export function pairsOf(raw: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}
