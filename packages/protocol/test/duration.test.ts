// The one duration grammar of both daemons (config files and flags): the
// messages a user sees for each kind of bad text, and every limit at exactly
// its value. The connector's config.test.ts covers the common cases.
import { describe, expect, it } from 'vitest';
import { MAX_TIMER_MS, durationSetting, formatDuration, parseDuration } from '../src/duration.js';

const EXAMPLES = 'e.g. "30s", "1m30s", "500ms"';

describe('parseDuration', () => {
  it('a number with a fraction but no unit is "missing unit", with the number in the suggestion', () => {
    expect(() => parseDuration('1.5')).toThrow('invalid duration "1.5": missing unit (h, m, s or ms), e.g. "1.5s"');
    expect(() => parseDuration('12.25')).toThrow('invalid duration "12.25": missing unit (h, m, s or ms), e.g. "12.25s"');
  });

  it('text that only ends in digits is not "missing unit": it does not start with a number', () => {
    expect(() => parseDuration('a5')).toThrow(`invalid duration "a5": expected a number followed by a unit (h, m, s or ms), ${EXAMPLES}`);
  });

  it('the unknown unit is the text after the whole number, fraction included', () => {
    expect(() => parseDuration('1.5x')).toThrow(`invalid duration "1.5x": unknown unit "x" (use h, m, s or ms, ${EXAMPLES})`);
    expect(() => parseDuration('1.x')).toThrow('invalid duration "1.x": unknown unit "x"');
    expect(() => parseDuration('.25x')).toThrow('invalid duration ".25x": unknown unit "x"');
    // A later term: the number found there, and the unit up to the next digit.
    expect(() => parseDuration('1m2days3s')).toThrow('invalid duration "1m2days3s": unknown unit "days"');
    expect(() => parseDuration('1m2.5d.5s')).toThrow('invalid duration "1m2.5d.5s": unknown unit "d"');
  });

  it('a second term that is not a number names where it starts', () => {
    expect(() => parseDuration('1s-2s')).toThrow(`invalid duration "1s-2s": expected a number followed by a unit (h, m, s or ms) at "-2s", ${EXAMPLES}`);
    expect(() => parseDuration('5s-')).toThrow('at "-"');
  });

  it('fractions of every unit add up; a sum a float rounding off a millisecond away is still whole', () => {
    expect(parseDuration('1.1s')).toBe(1_100);
    expect(parseDuration('0.001s')).toBe(1);
    expect(parseDuration('1.5h30m')).toBe(7_200_000);
    expect(parseDuration('2.m')).toBe(120_000);
    expect(parseDuration('1ms1ms')).toBe(2);
  });

  it('finer than a millisecond is refused, above and below a whole millisecond', () => {
    expect(() => parseDuration('1.0005s')).toThrow('invalid duration "1.0005s": finer than a millisecond');
    expect(() => parseDuration('1.4ms')).toThrow('finer than a millisecond');
    expect(() => parseDuration('1.6ms')).toThrow('finer than a millisecond');
  });

  it('a remainder of at most 1e-6 ms is taken as float noise and rounds away; just over it is refused', () => {
    expect(parseDuration('0.000001ms')).toBe(0);
    expect(() => parseDuration('0.0000011ms')).toThrow('finer than a millisecond');
  });

  it('the largest safe integer of milliseconds parses; one more is "too large"', () => {
    expect(parseDuration(`${Number.MAX_SAFE_INTEGER}ms`)).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => parseDuration(`${Number.MAX_SAFE_INTEGER + 1}ms`)).toThrow(`invalid duration "${Number.MAX_SAFE_INTEGER + 1}ms": too large`);
    expect(() => parseDuration('9999999999h')).toThrow('too large');
  });
});

describe('formatDuration', () => {
  it('rounds to a whole millisecond first and leaves zero units out', () => {
    expect(formatDuration(1_500.6)).toBe('1s501ms');
    expect(formatDuration(1_000.4)).toBe('1s');
    expect(formatDuration(3_600_000)).toBe('1h');
    expect(formatDuration(3_600_001)).toBe('1h1ms');
    expect(formatDuration(1)).toBe('1ms');
  });
});

describe('durationSetting', () => {
  it('the longest timer Node honours is accepted; one millisecond more is refused, naming the limit', () => {
    expect(MAX_TIMER_MS).toBe(2_147_483_647);
    expect(durationSetting('2147483647ms')).toEqual({ ms: MAX_TIMER_MS });
    expect(durationSetting('2147483648ms')).toEqual({ problem: 'duration "2147483648ms" is too long (at most 596h31m23s)' });
  });

  it('a value that is not text says what it was', () => {
    expect(durationSetting(30)).toEqual({ problem: 'expected a duration with a unit, e.g. "30s", got the bare number 30' });
    expect(durationSetting(null)).toEqual({ problem: 'expected a duration like "30s", got an empty value' });
    expect(durationSetting(undefined)).toEqual({ problem: 'expected a duration like "30s", got an empty value' });
    expect(durationSetting(['30s'])).toEqual({ problem: 'expected a duration like "30s", got a list' });
    expect(durationSetting({ s: 30 })).toEqual({ problem: 'expected a duration like "30s", got a mapping' });
    expect(durationSetting(true)).toEqual({ problem: 'expected a duration like "30s", got true' });
  });

  it('bad text gives parseDuration\'s message as the problem', () => {
    expect(durationSetting('5d')).toEqual({ problem: `invalid duration "5d": unknown unit "d" (use h, m, s or ms, ${EXAMPLES})` });
    expect(durationSetting('0')).toEqual({ ms: 0 });
  });
});
