// The edges of config.yml validation that config.test.ts does not pin: the
// bounds of every integer, values of the wrong type for each parsed field,
// the Access block, home-relative paths, and the key-placement hints. Each
// case names the line and the problem, as a user would see it.
import { homedir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, ORIGIN_REQUEST_DEFAULTS, parseConfig, type ConfigProblem } from '../src/ingress/config.js';
import { problemsOf, yaml } from './config-problems.js';


describe('config.yml: integer bounds are inclusive', () => {
  it('ha-connections takes 1 and 16 (0 and 17 are refused: config.test.ts)', () => {
    expect(parseConfig(yaml('ha-connections: 1'), 'c.yml').haConnections).toBe(1);
    expect(parseConfig(yaml('ha-connections: 16'), 'c.yml').haConnections).toBe(16);
  });

  it('keepAliveConnections takes 0 and 100000, and names the bound it broke', () => {
    const c = parseConfig(yaml('originRequest:', '  keepAliveConnections: 0', 'ingress:', '  - service: hello_world', '    originRequest:', '      keepAliveConnections: 100000'), 'c.yml');
    expect(c.originRequest.keepAliveConnections).toBe(0);
    expect(c.ingress[0]!.originRequest.keepAliveConnections).toBe(100_000);
    expect(problemsOf(yaml('originRequest:', '  keepAliveConnections: -1'))).toEqual([
      { line: 2, column: 25, message: 'originRequest.keepAliveConnections: must be at least 0, got -1' },
    ]);
    expect(problemsOf(yaml('originRequest:', '  keepAliveConnections: 100001'))).toEqual([
      { line: 2, column: 25, message: 'originRequest.keepAliveConnections: must be at most 100000, got 100001' },
    ]);
  });
});

describe('config.yml: a value of the wrong type says what was expected', () => {
  it('service, hostname, path and relay', () => {
    expect(problemsOf(yaml('relays:', '  - 42', 'ingress:', '  - hostname: 42', '    path: 7', '    service: hello_world', '  - service: true'))).toEqual([
      { line: 2, column: 5, message: 'relays[0]: expected a relay URL, got the integer 42' },
      { line: 4, column: 15, message: 'ingress[0].hostname: expected a hostname, got the integer 42' },
      { line: 5, column: 11, message: 'ingress[0].path: expected a regular expression, got the integer 7' },
      {
        line: 7,
        column: 14,
        message: 'ingress[1].service: expected a service (http://, https://, unix:, tcp://, http_status:NNN, hello_world), got true',
      },
    ]);
  });

  it('metrics: a bare integer is a port, a fraction or a boolean is not an address', () => {
    expect(problemsOf(yaml('metrics: 1.5'))).toEqual([{ line: 1, column: 10, message: 'metrics: expected HOST:PORT, :PORT or PORT, got the number 1.5' }]);
    expect(problemsOf(yaml('metrics: true'))).toEqual([{ line: 1, column: 10, message: 'metrics: expected HOST:PORT, :PORT or PORT, got true' }]);
  });
});

describe('config.yml: relays', () => {
  it('takes every scheme the connector dials: ws, wss, http and https', () => {
    const relays = ['ws://127.0.0.1:7844', 'wss://r.example.net', 'http://127.0.0.1:8080', 'https://r.example.net'];
    expect(parseConfig(yaml('relays:', ...relays.map((r) => `  - ${r}`)), 'c.yml').relays).toEqual(relays);
  });

  it('refuses other schemes and a URL without a host', () => {
    expect(problemsOf(yaml('relays:', '  - ftp://r.example.net', '  - "wss:"')).map((p) => [p.line, p.message])).toEqual([
      [2, 'relays[0]: "ftp://r.example.net" is not a relay URL (expected wss://host[:port], ws://, https:// or http://)'],
      [3, 'relays[1]: "wss:" is not a relay URL (expected wss://host[:port], ws://, https:// or http://)'],
    ]);
  });

  it('an empty relays: list is no relays', () => {
    expect(parseConfig(yaml('relays:'), 'c.yml').relays).toEqual([]);
  });
});

describe('config.yml: originRequest.access', () => {
  it('defaults to not required with no audience tags, and drops teamName', () => {
    const c = parseConfig(
      yaml('originRequest:', '  access: {}', 'ingress:', '  - service: hello_world', '    originRequest:', '      access:', '        required: true', '        audTag: [aud-1, aud-2]', '        teamName: acme'),
      'c.yml',
    );
    expect(c.originRequest).toEqual({ ...ORIGIN_REQUEST_DEFAULTS, access: { required: false, audTag: [] } });
    expect(c.ingress[0]!.originRequest).toEqual({ access: { required: true, audTag: ['aud-1', 'aud-2'] } });
  });

  it('required: true with an empty audTag list is refused at that list', () => {
    expect(problemsOf(yaml('originRequest:', '  access:', '    required: true', '    audTag: []'))).toEqual([
      {
        line: 4,
        column: 13,
        message: "originRequest.access.audTag: access.required needs at least one audTag (the policy's audience tag from `tunnel access policy list`)",
      },
    ]);
  });

  it('audience tags are 1 to 256 characters, at most 64 of them', () => {
    expect(parseConfig(yaml('originRequest:', '  access:', `    audTag: [${'a'.repeat(256)}]`), 'c.yml').originRequest.access!.audTag[0]).toHaveLength(256);
    expect(problemsOf(yaml('originRequest:', '  access:', '    audTag: [""]'))).toEqual([
      { line: 3, column: 14, message: 'originRequest.access.audTag[0]: must not be empty' },
    ]);
    expect(problemsOf(yaml('originRequest:', '  access:', `    audTag: [${'a'.repeat(257)}]`)).map((p) => [p.line, p.message])).toEqual([
      [3, expect.stringMatching(/^originRequest\.access\.audTag\[0\]: .*256/)],
    ]);
    const tags = (n: number) => Array.from({ length: n }, (_, i) => `t${i}`).join(', ');
    expect(parseConfig(yaml('originRequest:', '  access:', `    audTag: [${tags(64)}]`), 'c.yml').originRequest.access!.audTag).toHaveLength(64);
    expect(problemsOf(yaml('originRequest:', '  access:', `    audTag: [${tags(65)}]`)).map((p) => [p.line, p.message])).toEqual([
      [3, expect.stringMatching(/^originRequest\.access\.audTag: .*64/)],
    ]);
  });
});

