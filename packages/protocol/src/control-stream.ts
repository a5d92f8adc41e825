import type { Readable } from 'node:stream';
import { ControlDecoder, type ControlMessage } from './control.js';

/** What the owner of a control stream hears from readControl(). */
export interface ControlListener {
  /** Each message, in the order sent. */
  message(m: ControlMessage): void;
  /** The peer sent bytes that are not a control message; nothing more is delivered. */
  bad(err: Error): void;
}

/**
 * Reads control messages off the control stream as they arrive, for both
 * ends (as readHead() reads a stream's head): one decoder, one framing
 * check, one way a bad message is reported. After `bad` the stream's later
 * bytes are ignored: a peer that broke the framing has nothing more to say.
 */
export function readControl(stream: Readable, listener: ControlListener): void {
  const decoder = new ControlDecoder();
  const onData = (chunk: Buffer) => {
    let msgs: ControlMessage[];
    try {
      msgs = decoder.push(chunk);
    } catch (e) {
      stream.off('data', onData);
      listener.bad(e as Error);
      return;
    }
    for (const m of msgs) listener.message(m);
  };
  stream.on('data', onData);
}
