import { describe, expect, it } from 'vitest';
import { exactHostname, HostnameError, MAX_HOSTNAME_LENGTH, normalizeHostname } from '../src/hostname.js';

const fault = (text: string) => {
  try {
    normalizeHostname(text);
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(HostnameError);
    expect(e).toBeInstanceOf(TypeError);
    return (e as HostnameError).fault;
  }
};

describe('normalizeHostname: the one hostname grammar', () => {
  it('lower-cases, trims and drops one trailing dot; exact names and a leading *. wildcard', () => {
    expect(normalizeHostname(' App.Example.COM. ')).toBe('app.example.com');
    expect(normalizeHostname('*.Example.com')).toBe('*.example.com');
    expect(normalizeHostname('localhost')).toBe('localhost');
    expect(normalizeHostname('a-b.x1.example')).toBe('a-b.x1.example');
  });

  it('accepts "_" anywhere in a label, as DNS does', () => {
    expect(normalizeHostname('_acme.example.com')).toBe('_acme.example.com');
    expect(normalizeHostname('a_b.example.com')).toBe('a_b.example.com');
    expect(normalizeHostname('ab_.example.com')).toBe('ab_.example.com');
  });

  it('labels are 1-63 characters, not starting or ending with "-"', () => {
    expect(normalizeHostname(`${'a'.repeat(63)}.com`)).toBe(`${'a'.repeat(63)}.com`);
    expect(fault(`${'a'.repeat(64)}.com`)).toBe('invalid');
    expect(fault('a..com')).toBe('invalid');
    expect(fault('-a.com')).toBe('invalid');
    expect(fault('a-.com')).toBe('invalid');
    expect(fault('')).toBe('invalid');
    expect(fault('exa mple.com')).toBe('invalid');
    expect(fault('é.com')).toBe('invalid');
  });

  it(`names are at most ${MAX_HOSTNAME_LENGTH} characters`, () => {
    const label = 'a'.repeat(63);
    const at = [label, label, label, 'a'.repeat(61)].join('.');
    expect(at).toHaveLength(MAX_HOSTNAME_LENGTH);
    expect(normalizeHostname(at)).toBe(at);
    expect(fault(`a${at}`)).toBe('invalid');
  });

  it('names the fault: a scheme or path, a port, a wildcard not leading', () => {
    expect(fault('https://a.com')).toBe('not-bare');
    expect(fault('a.com/x')).toBe('not-bare');
    expect(fault('a.com:8080')).toBe('port');
    expect(fault('a.*.com')).toBe('wildcard');
    expect(fault('*')).toBe('wildcard');
    expect(fault('**.a.com')).toBe('wildcard');
    expect(() => normalizeHostname('under score.com')).toThrow('"under score.com" is not a valid hostname');
    expect(() => normalizeHostname('a.com:1')).toThrow('"a.com:1" must not include a port');
  });
});

describe('exactHostname: an exact name or nothing (for a file name or a served host)', () => {
  it('takes what normalizeHostname takes, lower-cased, except a wildcard', () => {
    expect(exactHostname('App_1.Example.com.')).toBe('app_1.example.com');
    expect(exactHostname('*.example.com')).toBeUndefined();
    for (const bad of ['', '..', '../etc/passwd', 'a/b', 'a b.com', 'x.example.com:80', `${'a'.repeat(64)}.com`]) expect(exactHostname(bad), bad).toBeUndefined();
  });
});
