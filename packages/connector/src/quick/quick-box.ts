/**
 * The URL in a box, as cloudflared prints a quick tunnel: the one line a
 * person must not miss among the logs.
 */
export function quickBox(url: string): string {
  const lines = ['Your quick tunnel is up! Visit it at:', url, 'No account, no uptime promise; Ctrl-C removes it.'];
  const width = Math.max(...lines.map((l) => l.length)) + 4;
  const bar = `+${'-'.repeat(width)}+`;
  return [bar, ...lines.map((l) => `|  ${l.padEnd(width - 4)}  |`), bar].join('\n') + '\n';
}
