/**
 * A service unit runs with ProtectHome=yes and PrivateTmp=yes: a command
 * under /home, /root, /run/user or /tmp (a checkout, an `npm install -g` into
 * a home prefix) is invisible to it, and the unit would fail at every start.
 * `service install` refuses such a command and prints the commands that put
 * a runnable copy where the service can see it.
 */

const HIDDEN = /^\/(home|root|run\/user|tmp|var\/tmp)(\/|$)/;

export class HiddenInstallError extends Error {}

/** The directory hiding `path` from the service, or null. */
export function hiddenFromService(path: string): string | null {
  const m = HIDDEN.exec(path);
  return m ? `/${m[1]}` : null;
}

/**
 * Throws when any path of `exec` is hidden from the service. `bin` is the
 * command (`tunnel`, `tunnel-relay`); `args` the service-install arguments to
 * repeat in the suggested command.
 */
export function checkRunnableInstall(exec: readonly string[], bin: 'tunnel' | 'tunnel-relay', args: readonly string[], execGiven: boolean): void {
  const hidden = exec.map((p) => [p, hiddenFromService(p)] as const).find(([, dir]) => dir !== null);
  if (!hidden) return;
  const [path, dir] = hidden;
  const kept = args.filter((a, i) => a !== '--exec' && args[i - 1] !== '--exec' && !a.startsWith('--exec='));
  const again = [`/usr/local/bin/${bin}`, 'service', 'install', ...kept].join(' ');
  // A run from a checkout: pack it and install the tarballs system-wide (a link would point back here).
  const checkout = /^(.*)\/packages\/(connector|relay)\/(dist|bin)\//.exec(path)?.[1];
  const install = checkout
    ? `(cd ${checkout} && npm pack -w packages/protocol -w packages/host -w packages/connector -w packages/relay && npm install -g --prefix /usr/local ./tunnel-*.tgz)`
    : `npm install -g --prefix /usr/local ./tunnel-protocol-*.tgz ./tunnel-host-*.tgz ./tunnel-connector-*.tgz ./tunnel-relay-*.tgz`;
  throw new HiddenInstallError(
    `${execGiven ? '--exec' : `this ${bin}`} runs from ${path}, under ${dir}, which the service cannot see (ProtectHome=yes hides /home, /root and /run/user; PrivateTmp=yes hides /tmp). ` +
      `Install it system-wide, then install the service from there:\n  ${install}\n  ${again}\n(or pass --exec with a command outside those directories)`,
  );
}
