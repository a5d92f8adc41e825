/**
 * Polls `fn` until it returns something other than false/null/undefined
 * (resolving with that value), or fails after `timeoutMs` with the last error
 * `fn` threw. Every wait in the tests goes through this: no bare sleeps.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 5_000,
  opts: { intervalMs?: number; message?: string } = {},
): Promise<Exclude<T, false | null | undefined>> {
  const interval = opts.intervalMs ?? 20;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== false && v !== null && v !== undefined) return v as Exclude<T, false | null | undefined>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const what = opts.message ?? 'condition';
      const why = lastError instanceof Error ? `: ${lastError.message}` : lastError !== undefined ? `: ${String(lastError)}` : '';
      throw new Error(`waitFor: ${what} not met within ${timeoutMs} ms${why}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, Math.max(1, Math.min(interval, deadline - Date.now()))));
  }
}
