// What token.ts says when it refuses, and the edges of its checks: each
// refusal names which check failed (these messages end up in relay logs and
// CLI errors), inputs of the wrong runtime type are refused as such, and the
// length limits are inclusive (a token of exactly MAX_TOKEN_LENGTH is fine).
import nacl from 'tweetnacl';
import { describe, expect, it } from 'vitest';
import { MAX_TOKEN_LENGTH } from '../src/limits.js';
import { boxKeyPair, generateSigningKeyPair, openSealed, sealTo, signToken, TokenError, verifyToken, type TokenErrorCode } from '../src/token.js';

const fleet = generateSigningKeyPair();
const b64 = (b: Uint8Array | string): string => Buffer.from(b).toString('base64url');
const anyValue = <T>(v: unknown) => v as T;

/** Signs an arbitrary payload the way signToken does. */
function rawToken(payloadJson: string, kind = 'tunnel'): string {
  const payload = Buffer.from(payloadJson, 'utf8');
  const sig = nacl.sign.detached(Buffer.concat([Buffer.from(`tunnel-token/v1\n${kind}\n`), payload]), Buffer.from(fleet.secretKey, 'base64url'));
  return `${b64(payload)}.${b64(sig)}`;
}

function refusal(fn: () => unknown): { code: TokenErrorCode; message: string; name: string } {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TokenError);
    const t = e as TokenError;
    return { code: t.code, message: t.message, name: t.name };
  }
  throw new Error('expected a TokenError, nothing was thrown');
}

describe('verifyToken: each refusal names its check', () => {
  const good = signToken('tunnel', { jti: 'j', exp: 4_000_000_000 }, fleet.secretKey);
  const [payload, sig] = good.split('.') as [string, string];
  const cases: Array<[string, unknown, TokenErrorCode, string]> = [
    ['not a string', 42, 'MALFORMED', 'token: not a string'],
    ['over the limit, even with one dot', `${'A'.repeat(MAX_TOKEN_LENGTH)}.${sig}`, 'MALFORMED', `token: ${MAX_TOKEN_LENGTH + 87} chars exceeds the limit of ${MAX_TOKEN_LENGTH}`],
    ['no dot', 'abcd', 'MALFORMED', 'token: expected two base64url parts separated by one dot'],
    ['two dots', `${payload}.${sig}.x`, 'MALFORMED', 'token: expected two base64url parts separated by one dot'],
    ['a dot first', `.${sig}`, 'MALFORMED', 'token: a part is not canonical base64url'],
    ['a dot last', `${payload}.`, 'MALFORMED', `token: signature is 0 bytes, expected 64`],
    ['a part not base64url', `${payload}.${sig.slice(0, -1)}+`, 'MALFORMED', 'token: a part is not canonical base64url'],
    ['a short signature', `${payload}.${sig.slice(0, 40)}`, 'MALFORMED', 'token: signature is 30 bytes, expected 64'],
    ['not JSON', `${b64('not json')}.${sig}`, 'MALFORMED', 'token: payload is not UTF-8 JSON'],
    ['JSON, not an object', `${b64('5')}.${sig}`, 'MALFORMED', 'token: payload is not a JSON object'],
    ['JSON null', `${b64('null')}.${sig}`, 'MALFORMED', 'token: payload is not a JSON object'],
    ['no kind', `${b64('{"a":1}')}.${sig}`, 'MALFORMED', 'token: payload has no valid kind'],
    ['a forged signature', `${b64('{"kind":"tunnel","jti":"k"}')}.${sig}`, 'BAD_SIGNATURE', 'token: signature does not verify'],
    ['another kind', signToken('account', { jti: 'j' }, fleet.secretKey), 'WRONG_KIND', 'token: is a "account" token, expected "tunnel"'],
    ['exp not a number', rawToken('{"kind":"tunnel","exp":"soon"}'), 'MALFORMED', 'token: exp is not a number'],
    ['expired', signToken('tunnel', { exp: 1 }, fleet.secretKey), 'EXPIRED', 'token: expired'],
  ];
  for (const [what, token, code, message] of cases) {
    it(what, () => {
      expect(refusal(() => verifyToken('tunnel', anyValue<string>(token), fleet.publicKey))).toEqual({ code, message, name: 'TokenError' });
    });
  }
});

