import type http from 'node:http';
import {
  signToken,
  RELAY_DESCRIPTION_KIND,
  RELAY_DESCRIPTION_PATH,
  RELAY_DESCRIPTION_TTL_SECONDS,
  type RelayDescription,
  type RelayDescriptionClaims,
} from '@tunnel/protocol';
import type { FleetKeys } from './control/keys.js';

/** Re-sign at most this often: anyone may ask, and a signature costs a little CPU. */
const RESIGN_AFTER_MS = 60_000;

/** Which listener answered: a client reaches that one with its own URL (the advertised one may name an inside address). */
export type DescribingListener = 'public' | 'connect' | 'control';

export interface DescribedUrls {
  connectUrl: string;
  controlUrl: string;
  publicUrl: string;
}

/**
 * This relay's `/.well-known/tunnel-relay` document: its connector endpoint,
 * control API and public URL, and the fleet key, with the same claims signed
 * by the fleet key so a client that already knows the key (from a credential)
 * can tell the fleet's answer from anyone else's.
 */
export class RelayDescriptionDocument {
  private cached: { at: number; key: string; doc: RelayDescription } | null = null;

  constructor(
    private readonly relayId: string,
    private readonly region: string,
    private readonly keys: FleetKeys,
    private readonly urls: () => DescribedUrls,
  ) {}

  /** True when the request asks for the description (the path alone; the caller decides which hosts may). */
  static asks(req: http.IncomingMessage): boolean {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    return (q === -1 ? url : url.slice(0, q)) === RELAY_DESCRIPTION_PATH;
  }

  /** Answers the request (GET/HEAD; anything else is 405). */
  serve(listener: DescribingListener, req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const body = JSON.stringify({ error: { code: 'method_not_allowed', message: `${RELAY_DESCRIPTION_PATH} answers GET only` } });
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const text = JSON.stringify({ ...this.document(), answeredBy: listener });
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : text);
  }

  /** The document (signed once a minute, or when the URLs change: the control API attaches after start). */
  document(): RelayDescription {
    const u = this.urls();
    const key = `${u.connectUrl} ${u.controlUrl} ${u.publicUrl}`;
    if (this.cached && this.cached.key === key && Date.now() - this.cached.at < RESIGN_AFTER_MS) return this.cached.doc;
    const now = Math.floor(Date.now() / 1000);
    const claims: RelayDescriptionClaims = {
      relayId: this.relayId,
      region: this.region,
      connect: [u.connectUrl],
      control: u.controlUrl || null,
      public: u.publicUrl || null,
      iat: now,
      exp: now + RELAY_DESCRIPTION_TTL_SECONDS,
    };
    const { iat: _iat, exp: _exp, ...clear } = claims;
    const doc: RelayDescription = { tunnelRelay: 1, ...clear, fleetKey: this.keys.publicKey, signed: signToken(RELAY_DESCRIPTION_KIND, claims, this.keys.secretKey) };
    this.cached = { at: Date.now(), key, doc };
    return doc;
  }
}
