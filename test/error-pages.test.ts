import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startFleet, type Fleet } from './harness/fleet.js';
import type { Proc } from './harness/procs.js';

// Errors the tunnel answers itself are one family (issue 13 item 5): the
// relay's (530 tunnel offline) and the connector's (502/504 from the origin)
// are HTML for a browser and JSON for anything else, with the same fields,
// and the status line carries a reason phrase (node has none for 530).

interface Answer {
  status: number;
  reason: string;
  type: string;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** node's http client: it keeps the status line's reason phrase (statusMessage). */
function get(base: string, host: string, accept?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const r = http.get(`${base}/page`, { headers: { host, ...(accept ? { accept } : {}) } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, reason: res.statusMessage ?? '', type: String(res.headers['content-type']), body, headers: res.headers }));
    });
    r.setTimeout(10_000, () => r.destroy(new Error('no answer in 10 s')));
    r.on('error', reject);
  });
}

const BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

/** The fields a JSON answer has, read back from an HTML one. */
function htmlFields(a: Answer): { code: string; source: string; requestId: string } {
  const m = /<code>error: ([a-z_]+) · source: ([a-z]+) · request id: ([^<]+)<\/code>/.exec(a.body);
  if (!m) throw new Error(`no error fields in the page: ${a.body.slice(0, 300)}`);
  return { code: m[1]!, source: m[2]!, requestId: m[3]! };
}

// Port 9 (discard): privileged and never bound by a test. A port freed by
// closing a server could be taken by a test file running alongside.
const CLOSED_PORT = 9;

describe('error pages', () => {
  let fleet: Fleet;
  let base: string;

  beforeAll(async () => {
    fleet = await startFleet({ relays: 1 });
    base = fleet.relays[0]!.publicUrl;
  });
  afterAll(async () => {
    await fleet?.close();
  });

  it('relay: 530 has a reason phrase; HTML for a browser, JSON otherwise (also for */* and no Accept)', async () => {
    const page = await get(base, fleet.hostname, BROWSER);
    expect(page.status).toBe(530);
    expect(page.reason).toBe('Tunnel Offline');
    expect(page.type).toBe('text/html; charset=utf-8');
    expect(page.body).toContain('<title>530 Tunnel Offline</title>');
    expect(htmlFields(page)).toEqual({ code: 'tunnel_offline', source: 'relay', requestId: page.headers['tunnel-request-id'] });
    for (const accept of ['application/json', '*/*', undefined]) {
      const a = await get(base, fleet.hostname, accept);
      expect(a.status, String(accept)).toBe(530);
      expect(a.reason).toBe('Tunnel Offline');
      expect(a.type).toBe('application/json; charset=utf-8');
      expect(JSON.parse(a.body)).toEqual({
        error: { status: 530, code: 'tunnel_offline', source: 'relay', message: `The tunnel for ${fleet.hostname} has no connector online.`, requestId: a.headers['tunnel-request-id'] },
      });
    }
  });

  describe('connector', () => {
    let connector: Proc;
    beforeAll(async () => {
      connector = await fleet.connector({ url: `http://127.0.0.1:${CLOSED_PORT}`, ha: 1 });
    });
    afterAll(async () => {
      await connector?.stop();
    });

    it('a 502 from the origin is HTML for a browser, with the fields the JSON one has', async () => {
      const page = await get(base, fleet.hostname, BROWSER);
      expect(page.status).toBe(502);
      expect(page.reason).toBe('Bad Gateway');
      expect(page.type).toBe('text/html; charset=utf-8');
      expect(page.headers['tunnel-error']).toBe('origin_refused');
      expect(page.body).toContain('<title>502 Bad Gateway</title>');
      expect(page.body).toContain('The origin refused the connection.');
      expect(htmlFields(page)).toEqual({ code: 'origin_refused', source: 'origin', requestId: page.headers['tunnel-request-id'] });
    });

    it('… and JSON for an API client, */* or no Accept', async () => {
      for (const accept of ['application/json', '*/*', undefined, 'application/json, text/html']) {
        const a = await get(base, fleet.hostname, accept);
        expect(a.status, String(accept)).toBe(502);
        expect(a.type).toBe('application/json; charset=utf-8');
        expect(JSON.parse(a.body)).toEqual({
          error: { status: 502, code: 'origin_refused', source: 'origin', message: 'The origin refused the connection.', requestId: a.headers['tunnel-request-id'] },
        });
      }
    });
  });
});
