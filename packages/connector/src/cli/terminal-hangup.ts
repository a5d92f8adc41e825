import { closeSync, openSync } from 'node:fs';
import { isatty } from 'node:tty';

/**
 * Tells a SIGHUP that means "reload" (`kill -HUP`, a service manager) from
 * one that means "the terminal or the shell that started us is gone".
 *
 * The second kind is racy to detect at the moment the signal is handled: the
 * kernel sends SIGHUP to the foreground group while the exiting shell is still
 * our parent and before it detaches the session from the terminal, so ppid,
 * isatty() and /dev/tty can all still look alive for a few milliseconds on a
 * loaded machine. So we look again for a short while before settling on
 * "reload"; a genuine reload is only delayed by that window.
 */
export interface HangupWatch {
  /** Resolves 'gone' when the terminal or parent shell went away, else 'reload'. */
  classify(): Promise<'gone' | 'reload'>;
}

const SETTLE_MS = 750;
const POLL_MS = 25;

export function watchTerminal(): HangupWatch {
  const ttyFds = [0, 1, 2].filter((fd) => isatty(fd));
  const startPpid = process.ppid;
  const hadControllingTty = ttyFds.length > 0 && controllingTtyOpens();
  const gone = (): boolean =>
    !ttyFds.some((fd) => isatty(fd)) || process.ppid !== startPpid || (hadControllingTty && !controllingTtyOpens());
  return {
    async classify() {
      // Not started on a terminal: SIGHUP is only ever a reload request.
      if (ttyFds.length === 0) return 'reload';
      const deadline = Date.now() + SETTLE_MS;
      for (;;) {
        if (gone()) return 'gone';
        if (Date.now() >= deadline) return 'reload';
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    },
  };
}

/** open("/dev/tty") fails (ENXIO) once the session has lost its controlling terminal. */
function controllingTtyOpens(): boolean {
  try {
    closeSync(openSync('/dev/tty', 'r'));
    return true;
  } catch {
    return false;
  }
}
