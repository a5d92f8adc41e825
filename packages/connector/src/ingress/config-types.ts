// What a parsed config.yml is: services, origin-request settings, ingress
// rules and the connector's settings, with every default resolved. Parsing
// is config.ts; the value parsers are config-values.ts.

/**
 * Where a rule sends matching requests. http:// and https:// are one kind: the
 * URL's protocol says whether to use TLS. Each variant carries only what it
 * needs, so e.g. a tcp service without a port cannot be represented.
 */
export type Service =
  | { readonly kind: 'http'; readonly url: URL }
  | { readonly kind: 'unix'; readonly socketPath: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'hello_world' };

/**
 * How the connector talks to an origin (cloudflared's `originRequest`), with
 * every default resolved. Durations are in milliseconds.
 *
 * Defaults (as cloudflared, plus idleTimeout which is ours):
 *   connectTimeout          30s   TCP/TLS connect to the origin
 *   keepAliveConnections    100   idle pooled connections kept per origin
 *   keepAliveTimeout        90s   how long an idle pooled connection is kept
 *   httpHostHeader          —     Host header sent to the origin (default: the request's)
 *   originServerName        —     TLS SNI / certificate name (default: the service host)
 *   caPool                  —     PEM file of CAs trusted for https origins (default: system)
 *   noTLSVerify             false skip origin certificate verification
 *   disableChunkedEncoding  false buffer bodies instead of chunked uploads to the origin
 *   idleTimeout             0     0 = none. There is deliberately no fixed read timeout,
 *                                 which would kill long downloads and streams; if set,
 *                                 a response with no bytes for this long is aborted.
 */
export interface OriginRequestConfig {
  readonly connectTimeout: number;
  readonly keepAliveConnections: number;
  readonly keepAliveTimeout: number;
  readonly httpHostHeader?: string;
  readonly originServerName?: string;
  readonly caPool?: string;
  readonly noTLSVerify: boolean;
  readonly disableChunkedEncoding: boolean;
  readonly idleTimeout: number;
  /**
   * cloudflared's `access`: with `required`, a request reaches the origin
   * only with a valid `Tunnel-Access-Jwt-Assertion` whose `aud` is one of
   * `audTag` (else 403 from the connector).
   */
  readonly access?: { readonly required: boolean; readonly audTag: readonly string[] };
}

/** Per-rule overrides: only the keys the rule sets; merged over the top-level config. */
export type OriginRequestOverrides = Partial<OriginRequestConfig>;

export const ORIGIN_REQUEST_DEFAULTS: OriginRequestConfig = Object.freeze({
  connectTimeout: 30_000,
  keepAliveConnections: 100,
  keepAliveTimeout: 90_000,
  noTLSVerify: false,
  disableChunkedEncoding: false,
  idleTimeout: 0,
});

export interface IngressRule {
  /** Lower-cased; exact (`app.example.com`) or wildcard (`*.example.com`). Absent = any host. */
  readonly hostname?: string;
  /** Regex source tested (unanchored) against the request path. Absent = any path. */
  readonly path?: string;
  readonly service: Service;
  readonly originRequest: OriginRequestOverrides;
  /** 1-based line in the config file, when the rule came from one (for messages). */
  readonly line?: number;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface ConnectorConfig {
  /** The file this came from, for messages. */
  readonly source: string;
  /** Tunnel name or id. */
  readonly tunnel?: string;
  /** Where `tunnel:` is written, for an error about it. */
  readonly tunnelAt?: { readonly line: number; readonly column: number };
  /** Absolute path (relative paths resolve against the config file's directory, `~` expands). */
  readonly credentialsFile?: string;
  readonly tokenFile?: string;
  /** Relay URLs (ws://, wss://, http://, https://), as written. Empty = from the credential. */
  readonly relays: readonly string[];
  /** 1..16, default 4. */
  readonly haConnections: number;
  readonly metrics?: { readonly host: string; readonly port: number };
  /** Milliseconds, default 30s. */
  readonly gracePeriod: number;
  /** Default 'info'. */
  readonly loglevel: LogLevel;
  readonly originRequest: OriginRequestConfig;
  /** Empty only when the file has no rules; then `--url` must supply one (see resolveIngress). */
  readonly ingress: readonly IngressRule[];
}
