// Over 500 lines: config.yml's whole grammar, one describe per part (valid files, errors with their line, service, hostname, --url, durations), sharing the yaml()/problemsOf() helpers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  ORIGIN_REQUEST_DEFAULTS,
  loadConfig,
  parseConfig,
  parseHostname,
  parseService,
  resolveIngress,
  serviceToString,
  singleServiceIngress,
  type ConfigProblem,
} from '../src/ingress/config.js';
import { formatDuration, parseDuration } from '@tunnel/protocol';
import { problemsOf, yaml } from './config-problems.js';


/** The single problem a config has (fails if there are more, so stray errors show up). */
function onlyProblem(text: string): ConfigProblem {
  const problems = problemsOf(text);
  expect(problems).toHaveLength(1);
  return problems[0]!;
}

describe('parseConfig: valid files', () => {
  it('round-trips a full config with every key', () => {
    const text = yaml(
      'tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef', // 1
      'credentials-file: creds/tunnel.json', // 2
      'token-file: ~/tunnel.token', // 3
      'relays:', // 4
      '  - wss://relay-a.example.net:7844', // 5
      '  - ws://127.0.0.1:7844', // 6
      '  - https://control.example.net', // 7
      'ha-connections: 2', // 8
      'metrics: localhost:2000', // 9
      'grace-period: 1m30s', // 10
      'loglevel: debug', // 11
      'originRequest:', // 12
      '  connectTimeout: 10s', // 13
      '  keepAliveConnections: 50', // 14
      '  keepAliveTimeout: 2m', // 15
      '  httpHostHeader: internal.local', // 16
      '  originServerName: origin.internal', // 17
      '  caPool: /etc/ssl/origin-ca.pem', // 18
      '  noTLSVerify: true', // 19
      '  disableChunkedEncoding: true', // 20
      '  idleTimeout: 5m', // 21
      'ingress:', // 22
      '  - hostname: App.Example.com', // 23
      '    service: http://localhost:8000', // 24
      '  - hostname: "*.example.com"', // 25
      '    path: ^/api/', // 26
      '    service: https://10.0.0.5:8443/base', // 27
      '    originRequest:', // 28
      '      noTLSVerify: false', // 29
      '      caPool: ca.pem', // 30
      '  - hostname: ssh.example.com', // 31
      '    service: tcp://localhost:22', // 32
      '  - hostname: sock.example.com', // 33
      '    service: unix:/run/app.sock', // 34
      '  - hostname: hello.example.com', // 35
      '    service: hello_world', // 36
      '  - service: http_status:404', // 37
    );
    const c = parseConfig(text, '/etc/tunnel/config.yml');
    expect(c).toEqual({
      source: '/etc/tunnel/config.yml',
      tunnel: '6ff42ae2-765d-4adf-8112-31c55c1551ef',
      tunnelAt: { line: 1, column: 9 },
      credentialsFile: '/etc/tunnel/creds/tunnel.json',
      tokenFile: join(homedir(), 'tunnel.token'),
      relays: ['wss://relay-a.example.net:7844', 'ws://127.0.0.1:7844', 'https://control.example.net'],
      haConnections: 2,
      metrics: { host: 'localhost', port: 2000 },
      gracePeriod: 90_000,
      loglevel: 'debug',
      originRequest: {
        connectTimeout: 10_000,
        keepAliveConnections: 50,
        keepAliveTimeout: 120_000,
        httpHostHeader: 'internal.local',
        originServerName: 'origin.internal',
        caPool: '/etc/ssl/origin-ca.pem',
        noTLSVerify: true,
        disableChunkedEncoding: true,
        idleTimeout: 300_000,
      },
      ingress: [
        { hostname: 'app.example.com', service: { kind: 'http', url: new URL('http://localhost:8000') }, originRequest: {}, line: 23 },
        {
          hostname: '*.example.com',
          path: '^/api/',
          service: { kind: 'http', url: new URL('https://10.0.0.5:8443/base') },
          originRequest: { noTLSVerify: false, caPool: '/etc/tunnel/ca.pem' },
          line: 25,
        },
        { hostname: 'ssh.example.com', service: { kind: 'tcp', host: 'localhost', port: 22 }, originRequest: {}, line: 31 },
        { hostname: 'sock.example.com', service: { kind: 'unix', socketPath: '/run/app.sock' }, originRequest: {}, line: 33 },
        { hostname: 'hello.example.com', service: { kind: 'hello_world' }, originRequest: {}, line: 35 },
        { service: { kind: 'status', status: 404 }, originRequest: {}, line: 37 },
      ],
    });
    expect(c.ingress.map((r) => serviceToString(r.service))).toEqual([
      'http://localhost:8000',
      'https://10.0.0.5:8443/base',
      'tcp://localhost:22',
      'unix:/run/app.sock',
      'hello_world',
      'http_status:404',
    ]);
  });

  it('fills in defaults', () => {
    const c = parseConfig(yaml('tunnel: web', 'ingress:', '  - service: http://localhost:8080'), 'config.yml');
    expect(c.haConnections).toBe(4);
    expect(c.gracePeriod).toBe(30_000);
    expect(c.loglevel).toBe('info');
    expect(c.relays).toEqual([]);
    expect(c.metrics).toBeUndefined();
    expect(c.credentialsFile).toBeUndefined();
    expect(c.originRequest).toEqual({
      connectTimeout: 30_000,
      keepAliveConnections: 100,
      keepAliveTimeout: 90_000,
      noTLSVerify: false,
      disableChunkedEncoding: false,
      idleTimeout: 0,
    });
    expect(c.originRequest).toEqual(ORIGIN_REQUEST_DEFAULTS);
  });

  it('accepts an empty file and empty sections (rules then come from --url)', () => {
    expect(parseConfig('', 'config.yml').ingress).toEqual([]);
    const c = parseConfig(yaml('# nothing here', 'originRequest:', 'ingress:'), 'config.yml');
    expect(c.ingress).toEqual([]);
    expect(c.originRequest).toEqual(ORIGIN_REQUEST_DEFAULTS);
  });

  it('treats hostname "*" and an empty path as a catch-all', () => {
    const c = parseConfig(yaml('ingress:', '  - hostname: a.example.com', '    service: hello_world', '  - hostname: "*"', '    path: ""', '    service: http_status:503'), 'c.yml');
    expect(c.ingress[1]).toEqual({ service: { kind: 'status', status: 503 }, originRequest: {}, line: 4 });
  });

  it('supports YAML anchors and merge keys for shared originRequest blocks', () => {
    const c = parseConfig(
      yaml(
        'originRequest: &common',
        '  connectTimeout: 5s',
        'ingress:',
        '  - hostname: a.example.com',
        '    service: http://localhost:1',
        '    originRequest:',
        '      <<: *common',
        '      noTLSVerify: true',
        '  - service: http_status:404',
      ),
      'c.yml',
    );
    expect(c.ingress[0]!.originRequest).toEqual({ connectTimeout: 5000, noTLSVerify: true });
  });

  it('loadConfig reads a file, and reports a missing one as a ConfigError', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunnel-config-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.yml');
    writeFileSync(file, yaml('credentials-file: t.json', 'ingress:', '  - service: hello_world'));
    const c = loadConfig(file);
    expect(c.source).toBe(file);
    expect(c.credentialsFile).toBe(join(dir, 't.json'));

    const missing = join(dir, 'nope.yml');
    expect(() => loadConfig(missing)).toThrow(ConfigError);
    expect(() => loadConfig(missing)).toThrow(`${missing}: cannot read config file: no such file`);
  });
});