describe('token length limits', () => {
  // A signed token is base64url(payload) + '.' + 86 chars; base64url lengths
  // are never 1 mod 4, so no signed token is exactly MAX_TOKEN_LENGTH (16,384)
  // chars long: the limit is probed with a string of that length instead.
  it('verifyToken reads a string of exactly MAX_TOKEN_LENGTH chars (refused for what it is, not for its length)', () => {
    const sig = signToken('tunnel', {}, fleet.secretKey).split('.')[1]!;
    const exact = `${'A'.repeat(MAX_TOKEN_LENGTH - sig.length - 1)}.${sig}`;
    expect(exact).toHaveLength(MAX_TOKEN_LENGTH);
    expect(refusal(() => verifyToken('tunnel', exact, fleet.publicKey)).message).toBe('token: a part is not canonical base64url');
    expect(refusal(() => verifyToken('tunnel', `A${exact}`, fleet.publicKey)).message).toBe(`token: ${MAX_TOKEN_LENGTH + 1} chars exceeds the limit of ${MAX_TOKEN_LENGTH}`);
  });

  it('signToken refuses to make a token over the limit, with the count', () => {
    expect(() => signToken('tunnel', { blob: 'x'.repeat(MAX_TOKEN_LENGTH) }, fleet.secretKey)).toThrow(/^token: \d+ chars exceeds the limit of 16384$/);
  });
});

describe('signToken refuses inputs of the wrong runtime type, saying what it expected', () => {
  it('a kind that is not a string, even one the pattern would take as text', () => {
    expect(() => signToken(anyValue<string>(42), {}, fleet.secretKey)).toThrow(new RangeError('token kind 42: expected 1-64 chars of [A-Za-z0-9._-]'));
  });
  it('claims that are not a plain object: a string, null, an array', () => {
    for (const claims of ['abc', null, [1]]) {
      expect(() => signToken('tunnel', anyValue<object>(claims), fleet.secretKey)).toThrow(new TypeError('token claims: expected a plain object'));
    }
  });
  it('a reserved kind claim', () => {
    expect(() => signToken('tunnel', { kind: 'x' }, fleet.secretKey)).toThrow(new RangeError('token claims: `kind` is reserved'));
  });
  it('an exp that is not a finite number: a string, Infinity, NaN', () => {
    for (const exp of ['1', Infinity, NaN]) {
      expect(() => signToken('tunnel', { exp }, fleet.secretKey)).toThrow(new RangeError('token claims: exp must be a finite number of seconds'));
    }
  });
  it('keys that are not base64url of the right size, or not strings, are RangeErrors naming the key', () => {
    expect(() => signToken('tunnel', {}, 'short')).toThrow(new RangeError('signing secret key: expected 64 bytes as base64url'));
    expect(() => verifyToken('tunnel', 'a.b', anyValue<string>(42))).toThrow(new RangeError('signing public key: expected 32 bytes as base64url'));
    expect(() => sealTo(anyValue<string>(42), 'x')).toThrow(new RangeError('box public key: expected 32 bytes as base64url'));
    expect(() => openSealed('short', 'x')).toThrow(new RangeError('box secret key: expected 32 bytes as base64url'));
  });
});

describe('openSealed: refusals and the size bound', () => {
  const me = boxKeyPair();
  it('too short, or not a string: MALFORMED, saying so', () => {
    for (const s of ['abc', anyValue<string>(42)]) {
      expect(refusal(() => openSealed(me.secretKey, s))).toEqual({ code: 'MALFORMED', message: 'sealed box: not base64url or too short', name: 'TokenError' });
    }
  });
  it('the wrong key: DECRYPT_FAILED, saying so', () => {
    expect(refusal(() => openSealed(boxKeyPair().secretKey, sealTo(me.publicKey, 'hi')))).toEqual({
      code: 'DECRYPT_FAILED',
      message: 'sealed box: does not open with this key',
      name: 'TokenError',
    });
  });
  it('up to 4 × MAX_TOKEN_LENGTH chars is decoded and tried; one more is refused before decoding', () => {
    // Canonical base64url of zero bytes that no key opens.
    expect(refusal(() => openSealed(me.secretKey, 'A'.repeat(4 * MAX_TOKEN_LENGTH))).code).toBe('DECRYPT_FAILED');
    expect(refusal(() => openSealed(me.secretKey, 'A'.repeat(4 * MAX_TOKEN_LENGTH + 4))).code).toBe('MALFORMED');
  });
});
