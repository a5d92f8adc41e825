// Which relay a bare `tunnel --url` asks, and TUNNEL_HOME/quick.yml read with
// the config toolkit of config.yml and relay.yml (@tunnel/host): a wrong
// file is one ConfigError naming FILE:LINE:COLUMN and the problem.
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { useTempTunnelHome } from './temp-tunnel-home.js';
import { ConfigError } from '@tunnel/host';
import { quickConfigPath, resolveQuickRelay } from '../src/quick/quick-relay.js';

describe('quick relay: --relay, then --quick-relay, then quick.yml', () => {
  useTempTunnelHome('tunnel-quick-home-');
  const file = (text: string) => writeFileSync(quickConfigPath(), text);
  const problem = () => {
    try {
      resolveQuickRelay({});
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
    return 'no error';
  };

  it('flags win over the file; no file is no relay', () => {
    expect(resolveQuickRelay({})).toBeUndefined();
    file('quick-relay: https://file.example.com\n');
    expect(resolveQuickRelay({ relay: 'https://flag.example.com/', quickRelay: 'https://env.example.com' })).toBe('https://flag.example.com');
    expect(resolveQuickRelay({ quickRelay: 'http://127.0.0.1:7000' })).toBe('http://127.0.0.1:7000');
    expect(resolveQuickRelay({})).toBe('https://file.example.com');
    expect(() => resolveQuickRelay({ relay: 'wss://relay.example.com' })).toThrow(/--relay: wss:\/\/relay.example.com: expected an http\(s\):\/\/ relay URL: a quick tunnel asks the relay's control API/);
  });

  it('a wrong quick.yml names file:line:column and the problem', () => {
    const f = quickConfigPath();
    file('# mine\nquick-relay: wss://relay.example.com\n');
    expect(problem()).toBe(`${f}:2:14: quick-relay: wss://relay.example.com: expected an http(s):// relay URL: a quick tunnel asks the relay's control API (https://…), not its connector endpoint`);
    file('quick-relay: https://a.example.com\nquick-realy: x\n');
    expect(problem()).toBe(`${f}:2:1: quick-realy: unknown key (did you mean "quick-relay"?)`);
    file('quick-relay: [1]\n');
    expect(problem()).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:1:14: quick-relay: expected a string`));
    file('quick-relay: "unclosed\n');
    expect(problem()).toBe(`${f}:2:1: YAML syntax error: Missing closing "quote`);
  });
});
