import type { Readable } from 'node:stream';
import { HeadReader } from './heads.js';

/**
 * Read the length-prefixed head at the start of a stream. The bytes after it
 * are put back (unshift) so the stream can be piped on as the body; the
 * stream is left paused. `cb` fires once: with the head body, or an error if
 * the stream ends, fails or sends a bad head first.
 */
export function readHead(stream: Readable, cb: (err: Error | null, head: Buffer | null) => void): void {
  const reader = new HeadReader();
  let done = false;
  const finish = (err: Error | null, head: Buffer | null) => {
    if (done) return;
    done = true;
    stream.off('data', onData);
    stream.off('end', onEnd);
    stream.off('error', onError);
    stream.off('close', onClose);
    cb(err, head);
  };
  const onData = (chunk: Buffer) => {
    let head: Buffer | null;
    try {
      head = reader.push(chunk);
    } catch (e) {
      finish(e as Error, null);
      return;
    }
    if (head === null) return;
    stream.pause();
    const rest = reader.rest();
    if (rest.length > 0) stream.unshift(rest);
    finish(null, head);
  };
  const onEnd = () => finish(new Error('stream ended before its head'), null);
  const onError = (e: Error) => finish(e, null);
  // A stream destroyed without an error emits only 'close'.
  const onClose = () => finish(new Error('stream closed before its head'), null);
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', onError);
  stream.on('close', onClose);
}
