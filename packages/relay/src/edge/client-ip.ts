/** A client address as the relay reports it: an IPv4 peer on a dual-stack socket without its `::ffff:` prefix. */
export function stripV4Mapped(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}