describe('parseConfig: errors name the line', () => {
  it('reports an unknown service scheme at the value, in FILE:LINE:COL form', () => {
    const text = yaml(
      'tunnel: web', // 1
      'credentials-file: t.json', // 2
      'ingress:', // 3
      '  - hostname: a.example.com', // 4
      '    service: http://localhost:8000', // 5
      '  - hostname: b.example.com', // 6
      '    service: htp://x', // 7
      '  - service: http_status:404', // 8
    );
    expect(onlyProblem(text)).toEqual({
      line: 7,
      column: 14,
      message:
        'ingress[1].service: unknown service scheme "htp://x" (expected http://, https://, unix:, tcp://, http_status:NNN, hello_world)',
    });
    expect(() => parseConfig(text, 'config.yml')).toThrow(
      'config.yml:7:14: ingress[1].service: unknown service scheme "htp://x" (expected http://, https://, unix:, tcp://, http_status:NNN, hello_world)',
    );
  });

  it('reports unknown keys at the key, with a did-you-mean suggestion', () => {
    const problems = problemsOf(
      yaml(
        'tunel: web', // 1
        'ingress:', // 2
        '  - hostnme: a.example.com', // 3
        '    hostname: a.example.com', // 4
        '    service: hello_world', // 5
        '    originRequest:', // 6
        '      connect-timeout: 5s', // 7
        '  - service: hello_world', // 8
        'noTLSVerify: true', // 9
        'frobnicate: 1', // 10
      ),
    );
    expect(problems).toEqual([
      { line: 1, column: 1, message: 'tunel: unknown key (did you mean "tunnel"?)' },
      { line: 3, column: 5, message: 'ingress[0].hostnme: unknown key (did you mean "hostname"?)' },
      { line: 7, column: 7, message: 'ingress[0].originRequest.connect-timeout: unknown key (did you mean "connectTimeout"?)' },
      { line: 9, column: 1, message: 'noTLSVerify: unknown key ("noTLSVerify" belongs under originRequest:)' },
      {
        line: 10,
        column: 1,
        message:
          'frobnicate: unknown key (expected one of: tunnel, credentials-file, token-file, relays, ha-connections, metrics, grace-period, loglevel, originRequest, ingress)',
      },
    ]);
  });

  it('does not also report a misspelt rule as a misplaced catch-all', () => {
    const p = problemsOf(yaml('ingress:', '  - hostnme: a.example.com', '    service: hello_world', '  - service: hello_world'));
    expect(p).toEqual([{ line: 2, column: 5, message: 'ingress[0].hostnme: unknown key (did you mean "hostname"?)' }]);
  });

  it('rejects a status code outside 100..599', () => {
    expect(onlyProblem(yaml('ingress:', '  - service: http_status:99'))).toEqual({
      line: 2,
      column: 14,
      message: 'ingress[0].service: invalid status code "99" in "http_status:99" (expected http_status:NNN with NNN from 100 to 599)',
    });
    expect(onlyProblem(yaml('ingress:', '  - service: http_status:600')).message).toMatch(/invalid status code "600"/);
    expect(onlyProblem(yaml('ingress:', '  - service: http_status:abc')).message).toMatch(/invalid status code "abc"/);
  });

  it('rejects a path that is not a valid regular expression', () => {
    const text = yaml('ingress:', '  - hostname: a.example.com', '    path: "^/api/(v1"', '    service: hello_world', '  - service: hello_world');
    expect(onlyProblem(text)).toEqual({
      line: 3,
      column: 11,
      message: 'ingress[0].path: invalid regular expression "^/api/(v1": Unterminated group',
    });
  });

  it('requires the last rule to be a catch-all, naming the last rule', () => {
    const text = yaml(
      'ingress:', // 1
      '  - hostname: a.example.com', // 2
      '    service: hello_world', // 3
      '  - hostname: b.example.com', // 4
      '    path: ^/x', // 5
      '    service: hello_world', // 6
    );
    expect(onlyProblem(text)).toEqual({
      line: 4,
      column: 5,
      message:
        'ingress[1]: the last ingress rule must be a catch-all (no hostname, no path) so every request matches a rule, e.g. "- service: http_status:404"',
    });
    // A path alone also makes a rule specific: still not a catch-all.
    expect(onlyProblem(yaml('ingress:', '  - path: ^/x', '    service: hello_world')).line).toBe(2);
  });

  it('rejects a catch-all that is not last (the rules after it are unreachable)', () => {
    const text = yaml(
      'ingress:', // 1
      '  - service: http://localhost:8000', // 2
      '  - hostname: a.example.com', // 3
      '    service: hello_world', // 4
      '  - service: http_status:404', // 5
    );
    expect(onlyProblem(text)).toEqual({
      line: 2,
      column: 5,
      message:
        'ingress[0]: this rule matches every request (no hostname, no path), so the rules after it can never match; only the last rule may be a catch-all',
    });
  });

  it('allows a rule with a path but no hostname', () => {
    const c = parseConfig(yaml('ingress:', '  - path: \\.png$', '    service: http://cdn:80', '  - service: hello_world'), 'c.yml');
    expect(c.ingress[0]).toMatchObject({ path: '\\.png$' });
    expect(c.ingress[0]!.hostname).toBeUndefined();
  });

  it('reports wrong types with what was expected and what was found', () => {
    const problems = problemsOf(
      yaml(
        'tunnel: 42', // 1
        'ha-connections: "4"', // 2
        'relays: wss://relay.example.net', // 3
        'originRequest:', // 4
        '  noTLSVerify: yes', // 5
        '  keepAliveConnections: 1.5', // 6
        'loglevel: verbose', // 7
        'ingress:', // 8
        '  hostname: a.example.com', // 9
      ),
    );
    expect(problems).toEqual([
      { line: 1, column: 9, message: 'tunnel: expected a string, got the integer 42' },
      { line: 2, column: 17, message: 'ha-connections: expected an integer, got the string "4"' },
      { line: 3, column: 9, message: 'relays: expected a list, got the string "wss://relay.example.net"' },
      { line: 5, column: 16, message: 'originRequest.noTLSVerify: expected true or false, got the string "yes"' },
      { line: 6, column: 25, message: 'originRequest.keepAliveConnections: expected an integer, got the number 1.5' },
      {
        line: 7,
        column: 11,
        message: 'loglevel: must be one of "trace", "debug", "info", "warn", "error", "fatal", got the string "verbose"',
      },
      { line: 9, column: 3, message: 'ingress: expected a list, got a mapping' },
    ]);
  });

  it('reports out-of-range numbers and a non-mapping file', () => {
    expect(onlyProblem(yaml('ha-connections: 17'))).toEqual({ line: 1, column: 17, message: 'ha-connections: must be at most 16, got 17' });
    expect(onlyProblem(yaml('ha-connections: 0'))).toEqual({ line: 1, column: 17, message: 'ha-connections: must be at least 1, got 0' });
    expect(onlyProblem(yaml('tunnel: ""'))).toEqual({ line: 1, column: 9, message: 'tunnel: must not be empty' });
    expect(onlyProblem(yaml('- tunnel: web'))).toEqual({
      line: 1,
      column: 1,
      message: 'the config must be a mapping of keys (tunnel:, ingress:, …), got a list',
    });
  });

  it('reports a missing service at the rule', () => {
    expect(onlyProblem(yaml('ingress:', '  - hostname: a.example.com', '  - service: hello_world'))).toEqual({
      line: 2,
      column: 5,
      message: 'ingress[0]: missing required key "service"',
    });
  });

  it('reports bad durations with the reason', () => {
    const problems = problemsOf(
      yaml(
        'grace-period: 30', // 1
        'originRequest:', // 2
        '  connectTimeout: 10 seconds', // 3
        '  keepAliveTimeout: "90"', // 4
        '  idleTimeout: 1000h', // 5
      ),
    );
    expect(problems).toEqual([
      { line: 1, column: 15, message: 'grace-period: expected a duration with a unit, e.g. "30s", got the bare number 30' },
      {
        line: 3,
        column: 19,
        message:
          'originRequest.connectTimeout: invalid duration "10 seconds": unknown unit " seconds" (use h, m, s or ms, e.g. "30s", "1m30s", "500ms")',
      },
      { line: 4, column: 21, message: 'originRequest.keepAliveTimeout: invalid duration "90": missing unit (h, m, s or ms), e.g. "90s"' },
      { line: 5, column: 16, message: 'originRequest.idleTimeout: duration "1000h" is too long (at most 596h31m23s)' },
    ]);
  });

  it('reports YAML syntax errors with their line', () => {
    const p = onlyProblem(yaml('tunnel: web', 'ingress:', '  - service: [hello_world', 'metrics: localhost:1'));
    expect(p.line).toBe(4);
    expect(p.message).toMatch(/^YAML syntax error: /);

    const dup = onlyProblem(yaml('tunnel: a', 'ingress: []', 'tunnel: b'));
    expect(dup).toEqual({ line: 3, column: 1, message: 'YAML syntax error: Map keys must be unique' });

    const tab = problemsOf('tunnel: a\n\tingress: []\n');
    expect(tab[0]!.line).toBe(2);
  });

  it('reports an unresolvable alias', () => {
    expect(onlyProblem(yaml('tunnel: web', 'originRequest: *nope'))).toMatchObject({ line: 2, column: 16 });
  });

  it('validates hostnames, relays and metrics', () => {
    const problems = problemsOf(
      yaml(
        'relays:', // 1
        '  - wss://ok.example.net', // 2
        '  - relay.example.net:7844', // 3
        'metrics: localhost', // 4
        'ingress:', // 5
        '  - hostname: a.example.com:8080', // 6
        '    service: hello_world', // 7
        '  - hostname: https://b.example.com', // 8
        '    service: hello_world', // 9
        '  - hostname: a.*.example.com', // 10
        '    service: hello_world', // 11
        '  - hostname: under score.com', // 12
        '    service: hello_world', // 13
        '  - service: hello_world', // 14
      ),
    );
    expect(problems.map((p) => [p.line, p.message])).toEqual([
      [3, 'relays[1]: "relay.example.net:7844" is not a relay URL (expected wss://host[:port], ws://, https:// or http://)'],
      [4, 'metrics: "localhost" is not an address (expected HOST:PORT, :PORT or PORT)'],
      [6, `ingress[0].hostname: "a.example.com:8080" must not include a port (matching ignores the request's port)`],
      [8, 'ingress[1].hostname: "https://b.example.com" must be a bare hostname, without scheme or path (use the path key to match paths)'],
      [10, 'ingress[2].hostname: "a.*.example.com": only a leading "*." wildcard is supported, as in *.example.com'],
      [12, 'ingress[3].hostname: "under score.com" is not a valid hostname'],
    ]);
  });

  it('metrics takes what --metrics takes: HOST:PORT, :PORT and PORT (127.0.0.1), a bare integer included', () => {
    for (const [value, want] of [
      ['0.0.0.0:2000', { host: '0.0.0.0', port: 2000 }],
      ['"[::1]:2000"', { host: '::1', port: 2000 }],
      ['":2000"', { host: '127.0.0.1', port: 2000 }],
      ['2000', { host: '127.0.0.1', port: 2000 }],
    ] as const) {
      expect(parseConfig(yaml(`metrics: ${value}`, 'ingress:', '  - service: hello_world'), 'config.yml').metrics, value).toEqual(want);
    }
    expect(problemsOf(yaml('metrics: 70000', 'ingress:', '  - service: hello_world')).map((p) => p.message)).toEqual([
      'metrics: "70000": port 70000 is out of range (0 to 65535)',
    ]);
  });

  it('lists every problem in the error message, one per line, sorted by position', () => {
    try {
      parseConfig(yaml('ha-connections: 99', 'ingress:', '  - service: nope', 'tunel: x'), 'cfg/config.yml');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const e = err as ConfigError;
      expect(e.name).toBe('ConfigError');
      expect(e.source).toBe('cfg/config.yml');
      expect(e.message.split('\n')).toEqual([
        'cfg/config.yml:1:17: ha-connections: must be at most 16, got 99',
        'cfg/config.yml:3:14: ingress[0].service: unknown service scheme "nope" (expected http://, https://, unix:, tcp://, http_status:NNN, hello_world)',
        'cfg/config.yml:4:1: tunel: unknown key (did you mean "tunnel"?)',
      ]);
    }
  });
});

