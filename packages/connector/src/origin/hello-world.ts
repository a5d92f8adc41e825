import type { RequestHead } from '@tunnel/protocol';

/** The built-in `hello_world` origin: proves the tunnel works end to end with no app behind it. */
export function helloWorld(head: RequestHead): { status: number; headers: Array<[string, string]>; body: Buffer } {
  const rows = head.headers.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('');
  const wantsJson = head.headers.some(([k, v]) => k.toLowerCase() === 'accept' && v.includes('application/json'));
  const body = wantsJson
    ? Buffer.from(JSON.stringify({ hello: 'world', method: head.method, path: head.path, host: head.host, clientIp: head.clientIp, requestId: head.requestId }) + '\n')
    : Buffer.from(
        `<!doctype html><html><head><meta charset="utf-8"><title>Hello from your tunnel</title>` +
          `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:3rem auto;padding:0 1rem}td{padding:2px 8px;font-family:monospace;font-size:13px}</style></head>` +
          `<body><h1>Hello from your tunnel</h1><p>This page was served by the connector's built-in <code>hello_world</code> origin.</p>` +
          `<p><b>${esc(head.method)}</b> ${esc(head.path)} for <b>${esc(head.host)}</b> from ${esc(head.clientIp)} · request id <code>${esc(head.requestId)}</code></p>` +
          `<table>${rows}</table></body></html>\n`,
      );
  return {
    status: 200,
    headers: [
      ['Content-Type', wantsJson ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8'],
      ['Content-Length', String(body.length)],
    ],
    body,
  };
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
