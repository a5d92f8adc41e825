import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  checkRequestHead,
  checkResponseHead,
  connectionOptions,
  isFieldValue,
  isHopHeader,
  isOriginForm,
  isToken,
  type HeaderPairs,
  type RequestHead,
  type ResponseHead,
} from '../src/index.js';

const req = (over: Partial<RequestHead> = {}): RequestHead => ({
  kind: 'http',
  method: 'GET',
  path: '/a?b=c',
  host: 'app.test',
  scheme: 'http',
  clientIp: '127.0.0.1',
  requestId: 'r1',
  headers: [
    ['Host', 'app.test'],
    ['Accept', '*/*'],
  ],
  ...over,
});

const res = (over: Partial<ResponseHead> = {}): ResponseHead => ({ status: 200, statusText: 'OK', headers: [['Content-Type', 'text/plain']], ...over });
const GET = { method: 'GET', upgrade: false };

function reason(r: { ok: boolean; reason?: string }): string | undefined {
  return r.ok ? undefined : r.reason;
}

describe('field rules', () => {
  it('tokens are RFC 9110 tchar only', () => {
    for (const t of ['GET', 'x-custom', "!#$%&'*+-.^_`|~09azAZ"]) expect(isToken(t)).toBe(true);
    for (const t of ['', 'a b', 'a:b', 'a\r\nb', 'a\x00', '(x)', 'é', 'a"', 'a/b']) expect(isToken(t)).toBe(false);
  });

  it('field values refuse CR, LF, NUL, other CTLs and DEL; allow HTAB, SP, VCHAR, obs-text', () => {
    expect(isFieldValue('text/html; q=0.9\tx \x80\xff')).toBe(true);
    expect(isFieldValue('')).toBe(true);
    for (const c of [0, 1, 8, 10, 13, 0x1f, 0x7f, 0x100, 0x10d]) expect(isFieldValue(`a${String.fromCharCode(c)}b`)).toBe(false);
  });

  it('every single char outside the allowed set is refused', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x2ff }), (c) => {
        const allowed = c === 9 || (c >= 0x20 && c !== 0x7f && c <= 0xff);
        expect(isFieldValue(String.fromCharCode(c))).toBe(allowed);
      }),
      { seed: 9, numRuns: 500 },
    );
  });

  it('origin-form targets start with / and hold no space, CTL or fragment', () => {
    for (const p of ['/', '/a/b?c=d&e', '//evil.test/x', '/%00', '/caf\xe9']) expect(isOriginForm(p)).toBe(true);
    for (const p of ['', 'a', 'http://evil/', '/a b', '/a\r\nX: y', '/a#frag', '/\x7f', '*']) expect(isOriginForm(p)).toBe(false);
  });
});