describe('parseService', () => {
  it('parses every kind', () => {
    expect(parseService('http://localhost:8000')).toEqual({ kind: 'http', url: new URL('http://localhost:8000/') });
    expect(parseService('HTTPS://Origin:8443/app')).toEqual({ kind: 'http', url: new URL('https://origin:8443/app') });
    expect(parseService('unix:/run/app.sock')).toEqual({ kind: 'unix', socketPath: '/run/app.sock' });
    expect(parseService('tcp://db.internal:5432')).toEqual({ kind: 'tcp', host: 'db.internal', port: 5432 });
    expect(parseService('tcp://[::1]:22')).toEqual({ kind: 'tcp', host: '::1', port: 22 });
    expect(parseService('http_status:418')).toEqual({ kind: 'status', status: 418 });
    expect(parseService('hello_world')).toEqual({ kind: 'hello_world' });
  });

  it('rejects incomplete or ambiguous services', () => {
    expect(() => parseService('tcp://db.internal')).toThrow('"tcp://db.internal" needs a host and a port (expected tcp://host:port)');
    expect(() => parseService('tcp://db:0')).toThrow('needs a host and a port');
    expect(() => parseService('tcp://db:5432/x')).toThrow('a tcp service cannot have a path');
    expect(() => parseService('unix:')).toThrow('"unix:" has no socket path');
    expect(() => parseService('http://')).toThrow('"http://" is not a valid URL');
    expect(() => parseService('http://a/?q=1')).toThrow('cannot have a query or fragment');
    expect(() => parseService('http://u:p@a/')).toThrow('credentials in a service URL are not supported');
    expect(() => parseService('localhost:8000')).toThrow('unknown service scheme "localhost:8000"');
  });

  it('prints tcp IPv6 hosts bracketed', () => {
    expect(serviceToString(parseService('tcp://[::1]:22'))).toBe('tcp://[::1]:22');
  });
});

