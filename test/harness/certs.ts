// A private CA and the certificates it signs, made with the openssl binary
// (what an operator with a private CA would run). Suites that need it skip
// when openssl is absent, and fail under CI.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

export function opensslMissing(suite: string): string | null {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return null;
  } catch {
    const why = 'openssl is not installed';
    if (process.env.CI === 'true') throw new Error(`${suite}: ${why}`);
    console.log(`skipping ${suite}: ${why}`);
    return why;
  }
}

export interface Ca {
  cert: string;
  key: string;
  dir: string;
}

export function makeCa(dir: string, name = 'Test Fleet CA'): Ca {
  const cert = path.join(dir, `${name.replace(/\W+/g, '-')}.pem`);
  const key = path.join(dir, `${name.replace(/\W+/g, '-')}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key, dir };
}

/** A leaf for 127.0.0.1 (and `names`) signed by `ca`, written to `<base>.pem` / `<base>.key`. */
export function issueCert(ca: Ca, base: string, o: { cn?: string; names?: string[] } = {}): { cert: string; key: string } {
  const cert = `${base}.pem`;
  const key = `${base}.key`;
  const csr = `${base}.csr`;
  const ext = `${base}.ext`;
  execFileSync('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${o.cn ?? '127.0.0.1'}`, '-keyout', key, '-out', csr], { stdio: 'ignore' });
  writeFileSync(ext, `subjectAltName=IP:127.0.0.1,DNS:localhost${(o.names ?? []).map((n) => `,DNS:${n}`).join('')}\nextendedKeyUsage=serverAuth\n`);
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}
