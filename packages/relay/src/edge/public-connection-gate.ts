import type { Socket } from 'node:net';
import type { LimitHits } from '../relay-limits.js';
import { stripV4Mapped } from './client-ip.js';

/**
 * Counts open public connections, in total and per client IP, and turns
 * away the ones over either ceiling with a plain HTTP answer (503 over the
 * total, 429 over the per-IP one) and a close, while the relay still has
 * descriptors to spare. Refused sockets are marked so the request handlers
 * leave them alone if the client's request arrives before the close.
 */
export class PublicConnectionGate {
  private total = 0;
  private readonly perIp = new Map<string, number>();
  private readonly refused = new WeakSet<Socket>();

  constructor(
    private readonly limits: { publicConnections: number; publicConnectionsPerIp: number },
    private readonly hits: LimitHits,
  ) {}

  get open(): number {
    return this.total;
  }

  /** True when the socket was refused (or is one refused earlier). */
  isRefused(socket: object): boolean {
    return this.refused.has(socket as Socket);
  }

  /** A new connection on a public listener. `plain`: HTTP in clear, so we can answer before closing. */
  admit(socket: Socket, plain: boolean): void {
    const ip = stripV4Mapped(socket.remoteAddress ?? '');
    const { publicConnections: maxTotal, publicConnectionsPerIp: maxPerIp } = this.limits;
    const fromIp = this.perIp.get(ip) ?? 0;
    if (maxTotal > 0 && this.total >= maxTotal) return this.refuse(socket, plain, 'public_connections', 503, 'Service Unavailable', 'relay_at_capacity', 'this relay has too many open connections; retry shortly');
    if (maxPerIp > 0 && fromIp >= maxPerIp) return this.refuse(socket, plain, 'public_connections_per_ip', 429, 'Too Many Requests', 'too_many_connections', `too many open connections from ${ip}`);
    this.total++;
    this.perIp.set(ip, fromIp + 1);
    socket.once('close', () => {
      this.total--;
      const n = this.perIp.get(ip)! - 1;
      if (n === 0) this.perIp.delete(ip);
      else this.perIp.set(ip, n);
    });
  }

  private refuse(socket: Socket, plain: boolean, limit: 'public_connections' | 'public_connections_per_ip', status: number, text: string, code: string, message: string): void {
    this.hits.hit(limit);
    this.refused.add(socket);
    socket.on('error', () => {});
    if (!plain) return void socket.destroy();
    const body = JSON.stringify({ error: { status, code, message } }) + '\n';
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nRetry-After: 1\r\n` +
        `Tunnel-Error: ${code}\r\nTunnel-Error-Source: relay\r\nConnection: close\r\n\r\n${body}`,
    );
    // A client that never closes its side must not keep the descriptor.
    setTimeout(() => socket.destroy(), 2_000).unref();
  }
}
