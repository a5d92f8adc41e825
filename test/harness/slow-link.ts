// A TCP proxy on 127.0.0.1 whose answers can be held back on chosen
// connections: a slow link between one process and a server, to order what
// arrives over two connections (a reply on one, a message on the other)
// deterministically. Bytes are forwarded unchanged and in order.

import { createServer, connect, type Server, type Socket } from 'node:net';

export interface SlowLink {
  readonly port: number;
  /**
   * From now on, server→client bytes on every connection whose client has
   * sent something matching `when` are held `ms` before they are passed on
   * (0: no longer held; already held bytes keep their time).
   */
  delay(ms: number, when: RegExp): void;
  close(): Promise<void>;
}

export async function startSlowLink(target: { host: string; port: number }): Promise<SlowLink> {
  let delayMs = 0;
  let when: RegExp | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let matched = false;
    // The time each held chunk may go: never earlier than the one before it.
    let nextAt = 0;
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.on('data', (d: Buffer) => {
      if (when?.test(d.toString('latin1'))) matched = true;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      const hold = matched && delayMs > 0 ? delayMs : 0;
      const at = Math.max(Date.now() + hold, nextAt);
      nextAt = at;
      if (at <= Date.now()) return void client.write(d);
      setTimeout(() => client.write(d), at - Date.now());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    delay(ms, re) {
      delayMs = ms;
      when = re;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
