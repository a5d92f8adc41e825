import { describe, it, expect } from 'vitest';
import nacl from 'tweetnacl';
import {
  boxKeyPair,
  constantTimeEqual,
  generateSigningKeyPair,
  openSealed,
  randomId,
  sealTo,
  signToken,
  TokenError,
  verifyToken,
  type TokenErrorCode,
} from '../src/token.js';
import { MAX_TOKEN_LENGTH } from '../src/limits.js';

const fleet = generateSigningKeyPair();
const other = generateSigningKeyPair();
const claims = { jti: 'cred-1', accountId: 'acct-9', tunnelId: 't-1', relays: ['wss://a:7844', 'wss://b:7844'], iat: 1_700_000_000 };

const b64 = (b: Uint8Array | string): string => Buffer.from(b).toString('base64url');

/** Signs an arbitrary payload the way signToken does, to build tokens signToken refuses to make. */
function rawToken(payloadJson: string, kind: string, secretKey = fleet.secretKey): string {
  const payload = Buffer.from(payloadJson, 'utf8');
  const msg = Buffer.concat([Buffer.from(`tunnel-token/v1\n${kind}\n`), payload]);
  const sig = nacl.sign.detached(msg, Buffer.from(secretKey, 'base64url'));
  return `${b64(payload)}.${b64(sig)}`;
}

function expectCode(fn: () => unknown, code: TokenErrorCode): TokenError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError);
    expect((err as TokenError).code).toBe(code);
    return err as TokenError;
  }
  throw new Error(`expected TokenError ${code}, nothing was thrown`);
}

describe('signing keys', () => {
  it('are base64url strings of the Ed25519 sizes', () => {
    expect(Buffer.from(fleet.publicKey, 'base64url')).toHaveLength(32);
    expect(Buffer.from(fleet.secretKey, 'base64url')).toHaveLength(64);
    expect(fleet.publicKey).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(fleet.publicKey).not.toBe(other.publicKey);
  });
});

