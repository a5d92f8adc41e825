// `GET /.well-known/tunnel-relay`: every relay listener (public, connector
// endpoint, control API) describes the relay, so a user needs only one of its
// URLs and every command finds the endpoint it needs from it.

/** The path every relay listener answers with its description. */
export const RELAY_DESCRIPTION_PATH = '/.well-known/tunnel-relay';

/** A client reads at most this much of a description: anything bigger is not one. */
export const MAX_RELAY_DESCRIPTION_BYTES = 16 * 1024;

/** How long a signed description stays valid: a replayed old one cannot outlive this. */
export const RELAY_DESCRIPTION_TTL_SECONDS = 600;

/** Token kind of the signed part (domain-separated from every other token). */
export const RELAY_DESCRIPTION_KIND = 'relay-description';

/** What the fleet key vouches for: the relay's endpoints. */
export interface RelayDescriptionClaims {
  relayId: string;
  region: string;
  /** Connector endpoints (ws:// or wss://) `tunnel run` dials. */
  connect: string[];
  /** The control API `tunnel login` and the account commands talk to; null when the relay serves none. */
  control: string | null;
  /** The public listener (`tunnel access tcp` connects there); null when the relay serves none. */
  public: string | null;
  iat: number;
  exp: number;
}

/**
 * The JSON document: the claims in the clear (for people and `curl`), the
 * fleet public key, and `signed`, the same claims as a token signed with the
 * fleet key. Clients act only on the signed claims.
 */
export interface RelayDescription extends Omit<RelayDescriptionClaims, 'iat' | 'exp'> {
  tunnelRelay: 1;
  fleetKey: string;
  signed: string;
  /**
   * The listener that answered (not signed: a client uses it only to reach
   * that listener by the URL it already used, never to go somewhere new).
   */
  answeredBy?: 'public' | 'connect' | 'control';
}
