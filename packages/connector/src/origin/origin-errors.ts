import { renderTunnelError } from '@tunnel/protocol';

/**
 * Every failure the connector answers for says who failed, with a stable
 * code, in the `Tunnel-Error` / `Tunnel-Error-Source` headers and the body.
 */
export interface OriginFailure {
  status: 400 | 403 | 502 | 503 | 504;
  code: string;
  source: 'connector' | 'origin';
  message: string;
}

export function classifyOriginError(err: unknown): OriginFailure {
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const code = e.code ?? e.cause?.code ?? '';
  switch (code) {
    case 'ECONNREFUSED':
      return { status: 502, code: 'origin_refused', source: 'origin', message: 'The origin refused the connection.' };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { status: 502, code: 'origin_dns', source: 'origin', message: 'The origin host name does not resolve.' };
    case 'ENOENT':
      return { status: 502, code: 'origin_unix_socket_missing', source: 'origin', message: 'The origin unix socket does not exist.' };
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return { status: 504, code: 'origin_connect_timeout', source: 'origin', message: 'Connecting to the origin timed out.' };
    case 'UND_ERR_HEADERS_TIMEOUT':
      return { status: 504, code: 'origin_timeout', source: 'origin', message: 'The origin did not answer within the idle timeout.' };
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
      return { status: 502, code: 'origin_reset', source: 'origin', message: 'The origin closed the connection before answering.' };
    case 'UND_ERR_RESPONSE_EXCEEDED_MAX_SIZE':
    case 'HPE_INVALID_CONSTANT':
    case 'HPE_INVALID_HEADER_TOKEN':
      return { status: 502, code: 'origin_bad_response', source: 'origin', message: 'The origin sent a malformed HTTP response.' };
    default:
      // Any other llhttp parse error: the origin does not speak HTTP/1.1 as it must.
      if (code.startsWith('HPE_')) {
        return { status: 502, code: 'origin_bad_response', source: 'origin', message: 'The origin sent a malformed HTTP response.' };
      }
      if (/certificate|self.signed|SSL|TLS|ERR_TLS/i.test(`${code} ${e.message ?? ''}`)) {
        return { status: 502, code: 'origin_tls', source: 'origin', message: `TLS to the origin failed: ${e.message ?? code}` };
      }
      return { status: 502, code: 'origin_error', source: 'origin', message: `The origin request failed: ${e.message ?? code}` };
  }
}

/** The answer for a failure, as the relay renders its own: HTML for a browser (by the request's Accept), JSON otherwise. */
export function failureBody(f: OriginFailure, requestId: string, accept: string | undefined): { headers: Array<[string, string]>; body: Buffer } {
  const rendered = renderTunnelError(f, accept, requestId);
  const body = Buffer.from(rendered.body);
  return {
    headers: [
      ['Content-Type', rendered.type],
      ['Content-Length', String(body.length)],
      ['Cache-Control', 'no-store'],
      ['Tunnel-Error', f.code],
      ['Tunnel-Error-Source', f.source],
    ],
    body,
  };
}

/** An origin answer that parses but cannot be passed on (see checkResponseHead). */
export function originBadResponse(reason: string): OriginFailure {
  return { status: 502, code: 'origin_bad_response', source: 'origin', message: `The origin sent a response the tunnel cannot pass on (${reason}).` };
}
