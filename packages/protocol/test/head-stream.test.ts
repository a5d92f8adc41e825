// readHead: the length-prefixed head at the start of a stream, over a real
// Node stream. The bytes after the head are put back for the body, the stream
// is left paused, and the callback fires exactly once (head, or why not) with
// every listener it added removed.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readHead } from '../src/head-stream.js';
import { HEAD_PREFIX_BYTES, HeadDecodeError } from '../src/heads.js';

/** A head body framed as on the wire: 4-byte big-endian length, then the body. */
const framed = (body: Buffer) => {
  const prefix = Buffer.alloc(HEAD_PREFIX_BYTES);
  prefix.writeUInt32BE(body.length, 0);
  return Buffer.concat([prefix, body]);
};

interface Outcome {
  calls: Array<{ err: Error | null; head: Buffer | null }>;
}
function watch(stream: PassThrough): Outcome {
  const o: Outcome = { calls: [] };
  readHead(stream, (err, head) => o.calls.push({ err, head }));
  return o;
}
const listeners = (s: PassThrough) => ['data', 'end', 'error', 'close'].map((e) => s.listenerCount(e));

/** Everything readable from the stream from here to its end. */
async function drain(s: PassThrough): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('readHead', () => {
  const body = Buffer.from('the head body');

  it('a head split over chunks, with body bytes after it: the head once, the rest put back, the stream paused', async () => {
    const s = new PassThrough();
    const o = watch(s);
    const wire = Buffer.concat([framed(body), Buffer.from('BODY-1')]);
    s.write(wire.subarray(0, 2)); // inside the length prefix
    s.write(wire.subarray(2, 9));
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(0);
    s.write(wire.subarray(9));
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(1);
    expect(o.calls[0]!.err).toBeNull();
    expect(o.calls[0]!.head).toEqual(body);
    expect(s.isPaused()).toBe(true);
    expect(listeners(s)).toEqual([0, 0, 0, 0]);
    s.end('BODY-2');
    expect((await drain(s)).toString()).toBe('BODY-1BODY-2');
    expect(o.calls).toHaveLength(1); // the end of the body is not a second answer
  });

  it('a head and nothing after it in one chunk: nothing is put back', async () => {
    const s = new PassThrough();
    const o = watch(s);
    s.write(framed(body));
    await new Promise((r) => setImmediate(r));
    expect(o.calls.map((c) => c.head)).toEqual([body]);
    expect(s.readableLength).toBe(0);
    s.end();
    expect(await drain(s)).toHaveLength(0);
  });

  it('the stream ends before its head: an error saying so, once', async () => {
    const s = new PassThrough();
    const o = watch(s);
    s.end(framed(body).subarray(0, 6));
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(1);
    expect(o.calls[0]!.err?.message).toBe('stream ended before its head');
    expect(o.calls[0]!.head).toBeNull();
    expect(listeners(s)).toEqual([0, 0, 0, 0]);
  });

  it('the stream fails before its head: that error, once', async () => {
    const s = new PassThrough();
    const o = watch(s);
    const boom = new Error('boom');
    s.destroy(boom);
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(1);
    expect(o.calls[0]!.err).toBe(boom);
  });

  it('the stream is destroyed without an error before its head: an error saying it closed', async () => {
    const s = new PassThrough();
    const o = watch(s);
    s.write(framed(body).subarray(0, 3));
    s.destroy();
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(1);
    expect(o.calls[0]!.err?.message).toBe('stream closed before its head');
  });

  it('a head over the limit: the decoder’s error, once, and no further bytes are taken', async () => {
    const s = new PassThrough();
    const o = watch(s);
    const prefix = Buffer.alloc(HEAD_PREFIX_BYTES);
    prefix.writeUInt32BE(0xffff_fff0, 0);
    s.write(prefix);
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(1);
    expect(o.calls[0]!.err).toBeInstanceOf(HeadDecodeError);
    expect(listeners(s)).toEqual([0, 0, 0, 0]);
    s.end('more');
    await new Promise((r) => setImmediate(r));
    expect(o.calls).toHaveLength(1);
  });
});