describe('config.yml: paths', () => {
  it('"~" alone is the home directory; an absolute path is kept as written', () => {
    const c = parseConfig(yaml('credentials-file: "~"', 'token-file: /abs/tunnel.token'), '/etc/tunnel/config.yml');
    expect(c.credentialsFile).toBe(homedir());
    expect(c.tokenFile).toBe('/abs/tunnel.token');
  });
});

describe('config.yml: rule order', () => {
  it('a last rule whose hostname is "" is a catch-all', () => {
    const c = parseConfig(yaml('ingress:', '  - hostname: ""', '    service: hello_world'), 'c.yml');
    expect(c.ingress).toEqual([{ service: { kind: 'hello_world' }, originRequest: {}, line: 2 }]);
  });

  it('an empty ingress list is no rules, not a missing catch-all', () => {
    expect(parseConfig(yaml('ingress: []'), 'c.yml').ingress).toEqual([]);
  });

  it('a rule that is not a mapping is reported once, not also as a misplaced catch-all', () => {
    expect(problemsOf(yaml('ingress:', '  - hello', '  - 5', '  - service: hello_world'))).toEqual([
      { line: 2, column: 5, message: 'ingress[0]: expected a mapping (key: value), got the string "hello"' },
      { line: 3, column: 5, message: 'ingress[1]: expected a mapping (key: value), got the integer 5' },
    ]);
  });
});

describe('config.yml: a key at the wrong level says where it belongs', () => {
  it('rule keys at the top level belong in an ingress rule', () => {
    expect(problemsOf(yaml('service: hello_world', 'path: ^/x'))).toEqual([
      { line: 1, column: 1, message: 'service: unknown key ("service" belongs in an ingress rule)' },
      { line: 2, column: 1, message: 'path: unknown key ("path" belongs in an ingress rule)' },
    ]);
  });

  it('origin keys in a rule belong under originRequest; other unknown keys list what the level takes', () => {
    expect(problemsOf(yaml('ingress:', '  - service: hello_world', '    noTLSVerify: true', '    tunnel: web'))).toEqual([
      { line: 3, column: 5, message: 'ingress[0].noTLSVerify: unknown key ("noTLSVerify" belongs under originRequest:)' },
      { line: 4, column: 5, message: 'ingress[0].tunnel: unknown key (expected one of: hostname, path, service, originRequest)' },
    ]);
  });

  it('under originRequest, rule and top-level keys get the originRequest list, not a hint to move them', () => {
    const want = 'unknown key (expected one of: connectTimeout, keepAliveConnections, keepAliveTimeout, httpHostHeader, originServerName, caPool, noTLSVerify, disableChunkedEncoding, idleTimeout, access)';
    expect(problemsOf(yaml('originRequest:', '  service: hello_world', 'ingress:', '  - service: hello_world', '    originRequest:', '      tunnel: web'))).toEqual([
      { line: 2, column: 3, message: `originRequest.service: ${want}` },
      { line: 6, column: 7, message: `ingress[0].originRequest.tunnel: ${want}` },
    ]);
  });
});

describe('config.yml: unset keys', () => {
  it('are absent from the result, not present as undefined', () => {
    const c = parseConfig(yaml('ingress:', '  - service: hello_world'), 'c.yml');
    expect(c).toStrictEqual({
      source: 'c.yml',
      relays: [],
      haConnections: 4,
      gracePeriod: 30_000,
      loglevel: 'info',
      originRequest: ORIGIN_REQUEST_DEFAULTS,
      ingress: [{ service: { kind: 'hello_world' }, originRequest: {}, line: 2 }],
    });
    for (const k of ['tunnel', 'tunnelAt', 'metrics', 'credentialsFile', 'tokenFile']) expect(k in c, k).toBe(false);
    expect(Object.keys(c.ingress[0]!)).toEqual(['service', 'originRequest', 'line']);
  });
});

describe('config.yml: path patterns', () => {
  it('a bad case-insensitive (?i) pattern gets the same short reason', () => {
    expect(problemsOf(yaml('ingress:', '  - path: "(?i)^/api/(v1"', '    service: hello_world', '  - service: hello_world'))).toEqual([
      { line: 2, column: 11, message: 'ingress[0].path: invalid regular expression "(?i)^/api/(v1": Unterminated group' },
    ]);
  });
});