describe('checkRequestHead', () => {
  it('accepts an ordinary head, bodyless', () => {
    const r = checkRequestHead(req());
    expect(r).toEqual({ ok: true, body: { kind: 'none' } });
  });

  it('refuses a bad method, CONNECT, and targets that are not origin-form', () => {
    expect(reason(checkRequestHead(req({ method: 'GE T' })))).toMatch(/method/);
    expect(reason(checkRequestHead(req({ method: 'GET\r\n' })))).toMatch(/method/);
    expect(reason(checkRequestHead(req({ method: 'CONNECT', path: '/' })))).toMatch(/CONNECT/);
    expect(reason(checkRequestHead(req({ path: 'http://evil.test/' })))).toMatch(/origin-form/);
    expect(reason(checkRequestHead(req({ path: '/x\r\nHost: evil' })))).toMatch(/origin-form/);
    expect(reason(checkRequestHead(req({ path: '*' })))).toMatch(/origin-form/);
    expect(checkRequestHead(req({ method: 'OPTIONS', path: '*' })).ok).toBe(true);
  });

  it('wants exactly one Host header, equal to the head host', () => {
    expect(reason(checkRequestHead(req({ headers: [['Accept', '*/*']] })))).toMatch(/no Host/);
    expect(reason(checkRequestHead(req({ headers: [['Host', 'app.test'], ['host', 'evil.test']] })))).toMatch(/Host/);
    expect(reason(checkRequestHead(req({ headers: [['Host', 'app.test'], ['host', 'app.test']] })))).toMatch(/more than one Host/);
    expect(reason(checkRequestHead(req({ headers: [['Host', 'evil.test']] })))).toMatch(/differs/);
    expect(reason(checkRequestHead(req({ host: 'a/b', headers: [['Host', 'a/b']] })))).toMatch(/Host/);
    expect(checkRequestHead(req({ host: '[::1]:8080', headers: [['Host', '[::1]:8080']] })).ok).toBe(true);
  });

  it('refuses CR LF and NUL in header names and values', () => {
    expect(reason(checkRequestHead(req({ headers: [['Host', 'app.test'], ['X-A', 'v\r\nX-Injected: 1']] })))).toMatch(/X-A/);
    expect(reason(checkRequestHead(req({ headers: [['Host', 'app.test'], ['X-A', 'v\x00']] })))).toMatch(/X-A/);
    expect(reason(checkRequestHead(req({ headers: [['Host', 'app.test'], ['X A', 'v']] })))).toMatch(/token/);
    expect(reason(checkRequestHead(req({ headers: [['Host', 'app.test'], ['', 'v']] })))).toMatch(/token/);
  });

  it('frames the body: one Content-Length, or chunked; conflicts refused', () => {
    const h = (...extra: HeaderPairs) => req({ method: 'POST', headers: [['Host', 'app.test'], ...extra] });
    expect(checkRequestHead(h(['Content-Length', '5']))).toEqual({ ok: true, body: { kind: 'length', length: 5 } });
    expect(checkRequestHead(h(['Content-Length', '5'], ['content-length', '5']))).toEqual({ ok: true, body: { kind: 'length', length: 5 } });
    expect(checkRequestHead(h(['Content-Length', '0']))).toEqual({ ok: true, body: { kind: 'none' } });
    expect(checkRequestHead(h(['Transfer-Encoding', 'gzip, chunked']))).toEqual({ ok: true, body: { kind: 'stream' } });
    expect(reason(checkRequestHead(h(['Content-Length', '5'], ['Content-Length', '6'])))).toMatch(/two different/);
    expect(reason(checkRequestHead(h(['Content-Length', '5'], ['Transfer-Encoding', 'chunked'])))).toMatch(/both/);
    expect(reason(checkRequestHead(h(['Transfer-Encoding', 'xchunked'])))).toMatch(/chunked/);
    expect(reason(checkRequestHead(h(['Transfer-Encoding', 'chunked, gzip'])))).toMatch(/chunked/);
    expect(reason(checkRequestHead(h(['Content-Length', '-1'])))).toMatch(/not a number/);
    expect(reason(checkRequestHead(h(['Content-Length', '1e3'])))).toMatch(/not a number/);
    expect(reason(checkRequestHead(h(['Content-Length', '5, 5'])))).toMatch(/not a number/);
  });
});

