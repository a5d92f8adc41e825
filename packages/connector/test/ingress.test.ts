import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ORIGIN_REQUEST_DEFAULTS,
  parseConfig,
  parseService,
  singleServiceIngress,
  type IngressRule,
} from '../src/ingress/config.js';
import { compileIngress, describeRule, ruleForUrl, type Ingress } from '../src/ingress/ingress.js';

const yaml = (...lines: string[]): string => lines.join('\n') + '\n';

function ingressFrom(text: string): Ingress {
  const c = parseConfig(text, 'config.yml');
  return compileIngress(c.ingress, c.originRequest);
}

const rule = (hostname: string | undefined, path: string | undefined, service = 'hello_world'): IngressRule => ({
  ...(hostname !== undefined && { hostname }),
  ...(path !== undefined && { path }),
  service: parseService(service),
  originRequest: {},
});

describe('Ingress.match', () => {
  const ing = ingressFrom(
    yaml(
      'ingress:',
      '  - hostname: api.example.com', //          0
      '    path: ^/v2/',
      '    service: http://localhost:2',
      '  - hostname: api.example.com', //          1
      '    service: http://localhost:1',
      '  - hostname: "*.example.com"', //          2
      '    service: http://localhost:3',
      '  - hostname: special.example.com', //      3: shadowed by the wildcard above
      '    service: http://localhost:4',
      '  - path: \\.(png|jpg)$', //                 4: any host
      '    service: http://localhost:5',
      '  - service: http_status:404', //           5
    ),
  );
  const idx = (host: string, path: string) => ing.match(host, path).index;

  it('tries rules in order, first match wins', () => {
    expect(idx('api.example.com', '/v2/users')).toBe(0);
    expect(idx('api.example.com', '/v1/users')).toBe(1);
    expect(idx('special.example.com', '/')).toBe(2); // earlier wildcard wins over a later exact rule
    expect(idx('other.org', '/logo.png')).toBe(4);
    expect(idx('other.org', '/')).toBe(5);
  });

  it('matches *.example.com against any depth of subdomain, but not the bare domain', () => {
    expect(idx('a.example.com', '/')).toBe(2);
    expect(idx('a.b.example.com', '/')).toBe(2);
    expect(idx('example.com', '/')).toBe(5);
    expect(idx('notexample.com', '/')).toBe(5);
    expect(idx('a.example.com.evil.org', '/')).toBe(5);
  });

  it('ignores case and the port in the Host', () => {
    expect(idx('API.Example.COM', '/v2/')).toBe(0);
    expect(idx('api.example.com:8443', '/v2/')).toBe(0);
    expect(idx('A.B.EXAMPLE.COM:80', '/')).toBe(2);
    expect(idx('', '/')).toBe(5);
  });

  it('tests the path regex unanchored, against the path without the query string', () => {
    expect(idx('api.example.com', '/v2/x?q=1')).toBe(0);
    expect(idx('api.example.com', '/v1/x?next=/v2/')).toBe(1);
    expect(idx('x.org', '/img/a.png?size=2')).toBe(4);
    expect(idx('x.org', '/img/a.png.html')).toBe(5);
    expect(idx('x.org', '/deep/dir/b.jpg')).toBe(4);
  });

  it('returns the same result object each time (no per-request allocation)', () => {
    expect(ing.match('api.example.com', '/v2/')).toBe(ing.match('API.EXAMPLE.COM:1', '/v2/a'));
    expect(ing.match('x', '/').rule).toBe(ing.rules[5]);
  });

  it('handles IPv6 literals in the Host', () => {
    const v6 = compileIngress([rule('a.example.com', undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(v6.match('[::1]:8080', '/').index).toBe(1);
    expect(v6.match('::1', '/').index).toBe(1);
  });

  it('translates a leading Go-style (?i) into a case-insensitive regex', () => {
    const ci = compileIngress([rule(undefined, '(?i)^/admin'), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    expect(ci.match('h', '/ADMIN/x').index).toBe(0);
    expect(ci.match('h', '/user').index).toBe(1);
  });
});

describe('originRequest merging', () => {
  it('merges per-rule overrides over the top-level settings, key by key', () => {
    const ing = ingressFrom(
      yaml(
        'originRequest:',
        '  connectTimeout: 5s',
        '  noTLSVerify: true',
        '  httpHostHeader: top.internal',
        'ingress:',
        '  - hostname: a.example.com',
        '    service: https://localhost:8443',
        '    originRequest:',
        '      noTLSVerify: false',
        '      idleTimeout: 1m',
        '  - service: http://localhost:8000',
      ),
    );
    expect(ing.rules[0]!.originRequest).toEqual({
      ...ORIGIN_REQUEST_DEFAULTS,
      connectTimeout: 5_000,
      httpHostHeader: 'top.internal',
      noTLSVerify: false,
      idleTimeout: 60_000,
    });
    expect(ing.rules[1]!.originRequest).toEqual({
      ...ORIGIN_REQUEST_DEFAULTS,
      connectTimeout: 5_000,
      httpHostHeader: 'top.internal',
      noTLSVerify: true,
    });
  });
});

describe('compileIngress', () => {
  it('refuses rule lists parseConfig would reject', () => {
    expect(() => compileIngress([], ORIGIN_REQUEST_DEFAULTS)).toThrow('no rules');
    expect(() => compileIngress([rule('a.com', undefined)], ORIGIN_REQUEST_DEFAULTS)).toThrow('ingress[0]: the last rule must be a catch-all');
    expect(() => compileIngress([rule(undefined, undefined), rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS)).toThrow(
      'ingress[0]: a catch-all rule must be the last rule',
    );
  });

  it('compiles the --url rule', () => {
    const ing = compileIngress(singleServiceIngress('http://localhost:8000'), ORIGIN_REQUEST_DEFAULTS);
    expect(ing.match('anything.example.com', '/x').index).toBe(0);
    expect(ing.rules[0]!.originRequest).toBe(ORIGIN_REQUEST_DEFAULTS);
  });
});

describe('describeRule and ruleForUrl', () => {
  const ing = ingressFrom(
    yaml(
      'ingress:',
      '  - hostname: app.example.com',
      '    path: ^/api',
      '    service: http://localhost:8000',
      '  - service: http_status:404',
    ),
  );

  it('describes a rule in cloudflared layout, numbered from 1', () => {
    expect(describeRule(ing.rules[0]!, 0)).toBe('rule #1\n\thostname: app.example.com\n\tpath: ^/api\n\tservice: http://localhost:8000');
    expect(describeRule(ing.rules[1]!, 1)).toBe('rule #2\n\tservice: http_status:404');
  });

  it('finds the rule for a URL', () => {
    expect(ruleForUrl(ing, 'https://APP.example.com:8443/api/users?x=1')).toMatchObject({
      index: 0,
      hostname: 'app.example.com',
      path: '^/api',
      service: 'http://localhost:8000',
    });
    const miss = ruleForUrl(ing, 'https://app.example.com/');
    expect(miss).toMatchObject({ index: 1, hostname: undefined, path: undefined, service: 'http_status:404' });
  });

  it('asks for a scheme when the URL has no hostname', () => {
    expect(() => ruleForUrl(ing, 'app.example.com/api')).toThrow(
      '"app.example.com/api" is not a URL with a hostname; try e.g. https://app.example.com/path',
    );
  });
});

describe('properties', () => {
  // Hosts built from a small alphabet so that generated rules and hosts collide often.
  const label = fc.constantFrom('a', 'b', 'api', 'example', 'com');
  const host = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('.'));
  const anyHost = fc.oneof(host, fc.string().filter((s) => !s.startsWith('[')), host.map((h) => `${h.toUpperCase()}:8080`));
  const anyPath = fc.oneof(fc.string(), fc.constantFrom('/', '/api/x', '/img/a.png', '/api?x=/img'));
  const ruleArb = fc.record({
    hostname: fc.option(fc.oneof(host, host.map((h) => `*.${h}`)), { nil: undefined }),
    path: fc.option(fc.constantFrom('^/api', '\\.png$', '^/$', 'x'), { nil: undefined }),
  });

  it('a catch-all matches every host and path', () => {
    const ing = compileIngress([rule(undefined, undefined)], ORIGIN_REQUEST_DEFAULTS);
    fc.assert(
      fc.property(fc.string(), fc.string(), (h, p) => {
        expect(ing.match(h, p).index).toBe(0);
      }),
    );
  });

  it('match agrees with a naive reference implementation, and always finds a rule', () => {
    fc.assert(
      fc.property(fc.array(ruleArb.filter((r) => r.hostname !== undefined || r.path !== undefined), { maxLength: 6 }), anyHost, anyPath, (specific, h, p) => {
        const rules = [...specific.map((r) => rule(r.hostname, r.path)), rule(undefined, undefined)];
        const ing = compileIngress(rules, ORIGIN_REQUEST_DEFAULTS);
        const bareHost = (h.includes(':') && h.indexOf(':') === h.lastIndexOf(':') ? h.split(':')[0]! : h).toLowerCase();
        const barePath = p.split('?')[0]!;
        const expected = rules.findIndex(
          (r) =>
            (r.hostname === undefined ||
              (r.hostname.startsWith('*.')
                ? bareHost.endsWith(r.hostname.slice(1)) && bareHost.length > r.hostname.length - 1
                : bareHost === r.hostname)) &&
            (r.path === undefined || new RegExp(r.path).test(barePath)),
        );
        expect(ing.match(h, p).index).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });
});
