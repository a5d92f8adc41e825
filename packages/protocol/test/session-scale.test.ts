// Stream churn on one session: 10,000 streams opened and completed (100 at a
// time), and 1,000 open at once; the stream maps must be empty afterwards.
import { describe, it, expect } from 'vitest';
import type { Session, YamuxStream } from '../src/index.js';
import { collect, deadline, sessionPair, waitFor } from './helpers.js';

/** Server answers each stream with "ok:" + the request, after the request's FIN. */
function echo(server: Session): void {
  server.on('stream', (s: YamuxStream) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => s.end(Buffer.concat([Buffer.from('ok:'), ...parts])));
  });
}

async function roundTrip(client: Session, i: number): Promise<void> {
  const s = client.openStream();
  const body = `request ${i}`;
  s.end(body);
  const got = await collect(s);
  if (got.toString() !== `ok:${body}`) throw new Error(`stream ${s.id}: got ${JSON.stringify(got.toString())}`);
}

describe('scale', () => {
  it('10,000 streams opened and completed on one session, 100 at a time', async () => {
    const { client, server } = sessionPair();
    echo(server);
    let maxOpen = 0;
    const t0 = Date.now();
    for (let batch = 0; batch < 100; batch++) {
      const p = Array.from({ length: 100 }, (_, j) => roundTrip(client, batch * 100 + j));
      maxOpen = Math.max(maxOpen, client.streamCount);
      await deadline(Promise.all(p), 10_000, `batch ${batch}`);
    }
    console.log(`10,000 streams in ${Date.now() - t0} ms`);
    expect(maxOpen).toBe(100);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    // Ids advanced by two per stream; the last one was 19,999.
    const last = client.openStream();
    expect(last.id).toBe(20_001);
    last.end();
    await deadline(collect(last), 5000, 'one more');
    expect(client.bufferedBytes).toBe(0);
    expect(server.bufferedBytes).toBe(0);
    client.close();
  }, 60_000);

  it('1,000 streams open at once, then all completed', async () => {
    const { client, server } = sessionPair();
    const held: YamuxStream[] = [];
    server.on('stream', (s: YamuxStream) => held.push(s));
    const opened = Array.from({ length: 1000 }, (_, i) => {
      const s = client.openStream();
      s.write(`stream ${i} `);
      return s;
    });
    // All 1,000 are open on both sides at the same moment.
    await waitFor(() => held.length === 1000, 10_000, '1,000 accepted');
    expect(client.streamCount).toBe(1000);
    expect(server.streamCount).toBe(1000);
    // Now complete them all: the server answers each, both sides FIN.
    const replies = opened.map((s) => collect(s));
    for (const s of held) {
      const parts: Buffer[] = [];
      s.on('data', (c: Buffer) => parts.push(c));
      s.on('end', () => s.end(Buffer.concat([Buffer.from('re:'), ...parts])));
    }
    opened.forEach((s, i) => s.end(`#${i}`));
    const got = await deadline(Promise.all(replies), 20_000, '1,000 replies');
    got.forEach((b, i) => expect(b.toString()).toBe(`re:stream ${i} #${i}`));
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  }, 60_000);

  it('1,000 streams opened by each side at once, interleaved', async () => {
    const { client, server } = sessionPair();
    echo(server);
    echo(client);
    const p = [
      ...Array.from({ length: 1000 }, (_, i) => roundTrip(client, i)),
      ...Array.from({ length: 1000 }, (_, i) => roundTrip(server, i)),
    ];
    expect(client.streamCount).toBe(1000);
    expect(server.streamCount).toBe(1000);
    await deadline(Promise.all(p), 20_000, '2,000 streams');
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  }, 60_000);
});