describe('checkResponseHead', () => {
  it('passes an ordinary head and frames its body', () => {
    expect(checkResponseHead(res(), GET)).toEqual({ ok: true, headers: [['Content-Type', 'text/plain']], body: { kind: 'stream' } });
    const r = checkResponseHead(res({ headers: [['Content-Length', ' 3 ']] }), GET);
    expect(r).toEqual({ ok: true, headers: [['Content-Length', '3']], body: { kind: 'length', length: 3 } });
  });

  it('refuses bad reason-phrase bytes: NUL, 0x01, DEL, CR LF', () => {
    for (const t of ['O\x00K', 'O\x01K', 'O\x7fK', 'OK\r\nX-Injected: 1', 'OK\n']) expect(reason(checkResponseHead(res({ statusText: t }), GET))).toMatch(/status text/);
    expect(checkResponseHead(res({ statusText: 'Très\tbien \xff' }), GET).ok).toBe(true);
  });

  it('refuses statuses outside 200..599, interim answers and a 101 nobody asked for', () => {
    expect(reason(checkResponseHead(res({ status: 99 }), GET))).toMatch(/outside/);
    expect(reason(checkResponseHead(res({ status: 600 }), GET))).toMatch(/outside/);
    expect(reason(checkResponseHead(res({ status: 100 }), GET))).toMatch(/interim/);
    expect(reason(checkResponseHead(res({ status: 101 }), GET))).toMatch(/101/);
    expect(checkResponseHead(res({ status: 101, headers: [['Upgrade', 'websocket'], ['Connection', 'Upgrade']] }), { method: 'GET', upgrade: true })).toEqual({
      ok: true,
      headers: [['Upgrade', 'websocket']],
      body: { kind: 'none' },
    });
  });

  it('refuses conflicting lengths and a 204 with a length; HEAD, 204 and 304 have no body', () => {
    expect(reason(checkResponseHead(res({ headers: [['Content-Length', '1'], ['Content-Length', '2']] }), GET))).toMatch(/two different/);
    expect(reason(checkResponseHead(res({ headers: [['Content-Length', '1'], ['Transfer-Encoding', 'chunked']] }), GET))).toMatch(/both/);
    expect(reason(checkResponseHead(res({ status: 204, headers: [['Content-Length', '4']] }), GET))).toMatch(/204/);
    expect(checkResponseHead(res({ status: 204, headers: [['Content-Length', '0']] }), GET)).toEqual({ ok: true, headers: [], body: { kind: 'none' } });
    expect(checkResponseHead(res({ status: 304, headers: [['Content-Length', '40']] }), GET)).toMatchObject({ ok: true, body: { kind: 'none' } });
    expect(checkResponseHead(res({ headers: [['Content-Length', '40']] }), { method: 'HEAD', upgrade: false })).toMatchObject({ ok: true, body: { kind: 'none' } });
    // Two equal lengths become one.
    expect(checkResponseHead(res({ headers: [['Content-Length', '2'], ['content-length', '2']] }), GET)).toMatchObject({ ok: true, headers: [['Content-Length', '2']] });
  });

  it('drops hop-by-hop headers and every header named in Connection', () => {
    const r = checkResponseHead(
      res({
        headers: [
          ['Connection', 'keep-alive, X-Secret'],
          ['Keep-Alive', 'timeout=5'],
          ['Transfer-Encoding', 'chunked'],
          ['X-Secret', 'internal'],
          ['Proxy-Authenticate', 'Basic'],
          ['Upgrade', 'h2c'],
          ['Trailer', 'X'],
          ['X-Kept', 'yes'],
        ],
      }),
      GET,
    );
    expect(r).toEqual({ ok: true, headers: [['X-Kept', 'yes']], body: { kind: 'stream' } });
  });

  it('refuses bad header names and values', () => {
    expect(reason(checkResponseHead(res({ headers: [['X-A', 'a\r\nSet-Cookie: x=1']] }), GET))).toMatch(/X-A/);
    expect(reason(checkResponseHead(res({ headers: [['X A', 'a']] }), GET))).toMatch(/token/);
    expect(reason(checkResponseHead(res({ headers: [['X-A\r\n', 'a']] }), GET))).toMatch(/token/);
  });

  it('whatever it accepts, node can write', async () => {
    const http = await import('node:http');
    const anyByte = fc.integer({ min: 0, max: 0x1ff }).map((c) => String.fromCharCode(c));
    const str = fc.array(fc.oneof(anyByte, fc.constantFrom('a', ' ', ':', '\r\n', '\t')), { maxLength: 12 }).map((a) => a.join(''));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), str, fc.array(fc.tuple(str, str), { maxLength: 4 }), (status, statusText, headers) => {
        const r = checkResponseHead({ status, statusText, headers }, GET);
        if (!r.ok) return;
        const out = new http.ServerResponse(new http.IncomingMessage(null as never));
        const flat = r.headers.flat();
        expect(() => out.writeHead(status, statusText || undefined, flat)).not.toThrow();
      }),
      { seed: 42, numRuns: 2000 },
    );
  });
});

describe('connection options', () => {
  it('collects lower-cased tokens of every Connection header, ignoring junk and names already hop-by-hop', () => {
    expect(connectionOptions([['X', 'y']])).toBeNull();
    const s = connectionOptions([
      ['Connection', 'Keep-Alive, X-A'],
      ['connection', ' x-b ,, bad value '],
    ]);
    expect([...s!].sort()).toEqual(['x-a', 'x-b']);
    expect(connectionOptions([['Connection', 'keep-alive, Upgrade, close']])).toBeNull();
    expect(isHopHeader('x-a', s)).toBe(true);
    expect(isHopHeader('te', null)).toBe(true);
    expect(isHopHeader('proxy-authorization', null)).toBe(true);
    expect(isHopHeader('x-c', s)).toBe(false);
  });
});
