import http2 from 'node:http2';

/**
 * HTTP/2 requests in the shape of an HTTP/1.1 one, so the one request path
 * (routing, access, forwarding headers, peer forwarding, error pages) takes
 * both without knowing which it has:
 *
 * - `Host` is the `:authority` pseudo-header (RFC 9113 §8.3.1: it wins over
 *   a `host` field when both are sent);
 * - `rawHeaders` holds no pseudo-headers (`:method`, `:path`, ... are not
 *   header fields of the HTTP/1.1 request the origin gets), starts with
 *   `Host`, and has the `cookie` crumbs HTTP/2 allows to be split joined
 *   into one field with "; " (RFC 9113 §8.2.3);
 * - a request body of unknown length (DATA frames until END_STREAM, no
 *   content-length: a streamed fetch upload, `curl -T -`) is what HTTP/1.1
 *   calls chunked: without `Transfer-Encoding: chunked` the one request path
 *   would read "no body" (RFC 9112 §6.3) and drop it, and the body-size and
 *   body-idle ceilings, which look for a length or a transfer coding, would
 *   not apply. HTTP/2 forbids the header from the client (nghttp2 resets
 *   such a stream), so the one here is always ours;
 * - a response status line has no reason phrase in HTTP/2: one given is
 *   dropped rather than warned about.
 *
 * Connection-specific headers (Connection, Transfer-Encoding, ...) never
 * reach a response here: the connector's answer is already stripped of them.
 */
export class EdgeH2Request extends http2.Http2ServerRequest {
  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, options: object, rawHeaders: string[]) {
    super(stream, headers, options as never, http1Fields(headers, rawHeaders, !stream.endAfterHeaders));
  }
}

function http1Fields(headers: http2.IncomingHttpHeaders, raw: string[], bodyFollows: boolean): string[] {
  const authority = headers[':authority'];
  if (typeof authority === 'string' && authority !== '') headers.host = authority;
  const host = headers.host;
  const out: string[] = host === undefined ? [] : ['Host', host];
  let cookie: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 0x3a /* : */ || name === 'host') continue;
    if (name === 'cookie') {
      cookie = cookie === undefined ? raw[i + 1]! : `${cookie}; ${raw[i + 1]!}`;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  if (cookie !== undefined) out.push('cookie', cookie);
  if (bodyFollows && headers['content-length'] === undefined) {
    headers['transfer-encoding'] = 'chunked';
    out.push('transfer-encoding', 'chunked');
  }
  return out;
}

export class EdgeH2Response extends http2.Http2ServerResponse<EdgeH2Request> {
  override writeHead(status: number, ...rest: unknown[]): this {
    if (typeof rest[0] === 'string' || rest[0] === undefined) rest.shift();
    return (super.writeHead as (s: number, h?: unknown) => this)(status, rest[0]);
  }
}
