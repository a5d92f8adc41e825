// The operator's ACME DNS hook for tests: a small node script the relay runs
// as `HOOK set|clear _acme-challenge.ZONE VALUE`. It publishes the TXT record
// in the harness's DNS server (through its control endpoint) and appends each
// call to a log; for the records named in `hang` it starts a grandchild and
// never returns, for those in `fail` it writes to stderr and exits 3.

import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

export interface HookCall {
  action: 'set' | 'clear';
  record: string;
  value: string;
  /** The hook's pid, and its grandchild's for a hanging run. */
  pid: number;
  child?: number;
  /** The same three from the environment (ACME_DNS_*), to check both ways are given. */
  env: { action?: string; record?: string; value?: string };
}

export interface DnsHookScript {
  file: string;
  calls(): HookCall[];
}

export function writeDnsHook(dir: string, o: { controlUrl: string; hang?: string[]; fail?: string[] }): DnsHookScript {
  const file = path.join(dir, 'dns-hook.mjs');
  const log = path.join(dir, 'dns-hook.log');
  writeFileSync(
    file,
    `#!${process.execPath}
import { appendFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
const [action, record, value] = process.argv.slice(2);
const env = { action: process.env.ACME_DNS_ACTION, record: process.env.ACME_DNS_RECORD, value: process.env.ACME_DNS_VALUE };
const note = (extra = {}) => appendFileSync(${JSON.stringify(log)}, JSON.stringify({ action, record, value, pid: process.pid, env, ...extra }) + '\\n');
if (${JSON.stringify(o.hang ?? [])}.includes(record)) {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  note({ child: child.pid });
  setInterval(() => {}, 1000);
} else if (${JSON.stringify(o.fail ?? [])}.includes(record)) {
  note();
  process.stderr.write('zone not managed by this DNS provider\\n');
  process.exit(3);
} else {
  const url = ${JSON.stringify(o.controlUrl)} + '/txt/' + record;
  const r = await fetch(url, action === 'set' ? { method: 'PUT', body: value } : { method: 'DELETE' });
  if (r.status !== 204) { process.stderr.write('DNS control answered ' + r.status + '\\n'); process.exit(1); }
  note();
}
`,
  );
  chmodSync(file, 0o755);
  return {
    file,
    calls: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as HookCall) : []),
  };
}
