// The dashboard's two HTML pages: the operator login form and the dashboard
// shell that page-script.ts fills from the live state. Every value from the
// fleet is escaped before it reaches the DOM. The session's CSRF token is in
// a meta tag: the script sends it with every action.

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function loginHtml(o: { error?: string; disabled?: boolean }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tunnel relay · operator login</title>
<link rel="stylesheet" href="/dashboard/app.css">
</head>
<body data-page="login">
<main class="login">
  <h1><span class="logo">⇄</span> tunnel relay</h1>
  <p class="sub">Operator dashboard</p>
  ${o.error ? `<p class="error" role="alert" id="login-error">${esc(o.error)}</p>` : ''}
  ${
    o.disabled
      ? ''
      : `<form method="post" action="/dashboard/login" autocomplete="off">
    <label for="key">Operator key</label>
    <input id="key" name="key" type="password" required autofocus spellcheck="false">
    <input id="next" name="next" type="hidden" value="">
    <button type="submit">Log in</button>
  </form>
  <p class="hint">The key given to <code>tunnel-relay serve</code> with <code>--operator-key-file</code> or <code>TUNNEL_RELAY_OPERATOR_KEY</code>.</p>`
  }
</main>
<script src="/dashboard/app.js"></script>
</body>
</html>
`;
}

export function dashboardHtml(o: { relayId: string; region: string; csrf: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${esc(o.csrf)}">
<title>tunnel fleet · ${esc(o.relayId)}</title>
<link rel="stylesheet" href="/dashboard/app.css">
</head>
<body data-page="dashboard">
<header>
  <h1><span class="logo">⇄</span> tunnel fleet</h1>
  <span class="where">served by <b>${esc(o.relayId)}</b> · ${esc(o.region)}</span>
  <span id="live" class="live off" title="live updates">connecting…</span>
  <form method="post" action="/dashboard/logout"><button class="link" type="submit">Log out</button></form>
</header>
<main>
  <section id="summary" class="cards" aria-label="summary"></section>
  <p id="acme" class="acme" hidden></p>
  <p id="action-msg" class="msg" role="status"></p>
  <section id="logins-section" hidden>
    <h2>Pending logins</h2>
    <table id="logins" class="grid">
      <thead><tr><th>Code</th><th>Requested</th><th>Expires in</th><th>Account</th><th></th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="approve-msg" class="msg" role="status"></p>
  </section>
  <section>
    <h2>Relays</h2>
    <div id="relays"></div>
  </section>
  <section>
    <h2>Tunnels</h2>
    <div id="tunnels"></div>
  </section>
  <section id="quick-section" hidden>
    <h2>Quick tunnels</h2>
    <div id="quick"></div>
  </section>
  <section>
    <h2>Revoke a credential</h2>
    <form id="revoke" class="inline" autocomplete="off">
      <input id="revoke-token" type="text" spellcheck="false" aria-label="credential or token id" placeholder="tunnel token, cert.json credential, enrollment token, or a token id">
      <button type="submit" class="danger">Revoke</button>
    </form>
    <p id="revoke-msg" class="msg" role="status"></p>
  </section>
  <div class="cols">
    <section>
      <h2>Accounts</h2>
      <div id="accounts"></div>
    </section>
    <section>
      <h2>Zones</h2>
      <div id="zones"></div>
    </section>
  </div>
</main>
<script src="/dashboard/app.js"></script>
</body>
</html>
`;
}
