import { pino, destination, type Logger, type LevelWithSilent } from 'pino';

export type LogFormat = 'json' | 'pretty' | 'auto';

export interface LoggerOptions {
  name: string;
  level?: LevelWithSilent | string;
  /** json: one JSON object per line; pretty: for people; auto: pretty when stdout is a TTY. */
  format?: LogFormat;
  /** Append to this file instead of stdout. */
  file?: string;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * Both binaries log the same way (pino, JSON lines by default). Secrets are
 * redacted by path as a second line of defence; code never logs them anyway.
 */
export function createLogger(o: LoggerOptions): Logger {
  const level = o.level ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new Error(`unknown log level "${level}" (expected one of ${LOG_LEVELS.join(', ')})`);
  }
  const pretty = o.format === 'pretty' || (o.format !== 'json' && !o.file && process.stdout.isTTY === true);
  const redact = {
    paths: ['token', 'secret', 'secretKey', 'authorization', 'headers.authorization', 'req.headers.authorization', 'credential'],
    censor: '[redacted]',
  };
  const base = { name: o.name };
  if (pretty) {
    return pino({
      level,
      base,
      redact,
      transport: {
        target: 'pino-pretty',
        options: { colorize: !o.file, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', destination: o.file ?? 1 },
      },
    });
  }
  const dest = o.file ? destination({ dest: o.file, mkdir: true, sync: false }) : destination({ fd: 1, sync: false });
  return pino({ level, base, redact }, dest);
}

export type { Logger };
