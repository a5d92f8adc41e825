import { describe, expect, it } from 'vitest';
import type { Readable } from 'node:stream';
import { ControlDecodeError, encodeControl, type ControlMessage } from '../src/control.js';
import { readControl } from '../src/control-stream.js';
import { memoryDuplexPair } from '../src/memory-pair.js';
import { MAX_CONTROL_BYTES } from '../src/limits.js';

const register: ControlMessage = { type: 'register', connectorId: 'c1', connIndex: 2, version: '1.0.0', features: ['http'] };
const registered: ControlMessage = { type: 'registered', relayId: 'r1', region: 'eu', connectionId: 'x' };

function listen(stream: Readable) {
  const got: ControlMessage[] = [];
  const bad: Error[] = [];
  readControl(stream, { message: (m) => got.push(m), bad: (e) => bad.push(e) });
  return { got, bad };
}

/** Resolves once `pred` holds, checked after each event-loop turn; bounded. */
async function until(pred: () => boolean, turns = 200): Promise<void> {
  for (let i = 0; i < turns && !pred(); i++) await new Promise((r) => setImmediate(r));
  expect(pred()).toBe(true);
}

describe('readControl', () => {
  it('delivers messages in order, whether a chunk holds one, many or part of one', async () => {
    const [a, b] = memoryDuplexPair();
    const r = listen(b);
    const both = Buffer.concat([encodeControl(register), encodeControl({ type: 'drain' })]);
    a.write(both);
    const third = encodeControl(registered);
    for (const byte of third) a.write(Buffer.from([byte])); // one byte at a time
    await until(() => r.got.length === 3);
    expect(r.got).toEqual([register, { type: 'drain' }, registered]);
    expect(r.bad).toEqual([]);
  });

  it('reports a bad message once and then ignores the stream', async () => {
    const [a, b] = memoryDuplexPair();
    const r = listen(b);
    a.write(encodeControl({ type: 'drain' }));
    const tooLong = Buffer.alloc(4);
    tooLong.writeUInt32BE(MAX_CONTROL_BYTES + 1);
    a.write(tooLong);
    await until(() => r.bad.length === 1);
    // More bytes, valid or not, after the peer broke the framing: nothing more is heard.
    // Written bytes are delivered once the writer's callback has run and the reader's turn has come.
    await new Promise<void>((done) => a.write(Buffer.concat([tooLong, encodeControl(registered)]), () => done()));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(r.got).toEqual([{ type: 'drain' }]);
    expect(r.bad).toHaveLength(1);
    expect(r.bad[0]).toBeInstanceOf(ControlDecodeError);
    expect(r.bad[0]!.message).toMatch(/exceeds the limit/);
  });
});