describe('parseHostname', () => {
  it('lower-cases and maps "*"/"" to any host', () => {
    expect(parseHostname('*.Example.COM')).toBe('*.example.com');
    expect(parseHostname('*')).toBeUndefined();
    expect(parseHostname('')).toBeUndefined();
  });
});

describe('--url and resolveIngress', () => {
  it('singleServiceIngress makes one catch-all rule, defaulting to http://', () => {
    expect(singleServiceIngress('localhost:8000')).toEqual([
      { service: { kind: 'http', url: new URL('http://localhost:8000') }, originRequest: {} },
    ]);
    expect(singleServiceIngress('hello_world')).toEqual([{ service: { kind: 'hello_world' }, originRequest: {} }]);
    expect(singleServiceIngress('unix:/tmp/s.sock')[0]!.service).toEqual({ kind: 'unix', socketPath: '/tmp/s.sock' });
    expect(() => singleServiceIngress('ftp://x')).toThrow('--url: unknown service scheme "ftp://x"');
  });

  it('uses the config rules, or --url when there are none; both or neither is an error', () => {
    const withRules = parseConfig(yaml('tunnel: t', 'ingress:', '  - service: hello_world'), 'c.yml');
    const empty = parseConfig(yaml('tunnel: t'), 'c.yml');
    expect(resolveIngress(withRules, undefined)).toBe(withRules.ingress);
    expect(resolveIngress(empty, 'http://localhost:1')).toHaveLength(1);
    expect(resolveIngress(undefined, 'http://localhost:1')).toHaveLength(1);
    expect(() => resolveIngress(withRules, 'http://localhost:1')).toThrow(
      'c.yml:3:1: --url cannot be used together with ingress rules; remove one of them',
    );
    expect(() => resolveIngress(empty, undefined)).toThrow(
      'c.yml: no ingress rules: add an "ingress:" list to the config file or pass --url',
    );
  });
});

