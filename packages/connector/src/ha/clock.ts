/**
 * The time, timers and randomness the HA code schedules with. Production uses
 * the system's; the unit tests pass a fake clock so they can step through
 * back-offs, registration timeouts and rebalancing without waiting for them,
 * while the connections themselves stay real.
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): ClockTimer;
  setInterval(fn: () => void, ms: number): ClockTimer;
  /** Cancels a timer from either setTimeout or setInterval. */
  clear(timer: ClockTimer): void;
  /** Jitter, uniform in [0, 1). */
  random(): number;
}

/** What the HA code does with a timer besides clearing it: let it not keep the process alive. */
export interface ClockTimer {
  unref(): unknown;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clear: (timer) => clearTimeout(timer as NodeJS.Timeout),
  random: () => Math.random(),
};
