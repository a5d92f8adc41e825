/** The longest wait a relay's Retry-After can impose: a hostile or broken relay must not park a slot for hours. */
export const MAX_RETRY_AFTER_MS = 300_000;

/**
 * A Retry-After header in delay-seconds (RFC 9110 §10.2.3) as milliseconds,
 * capped; undefined when absent or not a plain number of seconds (our relay
 * never sends the HTTP-date form).
 */
export function parseRetryAfter(header: string | string[] | undefined): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined || !/^\d{1,9}$/.test(v.trim())) return undefined;
  return Math.min(MAX_RETRY_AFTER_MS, Number(v.trim()) * 1000);
}
