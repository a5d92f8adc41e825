// About 500 lines: one request path to the origin (head, body framing, retry, upgrade, errors) whose steps share one stream and its accounting; the pools, errors and TLS trust are already their own files.
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { AccessHeaders } from '@tunnel/protocol';
import type { AssertionCheck, AssertionVerdict } from '../access/assertion-check.js';
import {
  checkRequestHead,
  checkResponseHead,
  connectionOptions,
  decodeRequestHead,
  encodeResponseHead,
  isHopHeader,
  readHead,
  type HeaderPairs,
  type RequestHead,
  type YamuxStream,
  RETRYABLE_METHODS,
} from '@tunnel/protocol';
import type { Ingress, CompiledRule } from '../ingress/ingress.js';
import type { OriginRequestConfig } from '../ingress/config-types.js';
import { OriginPools } from './origin-pools.js';
import { classifyOriginError, failureBody, originBadResponse, type OriginFailure } from './origin-errors.js';
import { helloWorld } from './hello-world.js';
import { bridgeTcp, wantsTcp } from './tcp-bridge.js';

export interface OriginProxyHooks {
  onRequest?(): void;
  onResponse?(status: number, startedAt: bigint): void;
  onStreamDone?(): void;
}

// Headers that say who the client is or how it came in are ours to set: a
// client-sent one is dropped (and the ones we set are set afresh below), so
// the origin sees one truthful client IP. X-Forwarded-For is the exception:
// its chain is kept and the client IP appended, as every proxy does.
// `expect` is answered by the relay (and undici refuses to send it).
const DROP_REQUEST = new Set([
  'expect',
  'forwarded',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-server',
  'x-real-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'fastly-client-ip',
  'x-client-ip',
  'x-cluster-client-ip',
]);

function isOursToSet(lowerName: string): boolean {
  // The relay's Access headers go on to the origin (the relay already dropped any client-sent copy).
  return DROP_REQUEST.has(lowerName) || (lowerName.startsWith('tunnel-') && lowerName !== AccessHeaders.assertion && lowerName !== AccessHeaders.email);
}

/** Body limit when disableChunkedEncoding makes us buffer a request body to learn its length. */
const MAX_BUFFERED_BODY = 16 * 1024 * 1024;


/** One try of a request at the origin: the tunnel stream and its head, the rule that matched, and what this try sends. */
interface OriginCall {
  readonly stream: YamuxStream;
  readonly head: RequestHead;
  readonly rule: CompiledRule;
  /** process.hrtime.bigint() when the stream arrived. */
  readonly started: bigint;
  /** 0 for the first try; a retry on a socket the origin closed is 1. */
  readonly attempt: number;
  readonly pool: Dispatcher;
  readonly path: string;
  /** Flat name, value, name, value… as undici takes them. */
  readonly headers: string[];
  readonly body: PassThrough | Buffer | null;
}

/**
 * Serves request streams opened by a relay: reads the request head, picks the
 * ingress rule, and replays the request to the origin with streaming both
 * ways. Ingress can be swapped at any time (config reload); a request keeps
 * the rule it matched.
 */
export class OriginProxy {
  private readonly pools = new OriginPools();

  constructor(
    private ingress: Ingress,
    private readonly log: Logger,
    private readonly hooks: OriginProxyHooks = {},
    /** Checks Access assertions for rules with `originRequest.access.required`; absent: such rules refuse every request. */
    private readonly access?: AssertionCheck,
  ) {}

  setIngress(ingress: Ingress): void {
    this.ingress = ingress;
  }

  get currentIngress(): Ingress {
    return this.ingress;
  }

  handle(stream: YamuxStream): void {
    this.guard(stream, '', () => this.serve(stream));
  }

