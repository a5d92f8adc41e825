import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { generateSigningKeyPair, type KeyPair } from '@tunnel/protocol';

/**
 * The fleet's Ed25519 signing key pair, shared by every relay of the fleet:
 * anything one relay signs, any other verifies offline.
 */
export interface FleetKeys extends KeyPair {
  createdAt: string;
}

export class KeyFileError extends Error {}

export function generateKeyFile(path: string, force = false): FleetKeys {
  if (existsSync(path) && !force) {
    throw new KeyFileError(`${path} already exists; refusing to overwrite the fleet key (use --force to replace it, which invalidates every credential issued)`);
  }
  const keys: FleetKeys = { ...generateSigningKeyPair(), createdAt: new Date().toISOString() };
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(keys, null, 2) + '\n', { mode: 0o600 });
  return keys;
}

export function loadKeyFile(path: string): FleetKeys {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new KeyFileError(
      code === 'ENOENT'
        ? `fleet key file ${path} does not exist; create it with \`tunnel-relay keys generate --out ${path}\``
        : `cannot read fleet key file ${path}: ${(e as Error).message}`,
    );
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new KeyFileError(`fleet key file ${path} is not valid JSON`);
  }
  const k = v as Partial<FleetKeys>;
  if (typeof k.publicKey !== 'string' || typeof k.secretKey !== 'string') {
    throw new KeyFileError(`fleet key file ${path} lacks publicKey/secretKey`);
  }
  return { publicKey: k.publicKey, secretKey: k.secretKey, createdAt: String(k.createdAt ?? '') };
}
