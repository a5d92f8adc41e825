import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkPlainListeners, isLoopback, TlsConfigError } from '../src/edge/listener-tls.js';
import { parseListen } from '../src/edge/listen.js';
import { loadRelayConfig, ConfigError } from '../src/cli/relay-config.js';

describe('plain listeners without a certificate', () => {
  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.8.9.10', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '', '10.0.0.1', '128.0.0.1', '127.0.0.1.example.com', 'localhost.example.com']) expect(isLoopback(h), h).toBe(false);
  });

  it('parses HOST:PORT, :PORT, PORT and [v6]:PORT; the two short forms mean all interfaces, spelled 0.0.0.0', () => {
    expect(parseListen('127.0.0.1:80')).toEqual({ host: '127.0.0.1', port: 80 });
    expect(parseListen(':80')).toEqual({ host: '0.0.0.0', port: 80 });
    expect(parseListen('80')).toEqual({ host: '0.0.0.0', port: 80 });
    expect(parseListen(80)).toEqual({ host: '0.0.0.0', port: 80 });
    expect(parseListen('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(() => parseListen('80000')).toThrow('"80000": port 80000 is out of range (0 to 65535)');
  });

  it('refuses exposed connect/control/peer addresses, naming each, unless told --insecure-http-control', () => {
    const exposed = { connect: parseListen(':7844'), control: parseListen('10.0.0.5:7000'), peer: parseListen('127.0.0.1:7845') };
    expect(() => checkPlainListeners(exposed, false)).toThrow(TlsConfigError);
    expect(() => checkPlainListeners(exposed, false)).toThrow(/^--connect 0\.0\.0\.0:7844, --control 10\.0\.0\.5:7000: a non-loopback address without TLS.*--insecure-http-control/);
    expect(() => checkPlainListeners(exposed, true)).not.toThrow();
    expect(() => checkPlainListeners({ connect: parseListen('127.0.0.1:0'), control: parseListen('[::1]:0') }, false)).not.toThrow();
  });
});

describe('relay.yml TLS settings', () => {
  it('reads tls.ca (relative to the file) and insecure-http-control, and names the line of a bad value', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-yml-'));
    try {
      const file = join(dir, 'relay.yml');
      writeFileSync(file, 'tls: { cert: relay.pem, key: relay.key, ca: fleet-ca.pem }\ninsecure-http-control: false\n');
      expect(loadRelayConfig(file)).toMatchObject({ tls: { cert: join(dir, 'relay.pem'), key: join(dir, 'relay.key'), ca: join(dir, 'fleet-ca.pem') }, 'insecure-http-control': false });
      writeFileSync(file, 'id: r1\ninsecure-http-control: "yes"\n');
      expect(() => loadRelayConfig(file)).toThrow(ConfigError);
      expect(() => loadRelayConfig(file)).toThrow(/relay\.yml:2:\d+: insecure-http-control: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
