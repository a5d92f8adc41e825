import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir } from './harness/procs.js';
import { hashBody, startOrigin, type Origin } from './harness/origin.js';
import { makeCa, issueCert, opensslMissing } from './harness/certs.js';
import { launchChromium, noteChromium, skipBrowser } from './harness/dashboard-browser.js';
import { waitFor } from './harness/wait.js';

// Chromium over HTTP/2 through the relay's public HTTPS listener: a page, an
// EventSource whose events the origin streams through the tunnel one by one,
// and a 3 MiB fetch upload checked by SHA-256 at the origin. Every fetch is
// h2 on the browser's side (nextHopProtocol); the origin gets HTTP/1.1.

noteChromium('HTTP/2 browser test');
const skip = skipBrowser || opensslMissing('HTTP/2 browser test') !== null;

describe.skipIf(skip)('Chromium over HTTP/2 through the relay', () => {
  const tmp = tempDir();
  let origin: Origin;
  let browser: Browser;
  let page: Page;
  let base: string;
  const versions: string[] = [];
  let uploaded: { bytes: number; sha256: string } | null = null;
  /** Sends the next SSE event, once the test has seen the browser get the one before. */
  let nextEvent: ((data: string) => void) | null = null;

  beforeAll(async () => {
    const ca = makeCa(tmp.dir);
    const leaf = issueCert(ca, path.join(tmp.dir, 'relay'), { names: ['h2.test'] });
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-h2-browser', extraArgs: ['--tls-cert', leaf.cert, '--tls-key', leaf.key, '--https', '127.0.0.1:0'] });
    const port = (relay.proc.logs.find((l) => l.event === 'listening')!.ports as { https: number }).https;
    base = `https://h2.test:${port}`;
    origin = await startOrigin((q, s) => {
      versions.push(q.httpVersion);
      if (q.url === '/events') {
        s.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        s.write('data: one\n\n');
        // The last event ends the response (the page closes its EventSource on it, before any reconnect).
        nextEvent = (data) => (data === 'three' ? s.end(`data: ${data}\n\n`) : s.write(`data: ${data}\n\n`));
        return;
      }
      if (q.url === '/upload') {
        void hashBody(q).then((got) => {
          uploaded = got;
          s.end(got.sha256);
        });
        return;
      }
      s.writeHead(200, { 'content-type': 'text/html' });
      s.end('<!doctype html><title>h2</title><p id="origin">through the tunnel</p>');
    });
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'h2b', hostnames: ['h2.test'], relays: [`wss://127.0.0.1:${relay.connect}`] });
    await startConnector({ token, relays: [`wss://127.0.0.1:${relay.connect}`], url: origin.url, env: { NODE_EXTRA_CA_CERTS: ca.cert }, ha: 1 });
    browser = await launchChromium(['--host-resolver-rules=MAP h2.test 127.0.0.1']);
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    page = await ctx.newPage();
  });
  afterAll(async () => {
    await browser?.close();
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('a page is served over h2; the origin got HTTP/1.1', async () => {
    const r = await page.goto(`${base}/`);
    expect(r?.status()).toBe(200);
    expect(await page.textContent('#origin')).toBe('through the tunnel');
    expect(await page.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol)).toBe('h2');
    expect(versions.at(-1)).toBe('1.1');
  });

  it('EventSource gets each event while the response stays open', async () => {
    await page.evaluate(() => {
      const w = window as unknown as { got: string[]; es: EventSource };
      w.got = [];
      w.es = new EventSource('/events');
      w.es.onmessage = (e) => {
        w.got.push(String(e.data));
        if (e.data === 'three') w.es.close();
      };
    });
    const got = () => page.evaluate(() => (window as unknown as { got: string[] }).got.join(','));
    await waitFor(async () => (await got()) === 'one', 10_000, { message: 'first event in the browser' });
    // The next ones are written only now: the stream is not buffered to its end anywhere on the way.
    nextEvent!('two');
    await waitFor(async () => (await got()) === 'one,two', 10_000, { message: 'second event in the browser' });
    nextEvent!('three');
    await waitFor(async () => (await got()) === 'one,two,three', 10_000, { message: 'third event in the browser' });
    // Its resource-timing entry is written once the response has ended.
    const proto = await waitFor(
      () => page.evaluate(() => (performance.getEntriesByType('resource').find((x) => x.name.endsWith('/events')) as PerformanceResourceTiming | undefined)?.nextHopProtocol),
      10_000,
      { message: 'resource timing of /events' },
    );
    expect(proto).toBe('h2');
  });

  it('a 3 MiB fetch upload arrives whole (SHA-256 at the origin) over h2', async () => {
    const r = await page.evaluate(async () => {
      const body = new Uint8Array(3 << 20);
      for (let i = 0; i < body.length; i += 65536) crypto.getRandomValues(body.subarray(i, i + 65536));
      const digest = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', body)), (b) => b.toString(16).padStart(2, '0')).join('');
      const res = await fetch('/upload', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
      const answer = await res.text();
      // The entry is written once the response body has been read.
      const entry = performance.getEntriesByType('resource').find((x) => x.name.endsWith('/upload')) as PerformanceResourceTiming | undefined;
      return { status: res.status, answer, digest, proto: entry?.nextHopProtocol };
    });
    expect(r.status).toBe(200);
    expect(uploaded).toEqual({ bytes: 3 << 20, sha256: r.digest });
    expect(r.answer).toBe(r.digest);
    expect(r.proto).toBe('h2');
  });
});