describe('parseDuration', () => {
  it('parses h, m, s, ms and combinations', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1h2m3s4ms')).toBe(3_723_004);
    expect(parseDuration('1.5s')).toBe(1_500);
    expect(parseDuration('.5m')).toBe(30_000);
    expect(parseDuration('0')).toBe(0);
    expect(parseDuration('0s')).toBe(0);
  });

  it('rejects garbage with a clear message', () => {
    expect(() => parseDuration('')).toThrow('empty duration');
    expect(() => parseDuration('30')).toThrow('invalid duration "30": missing unit (h, m, s or ms), e.g. "30s"');
    expect(() => parseDuration('-5s')).toThrow('durations cannot be negative');
    expect(() => parseDuration('5d')).toThrow('invalid duration "5d": unknown unit "d" (use h, m, s or ms, e.g. "30s", "1m30s", "500ms")');
    expect(() => parseDuration('1m 30s')).toThrow('expected a number followed by a unit (h, m, s or ms) at " 30s"');
    expect(() => parseDuration('abc')).toThrow('invalid duration "abc": expected a number followed by a unit (h, m, s or ms), e.g.');
    expect(() => parseDuration('0.5ms')).toThrow('finer than a millisecond');
    expect(() => parseDuration('5us')).toThrow('invalid duration "5us": unknown unit "us"');
  });

  it('formats back', () => {
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(3_723_004)).toBe('1h2m3s4ms');
  });
});
