// Edges of Ingress.match and ruleForUrl that the main suite does not reach.
// Each ingress is compiled inside its test (not at describe time), so the
// mutation run sees the compiled rules too.
import { describe, expect, it } from 'vitest';
import { ORIGIN_REQUEST_DEFAULTS, parseService, type IngressRule } from '../src/ingress/config.js';
import { compileIngress, ruleForUrl } from '../src/ingress/ingress.js';

const rule = (hostname: string | undefined, path: string | undefined): IngressRule => ({
  ...(hostname !== undefined && { hostname }),
  ...(path !== undefined && { path }),
  service: parseService('hello_world'),
  originRequest: {},
});

describe('Ingress.match edges', () => {
  it('a wildcard covers names under its domain only: not the domain, not a name merely ending in it, not the bare suffix', () => {
    const ing = compileIngress([rule('*.example.com', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('a.example.com', '/').index).toBe(0);
    expect(ing.match('notexample.com', '/').index).toBe(1);
    expect(ing.match('example.com', '/').index).toBe(1);
    // A Host that is the suffix itself, leading dot included.
    expect(ing.match('.example.com', '/').index).toBe(1);
  });

  it('a Host with two colons is not host:port (an unbracketed IPv6 address has no port)', () => {
    const ing = compileIngress([rule('app.example.com', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('app.example.com:8443', '/').index).toBe(0);
    expect(ing.match('app.example.com:8443:1', '/').index).toBe(1);
  });

  it('the query string is never matched, even when the path before it is empty', () => {
    const ing = compileIngress([rule(undefined, '\\.png$'), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('x.org', '/a.png').index).toBe(0);
    expect(ing.match('x.org', '?a.png').index).toBe(1);
    expect(ing.match('x.org', '/?a.png').index).toBe(1);
  });

  it('rules built by hand with upper-case names match like parsed ones', () => {
    const ing = compileIngress([rule('*.Example.COM', undefined), rule('API.x.org', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('a.example.com', '/').index).toBe(0);
    expect(ing.match('api.X.org:1', '/').index).toBe(1);
  });

  it('a Host starting with [ is a bracketed literal: only up to its ] counts, so what follows never reaches a name rule', () => {
    const ing = compileIngress([rule('*.example.com', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('[a]x.example.com', '/').index).toBe(1);
    // Cut after the ], not before it: `[x.example.com` would end like the wildcard.
    expect(ing.match('[x.example.comm]', '/').index).toBe(1);
    // No ]: not a literal, the Host is compared whole like any other.
    expect(ing.match('[x.example.com', '/').index).toBe(0);
  });

  it('a Host that starts with a colon has an empty name: what follows is the port', () => {
    const ing = compileIngress([rule('*.example.com', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match(':a.example.com', '/').index).toBe(1);
  });

  it('a host-less rule with a path matches a request without a Host', () => {
    const ing = compileIngress([rule(undefined, '^/api'), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('', '/api/x').index).toBe(0);
    expect(ing.match('', '/web').index).toBe(1);
  });
});

describe('ruleForUrl: only a URL written with scheme:// and a hostname', () => {
  const ing = () => compileIngress([rule('app.example.com', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
  const refused = (url: string) => `"${url}" is not a URL with a hostname; try e.g. https://app.example.com/path`;

  it('a URL with an empty hostname is refused (file:///…)', () => {
    expect(() => ruleForUrl(ing(), 'file:///etc/passwd')).toThrow(refused('file:///etc/passwd'));
  });

  it('a URL the parser completes (http:host) is refused, even with a scheme:// later in it', () => {
    const url = 'http:app.example.com/?next=https://x';
    expect(new URL(url).hostname).toBe('app.example.com'); // WHATWG would take it
    expect(() => ruleForUrl(ing(), url)).toThrow(refused(url));
  });
});
