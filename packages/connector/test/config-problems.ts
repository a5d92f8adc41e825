import { ConfigError, parseConfig, type ConfigProblem } from '../src/ingress/config.js';

/** Lines joined so that argument N is line N+1 of the file: line numbers stay obvious. */
export const yaml = (...lines: string[]): string => lines.join('\n') + '\n';

/** The problems parseConfig reports for `text` (as config.yml); throws if it accepts it. */
export function problemsOf(text: string): ConfigProblem[] {
  try {
    parseConfig(text, 'config.yml');
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected a ConfigError');
}
