// Names of quick tunnels (DESIGN §13): the reserved account that holds the
// quick zone, and the random labels under it.

import { randomBytes } from 'node:crypto';

/**
 * The account quick tunnels belong to. `@` is outside the account-name
 * grammar of the control API and the dashboard, and ensureAccount refuses
 * it, so nobody can log in to it or be granted it: the quick zone it holds
 * is closed to every account by the ordinary zone rules.
 */
export const QUICK_ACCOUNT = '@quick';

export function isReservedAccountName(name: string): boolean {
  return name.trim().toLowerCase() === QUICK_ACCOUNT;
}

/** RFC 4648 base32, lower-case: DNS-safe, case-insensitive like DNS itself. */
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** Random bytes in a label: 80 bits, 16 characters. */
export const LABEL_BYTES = 10;

/** A fresh random label: 80 bits as 16 base32 characters (5 bits each, no padding: 80 is a multiple of 5). */
export function randomLabel(): string {
  const bytes = randomBytes(LABEL_BYTES);
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(acc >>> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

const LABEL_RE = /^[a-z2-7]{16}$/;

export function isQuickLabel(s: string): boolean {
  return LABEL_RE.test(s);
}