describe('signToken / verifyToken', () => {
  it('round-trips the claims and the kind', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    expect(token).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(verifyToken('tunnel', token, fleet.publicKey)).toEqual({ kind: 'tunnel', claims });
  });

  it('accepts an exp in the future, refuses one at or before now', () => {
    const now = 1_800_000_000_000;
    const live = signToken('enroll', { jti: 'e', exp: now / 1000 + 1 }, fleet.secretKey);
    expect(verifyToken('enroll', live, fleet.publicKey, { now }).claims['exp']).toBe(now / 1000 + 1);
    expectCode(() => verifyToken('enroll', live, fleet.publicKey, { now: now + 1000 }), 'EXPIRED');
    const old = signToken('enroll', { exp: Math.floor(Date.now() / 1000) - 60 }, fleet.secretKey);
    expectCode(() => verifyToken('enroll', old, fleet.publicKey), 'EXPIRED');
  });

  it('BAD_SIGNATURE for tampered claims', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    const [, sig] = token.split('.');
    const forged = b64(JSON.stringify({ kind: 'tunnel', ...claims, tunnelId: 't-2' }));
    expectCode(() => verifyToken('tunnel', `${forged}.${sig}`, fleet.publicKey), 'BAD_SIGNATURE');
  });

  it('BAD_SIGNATURE for a tampered signature, bit by bit', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    const [payload, sig] = token.split('.') as [string, string];
    const sigBytes = Buffer.from(sig, 'base64url');
    for (const bit of [0, 7, 100, 255, 511]) {
      const t = Buffer.from(sigBytes);
      t[bit >> 3]! ^= 1 << (bit & 7);
      expectCode(() => verifyToken('tunnel', `${payload}.${b64(t)}`, fleet.publicKey), 'BAD_SIGNATURE');
    }
  });

  it('BAD_SIGNATURE for a malleated signature (S + L) that tweetnacl alone would accept', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    const [payload, sig] = token.split('.') as [string, string];
    const bytes = Buffer.from(sig, 'base64url');
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(bytes[32 + i]!);
    s += L;
    const twin = Buffer.from(bytes);
    for (let i = 0; i < 32; i++, s >>= 8n) twin[32 + i] = Number(s & 0xffn);
    const signed = Buffer.concat([Buffer.from('tunnel-token/v1\ntunnel\n'), Buffer.from(payload, 'base64url')]);
    expect(nacl.sign.detached.verify(signed, twin, Buffer.from(fleet.publicKey, 'base64url'))).toBe(true);
    expectCode(() => verifyToken('tunnel', `${payload}.${b64(twin)}`, fleet.publicKey), 'BAD_SIGNATURE');
  });

  it('BAD_SIGNATURE under the wrong key', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    expectCode(() => verifyToken('tunnel', token, other.publicKey), 'BAD_SIGNATURE');
  });

  it('WRONG_KIND for a validly signed token of another kind', () => {
    const token = signToken('account', claims, fleet.secretKey);
    expect(expectCode(() => verifyToken('tunnel', token, fleet.publicKey), 'WRONG_KIND').message).toContain('account');
  });

  it('BAD_SIGNATURE when the kind in the payload is swapped (signature binds the kind)', () => {
    const token = signToken('account', claims, fleet.secretKey);
    const [, sig] = token.split('.');
    const relabelled = b64(JSON.stringify({ kind: 'tunnel', ...claims }));
    expectCode(() => verifyToken('tunnel', `${relabelled}.${sig}`, fleet.publicKey), 'BAD_SIGNATURE');
  });

  it('MALFORMED for strings that are not tokens', () => {
    const good = signToken('tunnel', claims, fleet.secretKey);
    const [payload, sig] = good.split('.') as [string, string];
    const malformed = [
      '',
      '.',
      'abc',
      `${payload}.${sig}.x`,
      `${payload}..${sig}`,
      `.${sig}`,
      `${payload}.`,
      `${payload}=.${sig}`, // padding is not canonical
      `${payload}.${sig}=`,
      `${payload}.${sig.slice(0, -1)}`, // truncated signature
      `${payload}.${sig}AA`, // too long signature
      `${payload.slice(0, -1)}+.${sig}`, // standard-alphabet base64, not base64url
      `${payload} .${sig}`,
      `${payload}.${sig}\n`,
      `${b64('not json')}.${sig}`,
      `${b64(Buffer.from([0x7b, 0xff, 0x7d]))}.${sig}`, // invalid UTF-8
      'x'.repeat(MAX_TOKEN_LENGTH + 1),
    ];
    for (const t of malformed) expectCode(() => verifyToken('tunnel', t, fleet.publicKey), 'MALFORMED');
    expectCode(() => verifyToken('tunnel', 42 as unknown as string, fleet.publicKey), 'MALFORMED');
  });

  it('MALFORMED for non-canonical base64url (unused trailing bits set)', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    const [payload, sig] = token.split('.') as [string, string];
    // A 64-byte signature is 86 chars; the last char carries 4 unused bits.
    const last = sig[sig.length - 1]!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = alphabet[alphabet.indexOf(last) ^ 1]!;
    expect(Buffer.from(`${sig.slice(0, -1)}${twin}`, 'base64url')).toEqual(Buffer.from(sig, 'base64url'));
    expectCode(() => verifyToken('tunnel', `${payload}.${sig.slice(0, -1)}${twin}`, fleet.publicKey), 'MALFORMED');
  });

  it('MALFORMED for signed payloads of the wrong shape', () => {
    expectCode(() => verifyToken('tunnel', rawToken('[1,2]', 'tunnel'), fleet.publicKey), 'MALFORMED');
    expectCode(() => verifyToken('tunnel', rawToken('null', 'tunnel'), fleet.publicKey), 'MALFORMED');
    expectCode(() => verifyToken('tunnel', rawToken('{"jti":"x"}', 'tunnel'), fleet.publicKey), 'MALFORMED');
    expectCode(() => verifyToken('tunnel', rawToken('{"kind":7}', 'tunnel'), fleet.publicKey), 'MALFORMED');
    expectCode(() => verifyToken('tunnel', rawToken('{"kind":"bad kind\\n"}', 'bad kind\n'), fleet.publicKey), 'MALFORMED');
    expectCode(() => verifyToken('tunnel', rawToken('{"kind":"tunnel","exp":"never"}', 'tunnel'), fleet.publicKey), 'MALFORMED');
    // Control: a hand-made token with a sane payload verifies, so the above fail for their shape.
    expect(verifyToken('tunnel', rawToken('{"kind":"tunnel","a":1}', 'tunnel'), fleet.publicKey).claims).toEqual({ a: 1 });
  });

  it('signToken refuses what verifyToken would refuse', () => {
    expect(() => signToken('', claims, fleet.secretKey)).toThrow(RangeError);
    expect(() => signToken('a\nb', claims, fleet.secretKey)).toThrow(RangeError);
    expect(() => signToken('tunnel', { kind: 'x' }, fleet.secretKey)).toThrow(RangeError);
    expect(() => signToken('tunnel', { exp: '1' }, fleet.secretKey)).toThrow(RangeError);
    expect(() => signToken('tunnel', [1] as unknown as object, fleet.secretKey)).toThrow(TypeError);
    expect(() => signToken('tunnel', claims, fleet.publicKey)).toThrow(RangeError);
    expect(() => signToken('tunnel', claims, 'not a key')).toThrow(RangeError);
    expect(() => signToken('tunnel', { blob: 'x'.repeat(MAX_TOKEN_LENGTH) }, fleet.secretKey)).toThrow(RangeError);
  });

  it('a bad public key is a configuration error (RangeError), not a token error', () => {
    const token = signToken('tunnel', claims, fleet.secretKey);
    expect(() => verifyToken('tunnel', token, 'short')).toThrow(RangeError);
    expect(() => verifyToken('tunnel', token, fleet.secretKey)).toThrow(RangeError);
  });
});

