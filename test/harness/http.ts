import { request as undiciRequest, type Dispatcher } from 'undici';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  header(name: string): string | undefined;
  json<T = unknown>(): T;
}

/**
 * One request to a relay's public listener with a chosen Host header (fetch
 * would overwrite Host; undici's request keeps it).
 */
export async function req(
  url: string,
  o: { host?: string; method?: string; headers?: Record<string, string>; body?: string | Buffer; dispatcher?: Dispatcher } = {},
): Promise<Reply> {
  const r = await undiciRequest(url, {
    method: (o.method ?? 'GET') as Dispatcher.HttpMethod,
    headers: { ...(o.host ? { host: o.host } : {}), ...(o.headers ?? {}) },
    body: o.body,
    dispatcher: o.dispatcher,
  });
  const text = await r.body.text();
  const headers = r.headers as Record<string, string | string[] | undefined>;
  return {
    status: r.statusCode,
    headers,
    text,
    header: (n) => {
      const v = headers[n.toLowerCase()];
      return Array.isArray(v) ? v.join(', ') : v;
    },
    json: <T,>() => JSON.parse(text) as T,
  };
}
