// A fake clock for the HA code's Clock seam (@sinonjs/fake-timers, not
// installed globally): only the HA code's timers and now() are fake, so the
// WebSocket, the yamux session and the test's own waits keep real time.
import { createClock } from '@sinonjs/fake-timers';
import type { Clock, ClockTimer } from '../src/ha/clock.js';

export interface FakeClock extends Clock {
  /** Run every timer due within `ms`, in order, letting promise callbacks run between them. */
  advance(ms: number): Promise<void>;
  /** Timers scheduled and not yet run or cleared. */
  pending(): number;
  /** What random() returns (jitter), settable per test. */
  jitter: number;
}

/** Starts at a realistic epoch: a zero `registeredAt` means "never registered" to the HA manager. */
export function fakeClock(start = 1_800_000_000_000): FakeClock {
  const c = createClock(start);
  const clock: FakeClock = {
    jitter: 0.5,
    now: () => c.now,
    setTimeout: (fn, ms) => c.setTimeout(fn, ms) as unknown as ClockTimer,
    setInterval: (fn, ms) => c.setInterval(fn, ms) as unknown as ClockTimer,
    clear: (t) => c.clearTimeout(t as unknown as number),
    random: () => clock.jitter,
    advance: async (ms) => {
      await c.tickAsync(ms);
    },
    pending: () => c.countTimers(),
  };
  return clock;
}
