// Go-style duration strings ("30s", "1m30s", "500ms", "1.5h") as used by
// cloudflared's config, converted to whole milliseconds because every consumer
// here ends up in a Node timer. Only h, m, s and ms are accepted: sub-millisecond
// units would be silently truncated by timers, and days are ambiguous (DST).

const UNIT_MS = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const;

// One "<number><unit>" term. `ms` must be tried before `m`.
const TERM = /(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)/y;

const EXAMPLES = 'e.g. "30s", "1m30s", "500ms"';

/**
 * Parse a duration such as `1m30s` into milliseconds (90000).
 * `"0"` is accepted without a unit (as in Go), meaning "none".
 * Throws an Error whose message names the offending text and what was expected.
 */
export function parseDuration(text: string): number {
  if (text === '') throw new Error(`empty duration (${EXAMPLES})`);
  if (text === '0') return 0;
  if (text.startsWith('-')) throw new Error(`invalid duration "${text}": durations cannot be negative`);
  if (/^\d+(\.\d+)?$/.test(text)) {
    throw new Error(`invalid duration "${text}": missing unit (h, m, s or ms), e.g. "${text}s"`);
  }
  let total = 0;
  let pos = 0;
  TERM.lastIndex = 0;
  while (pos < text.length) {
    TERM.lastIndex = pos;
    const m = TERM.exec(text);
    if (m === null) {
      const num = /(?:\d+(?:\.\d*)?|\.\d+)/y;
      num.lastIndex = pos;
      if (num.test(text)) {
        const unit = /^[^\d.]*/.exec(text.slice(num.lastIndex))![0];
        throw new Error(`invalid duration "${text}": unknown unit "${unit}" (use h, m, s or ms, ${EXAMPLES})`);
      }
      throw new Error(
        `invalid duration "${text}": expected a number followed by a unit (h, m, s or ms)` +
          `${pos > 0 ? ` at "${text.slice(pos)}"` : ''}, ${EXAMPLES}`,
      );
    }
    const unit = m[2] as keyof typeof UNIT_MS;
    total += Number(m[1]) * UNIT_MS[unit];
    pos = TERM.lastIndex;
  }
  // Floating point: 1.1s is 1100.0000000000002 before rounding; anything that is
  // still fractional after rounding to 1e-6 asked for sub-millisecond precision.
  const rounded = Math.round(total);
  if (Math.abs(total - rounded) > 1e-6) {
    throw new Error(`invalid duration "${text}": finer than a millisecond`);
  }
  if (!Number.isSafeInteger(rounded)) throw new Error(`invalid duration "${text}": too large`);
  return rounded;
}

/** Inverse of parseDuration for messages and `--help` defaults: 90000 → "1m30s". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  let rest = Math.round(ms);
  let out = '';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1_000], ['ms', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  return out;
}

/** Node timers take at most 2^31-1 ms; a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A duration setting as a config file or a flag gives it, checked for a
 * timer: the one checker behind every duration setting of both daemons, so a
 * file and a flag accept the same text (parseDuration's). A YAML number is
 * refused, as `30` could mean seconds or milliseconds.
 */
export function durationSetting(v: unknown): { readonly ms: number } | { readonly problem: string } {
  if (typeof v === 'number') return { problem: `expected a duration with a unit, e.g. "${v}s", got the bare number ${v}` };
  if (typeof v !== 'string') return { problem: `expected a duration like "30s", got ${v === null || v === undefined ? 'an empty value' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : String(v)}` };
  let ms: number;
  try {
    ms = parseDuration(v);
  } catch (e) {
    return { problem: (e as Error).message };
  }
  if (ms > MAX_TIMER_MS) return { problem: `duration "${v}" is too long (at most ${formatDuration(MAX_TIMER_MS - (MAX_TIMER_MS % 1000))})` };
  return { ms };
}
