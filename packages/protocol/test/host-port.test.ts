import { describe, expect, it } from 'vitest';
import { formatHostPort, hostPortSetting, HostPortError, parseHostPort } from '../src/host-port.js';

const problem = (raw: string | number, host = '127.0.0.1') => {
  const r = hostPortSetting(raw, host);
  return 'problem' in r ? r.problem : `accepted ${JSON.stringify(r.value)}`;
};

describe('hostPortSetting: the one listen-address grammar of both daemons', () => {
  it('takes HOST:PORT, :PORT, PORT, [IPv6]:PORT and a YAML integer; the short forms mean the default host', () => {
    for (const [raw, def, want] of [
      ['10.0.0.5:7000', '0.0.0.0', { host: '10.0.0.5', port: 7000 }],
      ['localhost:80', '0.0.0.0', { host: 'localhost', port: 80 }],
      ['relay-1.example.com:443', '0.0.0.0', { host: 'relay-1.example.com', port: 443 }],
      [':2000', '127.0.0.1', { host: '127.0.0.1', port: 2000 }],
      [':2000', '0.0.0.0', { host: '0.0.0.0', port: 2000 }],
      ['2000', '127.0.0.1', { host: '127.0.0.1', port: 2000 }],
      [2000, '0.0.0.0', { host: '0.0.0.0', port: 2000 }],
      ['[::1]:80', '0.0.0.0', { host: '::1', port: 80 }],
      ['[::]:0', '0.0.0.0', { host: '::', port: 0 }],
      ['  127.0.0.1:65535 ', '0.0.0.0', { host: '127.0.0.1', port: 65535 }],
      ['0', '127.0.0.1', { host: '127.0.0.1', port: 0 }],
    ] as const) {
      expect(hostPortSetting(raw, def), String(raw)).toEqual({ value: want });
    }
  });

  it('says what is wrong, quoting the text', () => {
    expect(problem('nonsense')).toBe('"nonsense" is not an address (expected HOST:PORT, :PORT or PORT)');
    expect(problem('')).toBe('empty address (expected HOST:PORT, :PORT or PORT)');
    expect(problem('70000')).toBe('"70000": port 70000 is out of range (0 to 65535)');
    expect(problem('127.0.0.1:65536')).toBe('"127.0.0.1:65536": port 65536 is out of range (0 to 65535)');
    expect(problem('127.0.0.1:http')).toBe('"127.0.0.1:http": the port "http" is not a number from 0 to 65535');
    expect(problem('127.0.0.1:')).toBe('"127.0.0.1:": the port "" is not a number from 0 to 65535');
    expect(problem('127.0.0.1:-1')).toBe('"127.0.0.1:-1": the port "-1" is not a number from 0 to 65535');
    expect(problem('::1:8080')).toBe('"::1:8080": put an IPv6 host in brackets, as [::1]:8080');
    expect(problem('fe80::1')).toBe('"fe80::1": put an IPv6 host in brackets, as [::1]:PORT');
    expect(problem('[::1]')).toBe('"[::1]" has no port (expected [::1]:PORT)');
    expect(problem('[localhost]:80')).toBe('"[localhost]:80": "localhost" in brackets is not an IPv6 address');
    expect(problem('[::1]80')).toBe('"[::1]80" is not an address (expected HOST:PORT, :PORT or PORT)');
    expect(problem('my host:80')).toBe('"my host:80": "my host" is not a host name or an IP address');
    expect(problem('*.example.com:80')).toBe('"*.example.com:80": "*.example.com" is not a host name or an IP address');
    expect(problem('http://127.0.0.1:80')).toBe('"http://127.0.0.1:80" is a URL: give HOST:PORT, without a scheme or path');
    expect(problem(80.5)).toBe('80.5 is not a port (expected HOST:PORT, :PORT or PORT)');
  });

  it('parseHostPort throws the problem as a HostPortError; formatHostPort gives back what it takes', () => {
    expect(() => parseHostPort('80000', '0.0.0.0')).toThrow(HostPortError);
    expect(() => parseHostPort('80000', '0.0.0.0')).toThrow('"80000": port 80000 is out of range (0 to 65535)');
    for (const text of ['127.0.0.1:80', '[::1]:7000', 'localhost:0']) expect(formatHostPort(parseHostPort(text, '0.0.0.0'))).toBe(text);
  });
});
