// What one relay knows only about itself — its request counts per tunnel and
// the streams in flight on each connector connection — and how the relay
// serving the dashboard asks its peers for theirs: a GET signed with the
// fleet's relay-to-relay scheme (no client, headers or body), answered only
// to that signature or the operator key.

import type http from 'node:http';
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import type { Logger } from 'pino';
import type { RelayMember } from '../store/types.js';
import type { CountsByTunnel } from '../store/relay-history.js';
import type { TunnelConnections } from '../connectors/tunnel-connections.js';
import type { OperatorKeyGuard } from '../control/operator-key-guard.js';
import { bearer, tooManyKeyFailures } from '../control/control-auth.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import { PeerAuth, headersDigest, readSignedRequest, type SignedRequest } from '../fleet/peer-auth.js';

export const STATS_PATH = '/dashboard/api/relay-stats';
/** The digest of "no forwarded headers": a stats call signs none. */
const NO_HEADERS = headersDigest([]);
/** A peer's answer is read up to this size (4,000 tunnels and 1,000 connections fit). */
const MAX_STATS_BYTES = 1024 * 1024;

export interface RelayStats {
  relayId: string;
  at: number;
  /** Cumulative for the relay id (what its history records), per tunnel ('' = unrouted). */
  tunnels: CountsByTunnel;
  connections: Record<string, { streams: number; state: string }>;
}

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
// A peer is a fleet member, but its answer is still checked before it is summed or shown.
const statsSchema = z.object({
  relayId: z.string().max(128),
  at: z.number().int().nonnegative(),
  tunnels: z.record(z.string().max(64), z.object({ requests: count, errors: count })),
  connections: z.record(z.string().max(64), z.object({ streams: count, state: z.string().max(32) })),
});

export interface RelayStatsDeps {
  relayId: string;
  log: Logger;
  operatorGuard?: OperatorKeyGuard;
  peerAuth: PeerAuth;
  connections: TunnelConnections;
  /** Cumulative counts per tunnel (the relay history publisher's). */
  counts(): CountsByTunnel;
  /** Set when the relay has certificates: stats are asked of https:// peers only, verified with this. */
  peerTls?: { dispatcher?: Dispatcher };
}

export class RelayStatsClient {
  constructor(private readonly d: RelayStatsDeps) {}

  local(): RelayStats {
    const connections: RelayStats['connections'] = {};
    for (const c of this.d.connections.list()) connections[c.id.connectionId] = { streams: c.inflight, state: c.state };
    return { relayId: this.d.relayId, at: Date.now(), tunnels: this.d.counts(), connections };
  }

  /**
   * A peer's call signed with the fleet's relay-to-relay scheme (method,
   * Host, path and query, a nonce claimed in the replay cache), or the
   * operator key.
   */
  async authorized(req: http.IncomingMessage): Promise<boolean> {
    const op = bearer(req.headers.authorization);
    if (this.d.operatorGuard && op) {
      const check = await this.d.operatorGuard.check(stripV4Mapped(req.socket.remoteAddress ?? ''), op);
      if (!check.ok && check.status === 429) throw tooManyKeyFailures(check.retryAfterS);
      return check.ok;
    }
    const read = readSignedRequest(req);
    if (typeof read === 'string') return false;
    // A stats call carries no client, headers or body: only those exact values verify.
    const { fields, sig } = read;
    if (fields.clientIp !== '' || fields.scheme !== '' || fields.body.kind !== 'none') return false;
    const why = await this.d.peerAuth.verify({ ...fields, headers: NO_HEADERS }, sig);
    if (why) this.d.log.debug({ from: fields.from, why }, 'relay stats call refused');
    return why === null;
  }

  /** A peer's stats, or null when it cannot be asked or does not answer well within 800 ms. */
  async peer(r: RelayMember): Promise<RelayStats | null> {
    if (!r.controlUrl) return null;
    // A relay with certificates never sends its stats signature in clear.
    if (this.d.peerTls && !r.controlUrl.startsWith('https://')) return null;
    try {
      const url = new URL(r.controlUrl.replace(/\/+$/, '') + STATS_PATH);
      const res = await request(url, {
        headers: this.headers(url),
        ...(this.d.peerTls?.dispatcher ? { dispatcher: this.d.peerTls.dispatcher } : {}),
        headersTimeout: 800,
        bodyTimeout: 800,
      });
      if (res.statusCode !== 200 || Number(res.headers['content-length'] ?? 0) > MAX_STATS_BYTES) {
        await res.body.dump();
        return null;
      }
      let size = 0;
      const chunks: Buffer[] = [];
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > MAX_STATS_BYTES) {
          res.body.destroy();
          return null;
        }
        chunks.push(chunk as Buffer);
      }
      const parsed = statsSchema.safeParse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      if (!parsed.success || parsed.data.relayId !== r.id) {
        this.d.log.debug({ relayId: r.id }, 'relay stats answer refused: not a stats record of that relay');
        return null;
      }
      return parsed.data;
    } catch {
      return null;
    }
  }

  private headers(url: URL): Record<string, string> {
    const fields: SignedRequest = {
      from: this.d.relayId,
      time: Date.now(),
      nonce: PeerAuth.nonce(),
      requestId: '',
      method: 'GET',
      host: url.host,
      target: url.pathname + url.search,
      clientIp: '',
      scheme: '',
      headers: NO_HEADERS,
      body: { kind: 'none' },
    };
    const pairs = this.d.peerAuth.headerPairs(fields, this.d.peerAuth.sign(fields));
    const out: Record<string, string> = {};
    for (let i = 0; i < pairs.length; i += 2) out[pairs[i]!] = pairs[i + 1]!;
    return out;
  }
}
