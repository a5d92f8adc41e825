import { request } from 'undici';
import { readFileSync, writeFileSync, mkdirSync, renameSync, unlinkSync } from 'node:fs';
import { join, dirname, basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import { tunnelHome } from '../cli/tunnel-home.js';
import { relayTrust, certificateHint } from '../origin/ca-trust.js';
import type { RelayEndpoints } from './relay-lookup.js';

/** A refusal or failure from the relay's control API, with its stable code. */
export class ControlError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** `cert.json`: the account credential `tunnel login` obtained. */
export interface AccountCert {
  accountId: string;
  accountName: string;
  controlUrl: string;
  credential: string;
  /** The private CA given to `tunnel login --ca-file`, used by later commands too. */
  caFile?: string;
  /** What login learned from the relay's /.well-known/tunnel-relay. */
  relay?: RelayEndpoints;
}

export function certPath(): string {
  return join(tunnelHome(), 'cert.json');
}

export function readCert(): AccountCert {
  const path = certPath();
  let v: Partial<AccountCert>;
  try {
    v = JSON.parse(readFileSync(path, 'utf8')) as Partial<AccountCert>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ControlError(0, 'not_logged_in', code === 'ENOENT' ? `no ${path}: run \`tunnel login --relay URL\` first` : `cannot read ${path}: ${(e as Error).message}`);
  }
  if (typeof v.credential !== 'string' || typeof v.controlUrl !== 'string') throw new ControlError(0, 'bad_cert', `${path} is not an account credential; run \`tunnel login\` again`);
  // An explicit --ca-file / TUNNEL_CA_FILE wins over the one saved at login.
  if (typeof v.caFile === 'string' && v.caFile && !relayTrust.file) relayTrust.use(v.caFile);
  return {
    accountId: String(v.accountId ?? ''),
    accountName: String(v.accountName ?? ''),
    controlUrl: v.controlUrl,
    credential: v.credential,
    ...(typeof v.caFile === 'string' && v.caFile ? { caFile: v.caFile } : {}),
    ...(v.relay && typeof v.relay === 'object' && typeof v.relay.fleetKey === 'string' ? { relay: v.relay } : {}),
  };
}

/**
 * Files holding credentials are created 0600 inside a 0700 TUNNEL_HOME, and
 * replaced atomically (write a temporary file, rename): a connector watching
 * the file never reads half of one.
 */
export function writeSecretFile(path: string, data: unknown): void {
  writeSecretText(path, JSON.stringify(data, null, 2) + '\n');
}

export function writeSecretText(path: string, text: string): void {
  mkdirSync(tunnelHome(), { recursive: true, mode: 0o700 });
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* never created */
    }
    throw e;
  }
}

export async function api<T>(baseUrl: string, method: string, path: string, o: { auth?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const url = baseUrl.replace(/\/+$/, '') + path;
  let r;
  try {
    r = await request(url, {
      method: method as 'GET',
      headers: { accept: 'application/json', ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(o.auth ? { authorization: `Bearer ${o.auth}` } : {}) },
      body: o.body !== undefined ? JSON.stringify(o.body) : undefined,
      headersTimeout: 15_000,
      bodyTimeout: 15_000,
      dispatcher: relayTrust.dispatcher(),
    });
  } catch (e) {
    const err = e as { code?: string; message: string; cause?: { code?: string } };
    const code = err.code ?? err.cause?.code;
    throw new ControlError(0, 'unreachable', `cannot reach the control API at ${baseUrl}: ${code ?? err.message}${certificateHint(code)}`);
  }
  const text = await r.body.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    throw new ControlError(r.statusCode, 'bad_response', `${baseUrl} did not answer with JSON (HTTP ${r.statusCode}); is it a relay control API?`);
  }
  if (r.statusCode >= 400) {
    const e = (body as { error?: { code?: string; message?: string } }).error;
    throw new ControlError(r.statusCode, e?.code ?? `http_${r.statusCode}`, e?.message ?? `HTTP ${r.statusCode}`);
  }
  return { status: r.statusCode, body: body as T };
}
