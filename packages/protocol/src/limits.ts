// Hard limits shared by both ends of the wire. Encoders refuse to produce
// anything over them (RangeError) and decoders reject it, so one side never
// sends what the other must refuse, and a hostile peer can only make us
// buffer a bounded amount before we give up.

const KiB = 1024;

/** Largest stream head body (the length announced by its u32 prefix, prefix excluded). */
export const MAX_HEAD_BYTES = 64 * KiB;

/** Most header pairs in one request or response head (Node's own default is 2000; real traffic is < 50). */
export const MAX_HEADERS = 256;

/** Longest header name. Names are tokens like `content-type`; 1 KiB is far beyond anything legitimate. */
export const MAX_HEADER_NAME = 1 * KiB;

/** Longest header value: Node's default limit for the whole header block. */
export const MAX_HEADER_VALUE = 16 * KiB;

/** Longest request target (path + query). */
export const MAX_PATH = 16 * KiB;

/**
 * Longest of the small head fields: method, host, client IP, request id and
 * status text. A longer Host than this should be a 4xx at the relay, not a
 * head the connector has to parse.
 */
export const MAX_SHORT_FIELD = 1 * KiB;

/** Largest control message body (the JSON, length prefix excluded). */
export const MAX_CONTROL_BYTES = 64 * KiB;

/** Longest string (in UTF-16 code units) in any control message field. */
export const MAX_CONTROL_STRING = 256;

/** Most entries in a `register` message's `features` list. */
export const MAX_CONTROL_FEATURES = 64;

/** Highest connection index a connector may claim (it opens 4 by default). */
export const MAX_CONN_INDEX = 63;

/** Longest token string `verifyToken` will look at, so garbage is refused before any decoding. */
export const MAX_TOKEN_LENGTH = 16 * KiB;