  /**
   * The last resort for one request stream: a throw in its handling (a bug,
   * or input no check foresaw) resets that stream with a logged reason, never
   * the process.
   */
  private guard(stream: YamuxStream, requestId: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.log.error({ requestId, err: (e as Error).message, stack: (e as Error).stack }, 'request handler failed: stream reset');
      stream.destroy();
    }
  }

  private serve(stream: YamuxStream): void {
    const started = process.hrtime.bigint();
    stream.on('error', () => {});
    stream.once('close', () => this.hooks.onStreamDone?.());
    readHead(stream, (err, body) => this.guard(stream, '', () => {
      if (err) {
        this.log.debug({ err: err.message }, 'bad request stream');
        stream.destroy();
        return;
      }
      let head: RequestHead;
      try {
        head = decodeRequestHead(body!);
      } catch (e) {
        // A hostile or broken head resets this stream only.
        this.log.warn({ err: (e as Error).message }, 'undecodable request head');
        stream.destroy();
        return;
      }
      this.hooks.onRequest?.();
      const checked = checkRequestHead(head);
      if (!checked.ok) {
        // Nothing of it reaches an origin: CR LF, a second Host or a bad method would be injected or throw.
        return this.fail(stream, head, { status: 400, code: 'bad_request_head', source: 'connector', message: `The request head cannot be passed to the origin (${checked.reason}).` }, started);
      }
      const q = head.path.indexOf('?');
      const { rule } = this.ingress.match(head.host, q === -1 ? head.path : head.path.slice(0, q));
      if (rule.originRequest.access?.required) return this.checkAccess(stream, head, rule, started, rule.originRequest.access.audTag);
      this.dispatch(stream, head, rule, started);
    }));
  }

  /** Access required: nothing reaches the origin without a valid assertion for one of the rule's audience tags. */
  private checkAccess(stream: YamuxStream, head: RequestHead, rule: CompiledRule, started: bigint, audTags: readonly string[]): void {
    const token = head.headers.find(([k]) => k.toLowerCase() === AccessHeaders.assertion)?.[1];
    const verdict: Promise<AssertionVerdict> = this.access
      ? this.access.verify(token, audTags)
      : Promise.resolve({ ok: false, reason: 'this connector does not know its fleet (no control URL or fleet key in its credential)', unavailable: true });
    void verdict.then((v) =>
      this.guard(stream, head.requestId, () => {
        if (v.ok) return this.dispatch(stream, head, rule, started);
        this.fail(
          stream,
          head,
          v.unavailable
            ? { status: 503, code: 'access_keys_unavailable', source: 'connector', message: `The request cannot be checked: ${v.reason}.` }
            : { status: 403, code: 'access_assertion_refused', source: 'connector', message: `Access assertion refused: ${v.reason}.` },
          started,
        );
      }),
    );
  }

  private dispatch(stream: YamuxStream, head: RequestHead, rule: CompiledRule, started: bigint): void {
    const svc = rule.service;
    if (svc.kind !== 'tcp' && wantsTcp(head)) {
      return this.fail(
        stream,
        head,
        { status: 502, code: 'http_service_over_tcp', source: 'connector', message: `${head.host} is an HTTP route, not raw TCP: open https://${head.host}/ with a browser or curl.` },
        started,
      );
    }
    switch (svc.kind) {
      case 'http':
      case 'unix':
        if (head.kind === 'websocket') return this.upgrade(stream, head, rule, started);
        return this.proxyHttp(stream, head, rule, started, 0);
      case 'status':
        return this.respond(stream, head, svc.status, [['Content-Length', '0']], null, started);
      case 'hello_world': {
        const r = helloWorld(head);
        return this.respond(stream, head, r.status, r.headers, r.body, started);
      }
      case 'tcp':
        if (wantsTcp(head)) {
          return bridgeTcp(stream, svc, rule.originRequest.connectTimeout, {
            connected: () => this.hooks.onResponse?.(101, started),
            failed: (f) => this.fail(stream, head, f, started),
          });
        }
        return this.fail(
          stream,
          head,
          { status: 502, code: 'tcp_service_over_http', source: 'connector', message: `This hostname serves raw TCP: reach it with \`tunnel access tcp --hostname ${head.host}\`.` },
          started,
        );
    }
  }

  private respond(stream: YamuxStream, head: RequestHead, status: number, headers: Array<[string, string]>, body: Buffer | null, started: bigint): void {
    stream.resume(); // discard any request body
    stream.write(encodeResponseHead({ status, statusText: '', headers }));
    stream.end(head.method === 'HEAD' ? undefined : (body ?? undefined));
    this.hooks.onResponse?.(status, started);
  }

  private fail(stream: YamuxStream, head: RequestHead, f: OriginFailure, started: bigint): void {
    this.log.info({ requestId: head.requestId, code: f.code, host: head.host, path: head.path }, `origin request failed: ${f.message}`);
    if (stream.destroyed) return;
    const accept = head.headers.find(([k]) => k.toLowerCase() === 'accept')?.[1];
    const { headers, body } = failureBody(f, head.requestId, accept);
    this.respond(stream, head, f.status, headers, body, started);
  }

  private originHeaders(head: RequestHead, o: OriginRequestConfig): string[] {
    const out: string[] = [];
    let xff: string | undefined;
    let sawHost = false;
    let sawLength = false;
    const named = connectionOptions(head.headers);
    for (const [k, v] of head.headers) {
      const lk = k.toLowerCase();
      if (isHopHeader(lk, named) || isOursToSet(lk)) continue;
      if (lk === 'content-length') {
        // checkRequestHead let through only equal copies: the origin gets one.
        if (sawLength) continue;
        sawLength = true;
      }
      if (lk === 'x-forwarded-for') {
        xff = xff === undefined ? v : `${xff}, ${v}`;
        continue;
      }
      if (lk === 'host') {
        sawHost = true;
        out.push(k, o.httpHostHeader ?? v);
        continue;
      }
      out.push(k, v);
    }
    if (!sawHost) out.push('Host', o.httpHostHeader ?? head.host);
    out.push(
      'X-Forwarded-For',
      xff === undefined ? head.clientIp : `${xff}, ${head.clientIp}`,
      'X-Forwarded-Proto',
      head.scheme,
      'X-Forwarded-Host',
      head.host,
      'X-Real-IP',
      head.clientIp,
      'Tunnel-Connecting-IP',
      head.clientIp,
      'Tunnel-Request-Id',
      head.requestId,
    );
    return out;
  }

  private proxyHttp(stream: YamuxStream, head: RequestHead, rule: CompiledRule, started: bigint, attempt: number): void {
    const svc = rule.service as Extract<CompiledRule['service'], { kind: 'http' | 'unix' }>;
    const o = rule.originRequest;
    const pool = this.pools.forRule(rule);
    const headers = this.originHeaders(head, o);
    const bodyless = !hasRequestBody(head);
    const basePath = svc.kind === 'http' && svc.url.pathname !== '/' ? svc.url.pathname.replace(/\/$/, '') : '';
    const path = basePath + (head.path.startsWith('/') ? head.path : `/${head.path}`);

    if (!bodyless && o.disableChunkedEncoding && !hasContentLength(head)) {
      // Origins that cannot take chunked uploads get the body buffered, with a length.
      bufferBody(stream, MAX_BUFFERED_BODY).then(
        (buf) => {
          if (!buf) return this.fail(stream, head, { status: 502, code: 'request_body_too_large', source: 'connector', message: 'Request body exceeds the 16 MiB limit for disableChunkedEncoding.' }, started);
          headers.push('Content-Length', String(buf.length));
          this.send({ stream, head, rule, started, attempt, pool, path, headers, body: buf });
        },
        () => stream.destroy(),
      );
      return;
    }
    let body: PassThrough | null = null;
    if (!bodyless) {
      // undici destroys a body it gives up on; a PassThrough keeps that from
      // resetting the tunnel stream before our error response is written.
      body = new PassThrough({ highWaterMark: 64 * 1024 });
      stream.pipe(body);
    }
    this.send({ stream, head, rule, started, attempt, pool, path, headers, body });
  }

  private send(call: OriginCall): void {
    const { stream, head, pool, path, headers, body, started, attempt, rule } = call;
    let phase: 'waiting' | 'streaming' | 'done' = 'waiting';
    let abort: ((err?: Error) => void) | null = null;
    let resume: (() => void) | null = null;
    const onDrain = () => resume?.();
    const cancel = () => {
      if (phase !== 'done') {
        phase = 'done';
        this.log.debug({ event: 'request-cancelled', requestId: head.requestId }, 'relay reset the stream: origin request aborted');
        abort?.(new Error('relay cancelled the request'));
      }
    };
    stream.on('drain', onDrain);
    stream.once('close', cancel);
    if (body === null) stream.resume(); // FIN arrives; nothing to read

    const handler: Dispatcher.DispatchHandler = {
      onConnect: (a) => {
        abort = a;
        if (phase === 'done' || stream.destroyed) a(new Error('relay cancelled the request'));
      },
      onHeaders: (statusCode, rawHeaders, res, statusText) => {
        if (phase !== 'waiting') return false;
        resume = res;
        phase = 'streaming';
        const pairs: HeaderPairs = new Array(rawHeaders.length >> 1);
        for (let i = 0, j = 0; i < rawHeaders.length; i += 2, j++) pairs[j] = [rawHeaders[i]!.toString('latin1'), rawHeaders[i + 1]!.toString('latin1')];
        const checked = checkResponseHead({ status: statusCode, statusText: statusText ?? '', headers: pairs }, { method: head.method, upgrade: false });
        if (!checked.ok) {
          phase = 'done';
          abort?.(new Error('bad origin response'));
          this.log.warn({ requestId: head.requestId, reason: checked.reason }, 'bad response from origin');
          this.fail(stream, head, originBadResponse(checked.reason), started);
          return false;
        }
        let encoded: Buffer;
        try {
          encoded = encodeResponseHead({ status: statusCode, statusText: statusText ?? '', headers: checked.headers });
        } catch (e) {
          // Over the head limits: the origin's answer cannot cross the tunnel; say so.
          phase = 'done';
          abort?.(new Error('response head too large'));
          this.fail(stream, head, { status: 502, code: 'origin_response_head_too_large', source: 'origin', message: `The origin's response head is over the tunnel's limits (${(e as Error).message}).` }, started);
          return false;
        }
        this.hooks.onResponse?.(statusCode, started);
        return stream.write(encoded);
      },
      onData: (chunk) => (phase === 'streaming' ? stream.write(chunk) : false),
      onComplete: () => {
        if (phase !== 'streaming') return;
        phase = 'done';
        stream.off('drain', onDrain);
        stream.off('close', cancel);
        stream.end();
      },
      onError: (err) => {
        stream.off('drain', onDrain);
        stream.off('close', cancel);
        if (phase === 'done') return;
        if (phase === 'streaming') {
          // Mid-body failure: reset, so the client sees an aborted response, never a short one.
          phase = 'done';
          this.log.info({ requestId: head.requestId, err: err.message }, 'origin failed mid-response');
          stream.destroy();
          return;
        }
        phase = 'done';
        const f = classifyOriginError(err);
        // A pooled socket the origin closed under us: retry once if that is safe.
        if (attempt === 0 && f.code === 'origin_reset' && body === null && RETRYABLE_METHODS.has(head.method) && !stream.destroyed) {
          return this.proxyHttp(stream, head, rule, started, 1);
        }
        this.fail(stream, head, f, started);
      },
    };
    pool.dispatch(
      {
        method: head.method,
        path,
        headers,
        body,
        // Requests are not pipelined behind each other on one origin socket.
        blocking: false,
        idempotent: RETRYABLE_METHODS.has(head.method),
        upgrade: null,
      } as Dispatcher.DispatchOptions,
      handler,
    );
  }

  /** WebSocket (or any HTTP upgrade) to the origin; after a 101 the stream is a raw pipe. */
  private upgrade(stream: YamuxStream, head: RequestHead, rule: CompiledRule, started: bigint): void {
    const svc = rule.service as Extract<CompiledRule['service'], { kind: 'http' | 'unix' }>;
    const o = rule.originRequest;
    // checkRequestHead has run: one Host, legal names, values, method and
    // path, so http.request below has nothing to throw on.
    const headers: Record<string, string | string[]> = {};
    const named = connectionOptions(head.headers);
    let xff: string | undefined;
    for (const [k, v] of head.headers) {
      const lk = k.toLowerCase();
      // Upgrade is the one hop-by-hop header an upgrade passes on, with its own Connection below.
      if ((lk !== 'upgrade' && isHopHeader(lk, named)) || isOursToSet(lk)) continue;
      if (lk === 'x-forwarded-for') {
        xff = xff === undefined ? v : `${xff}, ${v}`;
        continue;
      }
      const prev = headers[lk];
      headers[lk] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    headers['connection'] = 'Upgrade';
    if (o.httpHostHeader) headers['host'] = o.httpHostHeader;
    headers['x-forwarded-for'] = xff === undefined ? head.clientIp : `${xff}, ${head.clientIp}`;
    headers['x-forwarded-proto'] = head.scheme;
    headers['x-forwarded-host'] = head.host;
    headers['x-real-ip'] = head.clientIp;
    headers['tunnel-connecting-ip'] = head.clientIp;
    headers['tunnel-request-id'] = head.requestId;
    const isTls = svc.kind === 'http' && svc.url.protocol === 'https:';
    const reqOpts: https.RequestOptions = {
      method: head.method,
      path: head.path,
      headers,
      timeout: o.connectTimeout,
      ...(svc.kind === 'unix'
        ? { socketPath: svc.socketPath }
        : { host: svc.url.hostname, port: svc.url.port || (isTls ? 443 : 80) }),
      // node's https would take SNI and the name it verifies from the Host header (the public hostname);
      // like undici for pooled requests, use the origin URL's host (no SNI for an IP: '' turns it off).
      ...(isTls ? { servername: sniFor(svc.url.hostname), ...this.pools.tls(o) } : {}),
    };
    const req = (isTls ? https : http).request(reqOpts);
    let settled = false;
    req.on('upgrade', (res, socket: Duplex, rest: Buffer) => this.guard(stream, head.requestId, () => {
      settled = true;
      req.setTimeout(0);
      socket.on('error', () => stream.destroy());
      stream.on('close', () => socket.destroy());
      socket.on('close', () => stream.destroy());
      if (!this.writeUpgradeAnswer(stream, head, res, 101, started, () => socket.destroy())) return;
      if (rest.length > 0) stream.write(rest);
      stream.resume();
      stream.pipe(socket);
      socket.pipe(stream);
    }));
    req.on('response', (res) => this.guard(stream, head.requestId, () => {
      settled = true;
      if (!this.writeUpgradeAnswer(stream, head, res, 502, started, () => res.destroy())) return;
      res.on('error', () => stream.destroy());
      res.pipe(stream);
    }));
    req.on('timeout', () => req.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => {
      if (settled) return stream.destroy();
      settled = true;
      this.fail(stream, head, classifyOriginError(err), started);
    });
    stream.once('close', () => {
      if (!settled) req.destroy();
    });
    req.end();
  }

  /**
   * The origin's answer to an upgrade request (101, or a plain refusal), checked
   * and framed onto the stream; false, with the stream failed and `drop` called,
   * when it is hostile or too large to frame.
   */
  private writeUpgradeAnswer(stream: YamuxStream, head: RequestHead, res: http.IncomingMessage, fallbackStatus: number, started: bigint, drop: () => void): boolean {
    const checked = checkResponseHead({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', headers: pairsOf(res.rawHeaders) }, { method: head.method, upgrade: true });
    if (!checked.ok) {
      drop();
      this.log.warn({ requestId: head.requestId, reason: checked.reason }, 'bad upgrade answer from origin');
      this.fail(stream, head, originBadResponse(checked.reason), started);
      return false;
    }
    const status = res.statusCode ?? fallbackStatus;
    const encoded = tryEncodeHead(status, res.statusMessage ?? '', checked.headers);
    if (!encoded) {
      drop();
      this.fail(stream, head, HEAD_TOO_LARGE, started);
      return false;
    }
    stream.write(encoded);
    this.hooks.onResponse?.(status, started);
    return true;
  }

  async close(): Promise<void> {
    await this.pools.close();
  }
}

/** SNI for an origin host: none for an IP address (TLS forbids it; the certificate is then checked against the IP). */
function sniFor(hostname: string): string {
  return isIP(hostname.replace(/^\[|\]$/g, '')) ? '' : hostname;
}

const HEAD_TOO_LARGE: OriginFailure = { status: 502, code: 'origin_response_head_too_large', source: 'origin', message: "The origin's response head is over the tunnel's limits." };

function tryEncodeHead(status: number, statusText: string, headers: Array<[string, string]>): Buffer | null {
  try {
    return encodeResponseHead({ status, statusText, headers });
  } catch {
    return null;
  }
}

function pairsOf(raw: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

function hasRequestBody(head: RequestHead): boolean {
  for (const [k, v] of head.headers) {
    const lk = k.toLowerCase();
    if (lk === 'transfer-encoding') return true;
    if (lk === 'content-length' && v !== '0') return true;
  }
  return false;
}

function hasContentLength(head: RequestHead): boolean {
  return head.headers.some(([k]) => k.toLowerCase() === 'content-length');
}

function bufferBody(stream: YamuxStream, limit: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    stream.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        stream.pause();
        resolve(null);
        return;
      }
      parts.push(c);
    });
    stream.once('end', () => resolve(Buffer.concat(parts, n)));
    stream.once('error', reject);
    stream.resume();
  });
}
