/**
 * Why the public HTTPS listener ended HTTP/2 streams unserved (the `reason`
 * label of tunnel_relay_h2_refused_streams_total):
 * - `concurrent_streams`: a client opened a stream past the
 *   SETTINGS_MAX_CONCURRENT_STREAMS it had acknowledged; nghttp2 closes the
 *   connection (GOAWAY PROTOCOL_ERROR), so that stream and the ones open
 *   beside it end;
 * - `rapid_reset`: streams open (or opened) when the reset guard closed the
 *   connection with GOAWAY ENHANCE_YOUR_CALM;
 * - `goaway`: streams still open when the relay closed its connections at
 *   stop, after the drain deadline.
 *
 * Not counted, because nghttp2 answers them without the relay ever seeing
 * the stream: REFUSED_STREAM to streams past the limit sent before the
 * client acknowledged SETTINGS, and new streams after a drain's GOAWAY
 * (both safe for the client to retry; RFC 9113 §8.7).
 */
export const H2_REFUSAL_REASONS = ['concurrent_streams', 'rapid_reset', 'goaway'] as const;
export type H2RefusalReason = (typeof H2_REFUSAL_REASONS)[number];

export type H2RefusedStreams = Record<H2RefusalReason, number>;

export function noRefusedStreams(): H2RefusedStreams {
  return { concurrent_streams: 0, rapid_reset: 0, goaway: 0 };
}
