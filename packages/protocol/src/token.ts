// Fleet-signed tokens and the small crypto helpers around them.
//
// The fleet has one Ed25519 key pair; whatever it issues is signed so any
// relay can verify it offline. A token is
//
//   base64url(JSON payload) '.' base64url(Ed25519 signature)
//
// The payload is the caller's claims plus a `kind` field, and the signature
// covers a domain-separation prefix naming the kind as well as the payload
// bytes exactly as sent: a signature made for one purpose (or by some other
// protocol using the same key) never verifies as another.
//
// Keys, signing and boxes use tweetnacl. Verification, the one operation an
// unauthenticated peer can make us run at will (every connect presents a
// token), uses Node's native Ed25519 on the same key bytes: measured here at
// 0.14 ms against tweetnacl's 8.4 ms, and it also refuses malleable
// signatures (S >= L) that tweetnacl accepts. Ed25519 is deterministic, so
// both libraries produce and accept the same signatures.

import { createPublicKey, randomBytes, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';
import { MAX_TOKEN_LENGTH } from './limits.js';

export type TokenErrorCode =
  | 'MALFORMED' // not base64url.base64url, payload not a JSON object, bad kind or exp
  | 'BAD_SIGNATURE'
  | 'WRONG_KIND' // validly signed, but for another purpose
  | 'EXPIRED'
  | 'DECRYPT_FAILED'; // a sealed box that does not open with this key

export class TokenError extends Error {
  override readonly name = 'TokenError';
  readonly code: TokenErrorCode;
  constructor(code: TokenErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface KeyPair {
  /** base64url */
  publicKey: string;
  /** base64url; never log it */
  secretKey: string;
}

export interface VerifiedToken {
  kind: string;
  /** The claims as signed, without the `kind` field. Validate their shape before use. */
  claims: Record<string, unknown>;
}

export interface VerifyOptions {
  /** Clock for the `exp` check, in ms since the epoch; defaults to Date.now(). */
  now?: number;
}

const DOMAIN = 'tunnel-token/v1\n';
const KIND_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const B64URL_RE = /^[A-Za-z0-9_-]*$/;
// fatal: invalid UTF-8 is refused, not mapped to U+FFFD; ignoreBOM leaves a BOM for JSON.parse to refuse.
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Strict base64url: only canonical unpadded encodings, so one value has exactly one spelling. */
function fromB64url(s: string): Buffer | null {
  if (!B64URL_RE.test(s) || s.length % 4 === 1) return null;
  const buf = Buffer.from(s, 'base64url');
  return buf.toString('base64url') === s ? buf : null;
}

function keyBytes(key: string, length: number, what: string): Uint8Array {
  const buf = typeof key === 'string' ? fromB64url(key) : null;
  if (buf === null || buf.length !== length) {
    throw new RangeError(`${what}: expected ${length} bytes as base64url`);
  }
  return buf;
}

let cachedVerifyKey: { raw: string; key: KeyObject } | null = null;

/** The fleet public key as a native key object; relays verify with one key, so one is cached. */
function verifyKey(publicKey: string): KeyObject {
  if (cachedVerifyKey !== null && cachedVerifyKey.raw === publicKey) return cachedVerifyKey.key;
  keyBytes(publicKey, nacl.sign.publicKeyLength, 'signing public key');
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey }, format: 'jwk' });
  cachedVerifyKey = { raw: publicKey, key };
  return key;
}

