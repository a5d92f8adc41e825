import { spawn } from 'node:child_process';

export type DnsHookAction = 'set' | 'clear';

export interface DnsHookSettings {
  /** The operator's command (run without a shell). */
  command: string;
  /** Longest one run may take; then its whole process group is killed. */
  timeoutMs: number;
}

/** What an operator's DNS hook said, kept short: it goes into logs and the dashboard. */
const STDERR_KEPT = 2_000;

/**
 * Runs the operator's DNS-01 hook as `COMMAND set|clear RECORD VALUE`, with
 * the same three in the environment (ACME_DNS_ACTION, ACME_DNS_RECORD,
 * ACME_DNS_VALUE) for hooks that prefer it. `set` must return once the TXT
 * record is published. The hook runs in its own process group so that a
 * timeout kills what it started too (a `sleep` in a shell script would
 * otherwise outlive it); its stdout is ignored, its stderr ends up in the
 * failure's message.
 */
export function runDnsHook(hook: DnsHookSettings, action: DnsHookAction, record: string, value: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(hook.command, [action, record, value], {
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ACME_DNS_ACTION: action, ACME_DNS_RECORD: record, ACME_DNS_VALUE: value },
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (stderr.length < STDERR_KEPT) stderr += d.slice(0, STDERR_KEPT - stderr.length);
    });
    const what = `DNS hook ${hook.command} ${action} ${record}`;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, hook.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${what} could not start: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const said = stderr.trim();
      if (timedOut) return reject(new Error(`${what} timed out after ${hook.timeoutMs} ms and was killed${said ? `: ${said}` : ''}`));
      if (code === 0) return resolve();
      reject(new Error(`${what} failed (${code === null ? `signal ${signal}` : `exit ${code}`})${said ? `: ${said}` : ''}`));
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** The TXT record DNS-01 proves `name` with (`*.zone` is proven on the zone's own record). */
export function challengeRecordName(name: string): string {
  return `_acme-challenge.${name.replace(/^\*\./, '')}`;
}
