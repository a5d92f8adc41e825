// What a relay's HTTPS listener hands a client for an SNI name, and its ACME
// order counters, for the ACME tests.

import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { scrape } from './limit-metrics.js';

/** The certificate a TLS handshake with this SNI gets (not verified: the test looks at it). */
export function peerCertificate(port: number, servername: string, alpn?: string[]): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ...(alpn ? { ALPNProtocols: alpn } : {}) }, () => {
      const raw = s.getPeerX509Certificate();
      s.destroy();
      if (raw) resolve(raw);
      else reject(new Error('no peer certificate'));
    });
    s.on('error', reject);
    s.setTimeout(60_000, () => s.destroy(new Error(`no handshake with ${servername} in 60 s`)));
  });
}

/** tunnel_relay_acme_orders_total by result (ok, failed, rate_limited). */
export async function ordersTotal(metrics: string): Promise<Record<string, number>> {
  const m = await scrape(metrics, 'tunnel_relay_acme_orders_total');
  return Object.fromEntries([...m].map(([k, v]) => [k.replace(/^result=/, ''), v]));
}
