// HeadReader's observable state and its refusal message: `done` before and
// after the head, and the words a peer's oversized length prefix is refused with.
import { describe, expect, it } from 'vitest';
import { HeadReader } from '../src/heads.js';

describe('HeadReader', () => {
  it('is not done until push() has returned the head', () => {
    const r = new HeadReader();
    expect(r.done).toBe(false);
    expect(r.push(Buffer.from([0, 0]))).toBeNull();
    expect(r.done).toBe(false);
    expect(r.push(Buffer.from([0, 1, 7]))?.equals(Buffer.from([7]))).toBe(true);
    expect(r.done).toBe(true);
  });

  it('an oversized length prefix is refused naming the length and the limit', () => {
    const r = new HeadReader(10);
    expect(() => r.push(Buffer.from([0, 0, 0, 11]))).toThrow('head length prefix: 11 at offset 0 exceeds the limit of 10');
  });
});
