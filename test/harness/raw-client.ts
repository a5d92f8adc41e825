// A raw TCP client for the public listener: it can hold a connection idle,
// send a head or body a byte at a time, and collect whatever comes back.

import { connect, type Socket } from 'node:net';

export interface RawConn {
  socket: Socket;
  /** Everything received so far (latin1). */
  readonly text: string;
  readonly closed: boolean;
  /** Resolves when the connection is closed (by either side), with all bytes received. */
  done: Promise<string>;
}

export function rawConnect(port: number): Promise<RawConn> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    let closed = false;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', () => {});
    const done = new Promise<string>((r) =>
      socket.once('close', () => {
        closed = true;
        r(text);
      }),
    );
    socket.once('connect', () =>
      resolve({
        socket,
        get text() {
          return text;
        },
        get closed() {
          return closed;
        },
        done,
      }),
    );
    socket.once('error', reject);
  });
}