function signedBytes(kind: string, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${DOMAIN}${kind}\n`, 'utf8'), payload]);
}

/** A fresh fleet signing key pair (Ed25519). */
export function generateSigningKeyPair(): KeyPair {
  const kp = nacl.sign.keyPair();
  return {
    publicKey: Buffer.from(kp.publicKey).toString('base64url'),
    secretKey: Buffer.from(kp.secretKey).toString('base64url'),
  };
}

/**
 * Signs `claims` as a token of `kind`. Claims must be a JSON object without a
 * `kind` field; a numeric `exp` (seconds since the epoch) makes it expire.
 */
export function signToken<T extends object>(kind: string, claims: T, secretKey: string): string {
  if (typeof kind !== 'string' || !KIND_RE.test(kind)) {
    throw new RangeError(`token kind ${JSON.stringify(kind)}: expected 1-64 chars of [A-Za-z0-9._-]`);
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) {
    throw new TypeError('token claims: expected a plain object');
  }
  if (Object.prototype.hasOwnProperty.call(claims, 'kind')) {
    throw new RangeError('token claims: `kind` is reserved');
  }
  const exp: unknown = (claims as Record<string, unknown>)['exp'];
  if (exp !== undefined && (typeof exp !== 'number' || !Number.isFinite(exp))) {
    throw new RangeError('token claims: exp must be a finite number of seconds');
  }
  const key = keyBytes(secretKey, nacl.sign.secretKeyLength, 'signing secret key');
  const payload = Buffer.from(JSON.stringify({ kind, ...claims }), 'utf8');
  const token = `${payload.toString('base64url')}.${Buffer.from(nacl.sign.detached(signedBytes(kind, payload), key)).toString('base64url')}`;
  if (token.length > MAX_TOKEN_LENGTH) {
    throw new RangeError(`token: ${token.length} chars exceeds the limit of ${MAX_TOKEN_LENGTH}`);
  }
  return token;
}

/**
 * Verifies a token of `kind` against the fleet public key. Throws TokenError:
 * MALFORMED, BAD_SIGNATURE, WRONG_KIND (checked only after the signature, so
 * it never reveals anything about forgeries) or EXPIRED. A malformed public
 * key is a configuration error and throws RangeError.
 */
export function verifyToken(kind: string, token: string, publicKey: string, options: VerifyOptions = {}): VerifiedToken {
  const key = verifyKey(publicKey);
  if (typeof token !== 'string') throw new TokenError('MALFORMED', 'token: not a string');
  if (token.length > MAX_TOKEN_LENGTH) {
    throw new TokenError('MALFORMED', `token: ${token.length} chars exceeds the limit of ${MAX_TOKEN_LENGTH}`);
  }
  const dot = token.indexOf('.');
  if (dot < 0 || token.indexOf('.', dot + 1) >= 0) throw new TokenError('MALFORMED', 'token: expected two base64url parts separated by one dot');
  const payload = fromB64url(token.slice(0, dot));
  const sig = fromB64url(token.slice(dot + 1));
  if (payload === null || payload.length === 0 || sig === null) {
    throw new TokenError('MALFORMED', 'token: a part is not canonical base64url');
  }
  if (sig.length !== nacl.sign.signatureLength) {
    throw new TokenError('MALFORMED', `token: signature is ${sig.length} bytes, expected ${nacl.sign.signatureLength}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(fatalUtf8.decode(payload));
  } catch {
    throw new TokenError('MALFORMED', 'token: payload is not UTF-8 JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new TokenError('MALFORMED', 'token: payload is not a JSON object');
  }
  const { kind: signedKind, ...claims } = parsed as Record<string, unknown>;
  if (typeof signedKind !== 'string' || !KIND_RE.test(signedKind)) {
    throw new TokenError('MALFORMED', 'token: payload has no valid kind');
  }
  if (!cryptoVerify(null, signedBytes(signedKind, payload), key, sig)) {
    throw new TokenError('BAD_SIGNATURE', 'token: signature does not verify');
  }
  if (signedKind !== kind) {
    throw new TokenError('WRONG_KIND', `token: is a ${JSON.stringify(signedKind)} token, expected ${JSON.stringify(kind)}`);
  }
  const exp = claims['exp'];
  if (exp !== undefined) {
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new TokenError('MALFORMED', 'token: exp is not a number');
    if (exp * 1000 <= (options.now ?? Date.now())) throw new TokenError('EXPIRED', 'token: expired');
  }
  return { kind: signedKind, claims };
}

/**
 * Compares secrets without leaking, through timing, where they differ. Their
 * lengths are not secret: a length mismatch returns false straight away
 * (after a comparison of the same cost, so callers see no shortcut).
 */
export function constantTimeEqual(a: string | Buffer, b: string | Buffer): boolean {
  const x = typeof a === 'string' ? Buffer.from(a, 'utf8') : a;
  const y = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  if (x.length !== y.length) {
    timingSafeEqual(x, x);
    return false;
  }
  return timingSafeEqual(x, y);
}

/** A random identifier: `bytes` random bytes as base64url (16 bytes → 22 chars). */
export function randomId(bytes = 16): string {
  return randomBytes(bytes).toString('base64url');
}

// ---------------------------------------------------------------- sealed boxes (login device flow)

const BOX_PK = nacl.box.publicKeyLength;
const BOX_NONCE = nacl.box.nonceLength;

/** A Curve25519 box key pair for receiving sealed messages. */
export function boxKeyPair(): KeyPair {
  const kp = nacl.box.keyPair();
  return {
    publicKey: Buffer.from(kp.publicKey).toString('base64url'),
    secretKey: Buffer.from(kp.secretKey).toString('base64url'),
  };
}

/**
 * Encrypts to a box public key from a throwaway sender key, so the result
 * proves nothing about who sealed it: only that it is for the recipient and
 * untampered. Output: base64url(ephemeral public key | nonce | ciphertext).
 */
export function sealTo(recipientPublicKey: string, plaintext: Uint8Array | string): string {
  const pk = keyBytes(recipientPublicKey, BOX_PK, 'box public key');
  const message = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext;
  const eph = nacl.box.keyPair();
  const nonce = randomBytes(BOX_NONCE);
  const ct = nacl.box(message, nonce, pk, eph.secretKey);
  return Buffer.concat([eph.publicKey, nonce, ct]).toString('base64url');
}

/** Opens what sealTo produced. Throws TokenError MALFORMED or DECRYPT_FAILED. */
export function openSealed(secretKey: string, sealed: string): Buffer {
  const sk = keyBytes(secretKey, nacl.box.secretKeyLength, 'box secret key');
  const raw = typeof sealed === 'string' && sealed.length <= 4 * MAX_TOKEN_LENGTH ? fromB64url(sealed) : null;
  if (raw === null || raw.length < BOX_PK + BOX_NONCE + nacl.box.overheadLength) {
    throw new TokenError('MALFORMED', 'sealed box: not base64url or too short');
  }
  const opened = nacl.box.open(
    raw.subarray(BOX_PK + BOX_NONCE),
    raw.subarray(BOX_PK, BOX_PK + BOX_NONCE),
    raw.subarray(0, BOX_PK),
    sk,
  );
  if (opened === null) throw new TokenError('DECRYPT_FAILED', 'sealed box: does not open with this key');
  return Buffer.from(opened.buffer, opened.byteOffset, opened.length);
}
