import { createHash } from 'node:crypto';

/**
 * The Access contract between relays and connectors (DESIGN §14): the
 * header a relay puts on every request it lets through a policy, and where
 * the keys that verify it are published. The relay drops any client-sent
 * header of these names before it adds its own.
 */
export const AccessHeaders = {
  /** The signed JWT (EdDSA) a relay sends toward the origin. */
  assertion: 'tunnel-access-jwt-assertion',
  /** The identity the assertion names, for origins that only log it. */
  email: 'tunnel-access-authenticated-user-email',
  /** A service token's id and secret, sent by machines. */
  clientId: 'tunnel-access-client-id',
  clientSecret: 'tunnel-access-client-secret',
} as const;

/** Every header a client may not set itself: the relay consumes or replaces them. */
export function isAccessHeader(lowerName: string): boolean {
  return lowerName.startsWith('tunnel-access-');
}

/** On the control API of every relay of the fleet. */
export const ACCESS_JWKS_PATH = '/.well-known/tunnel-access/certs';

/** The longest an assertion may live: an origin refuses one valid for longer. */
export const MAX_ASSERTION_SECONDS = 300;

/**
 * The assertion's `iss`: one name for the whole fleet, derived from the
 * fleet's public key (every relay and every connector credential carries
 * it), so a connector knows what to expect without asking anyone.
 */
export function fleetIssuer(fleetPublicKey: string): string {
  return `urn:tunnel:fleet:${createHash('sha256').update(fleetPublicKey, 'utf8').digest('base64url').slice(0, 22)}`;
}
