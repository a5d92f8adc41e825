import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/**
 * The certificate an ACME relay without `--tls-cert` answers unknown SNI
 * names with (unrouted, or while an order runs). Nobody should trust it: it
 * only lets the handshake finish so the client gets the 404 page instead of a
 * TLS alert. Made in memory at start (a fresh key per process, never
 * written): nothing about it is secret or shared.
 */
export async function selfSignedFallback(commonName = 'tunnel-relay fallback'): Promise<{ cert: string; key: string }> {
  x509.cryptoProvider.set(webcrypto as never);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=${commonName}`,
    // A minute back for clocks a little behind ours.
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 365 * 86_400_000),
    signingAlgorithm: alg,
    keys: keys as never,
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey as never));
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString('pem'), key };
}
