import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, realpathSync, writeFileSync } from 'node:fs';

// What `tunnel service install` and `tunnel-relay service install` share:
// the hardening block, unit rendering and quoting, and running systemctl.

export type UnitLine = [string, string] | string;

export function hardening(): UnitLine[] {
  return [
    '# Hardening: read-only system, no home directories, private /tmp and /dev.',
    ['NoNewPrivileges', 'yes'],
    ['ProtectSystem', 'strict'],
    ['ProtectHome', 'yes'],
    ['PrivateTmp', 'yes'],
    ['PrivateDevices', 'yes'],
    ['ProtectKernelTunables', 'yes'],
    ['ProtectKernelModules', 'yes'],
    ['ProtectKernelLogs', 'yes'],
    ['ProtectControlGroups', 'yes'],
    ['ProtectClock', 'yes'],
    ['ProtectHostname', 'yes'],
    ['ProtectProc', 'invisible'],
    ['RestrictAddressFamilies', 'AF_INET AF_INET6 AF_UNIX'],
    ['RestrictNamespaces', 'yes'],
    ['RestrictRealtime', 'yes'],
    ['RestrictSUIDSGID', 'yes'],
    ['LockPersonality', 'yes'],
    ['SystemCallArchitectures', 'native'],
    ['SystemCallFilter', '@system-service'],
    ['SystemCallErrorNumber', 'EPERM'],
    "# Node's JIT needs writable+executable memory, so MemoryDenyWriteExecute stays off.",
    ['UMask', '0077'],
  ];
}

export function unitHeader(installCmd: string, uninstallCmd: string): string {
  return `# Written by \`${installCmd}\`; remove with \`${uninstallCmd}\`.\n# Requires systemd >= 247 (LoadCredential=, %d).\n`;
}

export function renderUnit(lines: UnitLine[]): string {
  return lines.map((l) => (typeof l === 'string' ? l : `${l[0]}=${l[1]}`)).join('\n') + '\n';
}

/** systemd command-line quoting: plain words as they are, anything else double-quoted. */
export function quoteArg(a: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a)) return a.replace(/%/g, '%%');
  return `"${a.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`;
}

/** This very binary: node plus the resolved CLI script. */
export function defaultExec(): string[] {
  const script = process.argv[1] ? realpathSync(process.argv[1]) : '';
  return [process.execPath, script];
}

export function say(s: string): void {
  process.stdout.write(s.endsWith('\n') ? s : s + '\n');
}

export function writeUnitFile(path: string, text: string, mode: number, note = ''): void {
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  say(`wrote    ${path}${note}`);
}

/** systemd is running here (PID 1) and the unit went to its real directory. */
export function systemdManages(unitDir: string): boolean {
  return existsSync('/run/systemd/system') && ['/etc/systemd/system', '/lib/systemd/system', '/usr/lib/systemd/system'].includes(unitDir);
}

/** Run (or, where systemd does not manage `unitDir`, print) the systemctl commands. */
export function activate(unitDir: string, enabled: boolean, cmds: string[][], quiet = false): void {
  const shown = cmds.map((c) => `systemctl ${c.join(' ')}`).join(' && ');
  if (!enabled) return void (quiet || say(`next:    ${shown}`));
  if (!systemdManages(unitDir)) return void (quiet || say(`next:    ${shown}  (systemd is not managing ${unitDir} here)`));
  for (const c of cmds) {
    try {
      execFileSync('systemctl', c, { stdio: ['ignore', 'inherit', 'inherit'] });
      if (!quiet) say(`ran      systemctl ${c.join(' ')}`);
    } catch (e) {
      if (!quiet) process.stderr.write(`warning: systemctl ${c.join(' ')} failed: ${(e as Error).message}\n`);
    }
  }
}