describe('constantTimeEqual', () => {
  it('compares strings and buffers, any lengths', () => {
    expect(constantTimeEqual('secret', 'secret')).toBe(true);
    expect(constantTimeEqual('secret', 'secreT')).toBe(false);
    expect(constantTimeEqual('secret', 'secret2')).toBe(false);
    expect(constantTimeEqual('', '')).toBe(true);
    expect(constantTimeEqual('', 'a')).toBe(false);
    expect(constantTimeEqual('a', '')).toBe(false);
    expect(constantTimeEqual(Buffer.from('abc'), 'abc')).toBe(true);
    expect(constantTimeEqual(Buffer.from([1, 2, 3]), Buffer.from([1, 2]))).toBe(false);
    expect(constantTimeEqual('é', Buffer.from('é', 'utf8'))).toBe(true);
  });
});

describe('randomId', () => {
  it('is base64url of the requested size and does not repeat', () => {
    expect(randomId()).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(randomId(32)).toHaveLength(43);
    expect(new Set(Array.from({ length: 1000 }, () => randomId())).size).toBe(1000);
  });
});

describe('sealed boxes', () => {
  const me = boxKeyPair();

  it('round-trip text and binary; each seal is different', () => {
    const a = sealTo(me.publicKey, '{"credential":"x"}');
    const b = sealTo(me.publicKey, '{"credential":"x"}');
    expect(a).not.toBe(b);
    expect(openSealed(me.secretKey, a).toString('utf8')).toBe('{"credential":"x"}');
    const bin = new Uint8Array([0, 255, 1, 254]);
    expect(openSealed(me.secretKey, sealTo(me.publicKey, bin))).toEqual(Buffer.from(bin));
    expect(openSealed(me.secretKey, sealTo(me.publicKey, ''))).toHaveLength(0);
  });

  it('DECRYPT_FAILED for the wrong key or any tampering', () => {
    const sealed = sealTo(me.publicKey, 'hello');
    expectCode(() => openSealed(boxKeyPair().secretKey, sealed), 'DECRYPT_FAILED');
    const raw = Buffer.from(sealed, 'base64url');
    for (const at of [0, 31, 32, 55, 56, raw.length - 1]) {
      const t = Buffer.from(raw);
      t[at]! ^= 0x01;
      expectCode(() => openSealed(me.secretKey, b64(t)), 'DECRYPT_FAILED');
    }
  });

  it('MALFORMED for non-base64url or too-short input', () => {
    for (const s of ['', 'abc', '!!!!', b64(Buffer.alloc(32 + 24 + 15))]) {
      expectCode(() => openSealed(me.secretKey, s), 'MALFORMED');
    }
  });

  it('RangeError for malformed keys', () => {
    expect(() => sealTo('nope', 'x')).toThrow(RangeError);
    expect(() => openSealed('nope', sealTo(me.publicKey, 'x'))).toThrow(RangeError);
  });
});
