// relay.yml errors name the file, line, column and problem, as the README shows
// (`relay.yml:11:16: drain-timeout: expected a duration with a unit, e.g. "30s", got the bare number 30`),
// and the same durations are accepted from the flags.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, durationMs, loadRelayConfig } from '../src/cli/relay-config.js';
import { ConfigError as HostConfigError } from '@tunnel/host';

const dir = mkdtempSync(path.join(tmpdir(), 'relay-yml-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}

describe('relay.yml', () => {
  it('a bad duration is reported as FILE:LINE:COLUMN: key: problem', () => {
    const f = write('relay.yml', 'id: relay-fra-1\nregion: fra\ndrain-timeout: soon\n');
    let err: unknown;
    try {
      loadRelayConfig(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`${f}:3:16: drain-timeout: invalid duration "soon": expected a number followed by a unit (h, m, s or ms), e.g. "30s", "1m30s", "500ms"`);
  });

  it('durations: 500ms, 30s, 2m, 1m30s (the grammar of every duration); a bare number or anything else is a problem', () => {
    const f = write('ok.yml', 'drain-timeout: 30s\ndrain-delay: 500ms\n');
    const cfg = loadRelayConfig(f);
    expect(cfg['drain-timeout']).toBe(30_000);
    expect(cfg['drain-delay']).toBe(500);
    expect(durationMs('2m')).toEqual({ ms: 120_000 });
    expect(durationMs('1m30s')).toEqual({ ms: 90_000 });
    expect(durationMs('0')).toEqual({ ms: 0 });
    for (const bad of ['soon', '30 s', '-1', '', '1500', 250, '1000h']) expect(durationMs(bad), String(bad)).toHaveProperty('problem');
  });

  it('a bare number is refused with file:line, not taken as milliseconds', () => {
    const f = write('bare.yml', 'id: relay-fra-1\ndrain-timeout: 30\n');
    expect(() => loadRelayConfig(f)).toThrow(`${f}:2:16: drain-timeout: expected a duration with a unit, e.g. "30s", got the bare number 30`);
  });

  it('listen: addresses in the flags\' grammar (@tunnel/protocol host-port), a wrong one at its line; connect cannot be off', () => {
    const ok = write('listen-ok.yml', 'listen:\n  http: off\n  connect: 7844\n  control: "[::1]:7000"\n  peer: :7845\n  metrics: 127.0.0.1:9464\n');
    expect(loadRelayConfig(ok).listen).toEqual({ http: 'off', connect: '7844', control: '[::1]:7000', peer: ':7845', metrics: '127.0.0.1:9464' });
    const bad = write('listen-bad.yml', 'listen:\n  http: 127.0.0.1:99999\n  connect: off\n  control: ::1:7000\n  peer: [1]\n');
    expect(() => loadRelayConfig(bad)).toThrow(
      [
        `${bad}:2:9: listen.http: "127.0.0.1:99999": port 99999 is out of range (0 to 65535)`,
        `${bad}:3:12: listen.connect: "off" is not an address (expected HOST:PORT, :PORT or PORT)`,
        `${bad}:4:12: listen.control: "::1:7000": put an IPv6 host in brackets, as [::1]:7000`,
        `${bad}:5:9: listen.peer: expected HOST:PORT, :PORT or PORT (or off), got a list`,
      ].join('\n'),
    );
  });

  // One toolkit with the connector's config.yml (@tunnel/host): the same error class, the same
  // wording of a misspelt key, a wrong type and an unreadable file.
  it('reports like config.yml: one ConfigError, every problem sorted, a misspelt key with its nearest, an unreadable file', () => {
    const f = write('many.yml', 'regoin: fra\nlimits:\n  max-sessions-per-tokn: 3\nlisten: [1]\n');
    let err: unknown;
    try {
      loadRelayConfig(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(HostConfigError);
    expect((err as Error).message.split('\n')).toEqual([
      `${f}:1:1: regoin: unknown key (did you mean "region"?)`,
      `${f}:3:3: limits.max-sessions-per-tokn: unknown key (did you mean "max-sessions-per-token"?)`,
      `${f}:4:9: listen: expected a mapping (key: value), got a list`,
    ]);
    const missing = path.join(dir, 'missing.yml');
    expect(() => loadRelayConfig(missing)).toThrow(`${missing}: cannot read config file: no such file`);
  });
});
