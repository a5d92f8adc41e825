// A real DNS server on 127.0.0.1 (dns2, UDP) for tests: A records and TXT
// records from maps the test changes as it goes; every query is recorded.
// With `control`, an HTTP endpoint on 127.0.0.1 lets another process (an
// ACME DNS hook run by a relay) set and clear TXT records:
// `PUT /txt/NAME` with the value as body, `DELETE /txt/NAME`.

import http from 'node:http';
import dns2 from 'dns2';

export interface TestDns {
  port: number;
  /** name → IPv4 (A). */
  readonly a: Map<string, string>;
  /** name → TXT value. */
  readonly txt: Map<string, string>;
  /** Names whose queries are never answered (the asker waits out its timeout). */
  readonly silent: Set<string>;
  readonly queries: string[];
  /** The TXT control endpoint, when started with `control: true`. */
  controlUrl?: string;
  close(): Promise<void>;
}

export async function startDns(o: { txt?: Map<string, string>; control?: boolean } = {}): Promise<TestDns> {
  const a = new Map<string, string>();
  const txt = o.txt ?? new Map<string, string>();
  const silent = new Set<string>();
  const queries: string[] = [];
  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const response = dns2.Packet.createResponseFromRequest(request);
      const q = request.questions[0];
      if (q) {
        const name = q.name.toLowerCase().replace(/\.$/, '');
        queries.push(name);
        if (silent.has(name)) return;
        const ip = a.get(name);
        if (ip !== undefined && q.type === dns2.Packet.TYPE.A) {
          response.answers.push({ name: q.name, type: dns2.Packet.TYPE.A, class: dns2.Packet.CLASS.IN, ttl: 1, address: ip } as never);
        }
        const value = txt.get(name);
        if (value !== undefined && q.type === dns2.Packet.TYPE.TXT) {
          response.answers.push({ name: q.name, type: dns2.Packet.TYPE.TXT, class: dns2.Packet.CLASS.IN, ttl: 1, data: value } as never);
        }
      }
      void send(response);
    },
  });
  const addrs = await server.listen({ udp: { port: 0, address: '127.0.0.1' } } as never);
  const port = (addrs as unknown as { udp: { port: number } }).udp.port;
  if (!o.control) return { port, a, txt, silent, queries, close: () => server.close() };
  const control = http.createServer((req, res) => {
    const m = /^\/txt\/([A-Za-z0-9_.-]{1,253})$/.exec(req.url ?? '');
    if (!m) return void res.writeHead(404).end();
    const name = m[1]!.toLowerCase();
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d.slice(0, 1024)));
    req.on('end', () => {
      if (req.method === 'PUT') txt.set(name, body);
      else if (req.method === 'DELETE') txt.delete(name);
      else return void res.writeHead(405).end();
      res.writeHead(204).end();
    });
  });
  const controlPort = await new Promise<number>((resolve) => control.listen(0, '127.0.0.1', () => resolve((control.address() as { port: number }).port)));
  return {
    port,
    a,
    txt,
    silent,
    queries,
    controlUrl: `http://127.0.0.1:${controlPort}`,
    close: async () => {
      control.closeAllConnections();
      await new Promise<void>((r) => control.close(() => r()));
      await server.close();
    },
  };
}
