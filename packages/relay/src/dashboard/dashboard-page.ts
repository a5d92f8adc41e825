// The dashboard's page, stylesheet and script, served by dashboard.ts from the
// control port. Plain HTML, CSS and browser JavaScript (no framework, no
// build step); the script uses no template literals so it can live in a TS
// string. Every value from the fleet is escaped before it reaches the DOM.

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

export function dashboardHtml(o: { relayId: string; region: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
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
</main>
<script src="/dashboard/app.js"></script>
</body>
</html>
`;
}

export const APP_CSS = `
:root {
  --bg: #f5f6f8; --panel: #fff; --ink: #1b1f24; --muted: #5b6673; --line: #dde1e6;
  --ok: #137333; --ok-bg: #e6f4ea; --warn: #8a5a00; --warn-bg: #fff4d6; --bad: #b3261e; --bad-bg: #fce8e6;
  --accent: #1a56db; --accent-ink: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
header { display: flex; align-items: center; gap: 16px; padding: 12px 24px; background: #111827; color: #f9fafb; }
header h1 { font-size: 18px; margin: 0; font-weight: 650; }
header .where { color: #cbd5e1; font-size: 14px; }
header form { margin-left: auto; }
.logo { color: #60a5fa; }
button { font: inherit; cursor: pointer; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: var(--accent-ink); padding: 5px 14px; }
button:disabled { opacity: .55; cursor: default; }
button.link { background: none; border: 1px solid #475569; color: #e2e8f0; padding: 3px 10px; }
.live { font-size: 13px; padding: 2px 10px; border-radius: 999px; background: #334155; color: #e2e8f0; }
.live::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; background: #94a3b8; vertical-align: 0; }
.live.on::before { background: #22c55e; box-shadow: 0 0 0 3px rgba(34,197,94,.25); }
.live.off::before { background: #f59e0b; }
main { padding: 16px 24px 40px; max-width: 1280px; }
h2 { font-size: 16px; margin: 22px 0 8px; color: #334155; text-transform: uppercase; letter-spacing: .04em; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 13px; }
.card .v { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
table.grid { width: 100%; border-collapse: collapse; background: var(--panel); border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
.grid th, .grid td { text-align: left; padding: 7px 12px; border-bottom: 1px solid var(--line); vertical-align: middle; }
.grid th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .03em; background: #fafbfc; }
.grid tr:last-child td { border-bottom: none; }
.grid td.num, .grid th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 9px; border-radius: 999px; }
.badge.healthy, .badge.active { color: var(--ok); background: var(--ok-bg); }
.badge.draining, .badge.stale { color: var(--warn); background: var(--warn-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.tunnel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; margin-bottom: 14px; overflow: hidden; }
.tunnel .head { display: flex; flex-wrap: wrap; align-items: center; gap: 10px 18px; padding: 12px 14px; border-bottom: 1px solid var(--line); }
.tunnel .name { font-size: 17px; font-weight: 650; }
.tunnel .id { color: var(--muted); font-size: 12px; }
.chip { display: inline-block; background: #eef2ff; color: #3730a3; border-radius: 6px; padding: 1px 8px; margin: 2px 4px 2px 0; font-size: 13px; }
.stats { display: flex; gap: 18px; margin-left: auto; align-items: center; }
.stat .k { color: var(--muted); font-size: 12px; display: block; }
.stat .v { font-size: 18px; font-weight: 650; font-variant-numeric: tabular-nums; }
.stat .v.bad { color: var(--bad); }
svg.spark { width: 140px; height: 34px; display: block; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
svg.spark polyline.err { stroke: var(--bad); }
.tunnel .grid { border: none; border-radius: 0; }
.none { color: var(--muted); padding: 10px 14px; }
.msg { margin: 6px 2px; }
.msg:empty { display: none; }
.msg.ok { color: var(--ok); } .msg.bad { color: var(--bad); }
tr.flash td { background: #fff8c5; }
input[type=text], input[type=password] { font: inherit; padding: 5px 8px; border: 1px solid #b6bec8; border-radius: 6px; }
main.login { max-width: 380px; margin: 12vh auto; background: var(--panel); border: 1px solid var(--line); border-radius: 12px; padding: 24px 28px; }
main.login h1 { margin: 0; font-size: 22px; }
main.login .sub { margin: 2px 0 18px; color: var(--muted); }
main.login label { display: block; font-weight: 600; margin-bottom: 6px; }
main.login input[type=password] { width: 100%; margin-bottom: 14px; }
main.login button { width: 100%; padding: 8px; }
main.login .hint { color: var(--muted); font-size: 13px; margin-top: 14px; }
main.login .hint code { white-space: nowrap; }
.error { color: var(--bad); background: var(--bad-bg); border-radius: 8px; padding: 8px 12px; font-weight: 600; }
`;

export const APP_JS = `
(function () {
  'use strict';
  var $ = function (s, el) { return (el || document).querySelector(s); };
  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  if (document.body.getAttribute('data-page') === 'login') {
    var next = $('#next');
    if (next) next.value = location.hash || '';
    return;
  }

  var state = null, receivedAt = 0, history = {}, HIST = 60;
  // #login=CODE (the link 'tunnel login' prints) picks out that code's row.
  var wanted = null;
  function readHash() { wanted = (/^#login=([A-Za-z0-9-]+)$/.exec(location.hash) || [])[1] || null; }
  function focusWanted() {
    var tr = wanted && document.querySelector('#logins tr[data-code="' + wanted + '"]');
    if (!tr || tr.className === 'flash') return;
    tr.className = 'flash';
    tr.querySelector('input').focus();
    tr.scrollIntoView({ block: 'center' });
  }
  readHash();
  window.addEventListener('hashchange', function () { readHash(); focusWanted(); });

  function fmtAge(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }
  function fmtNum(n) { return n >= 1e6 ? (n / 1e6).toFixed(1) + 'M' : n >= 1e4 ? (n / 1e3).toFixed(1) + 'k' : String(n); }
  function fmtRate(r) { return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2); }
  function now() { return state ? state.at + (Date.now() - receivedAt) : Date.now(); }
  function setHtml(el, html) { if (el && el.__html !== html) { el.innerHTML = html; el.__html = html; } }

  function spark(points, cls) {
    var max = 1;
    for (var i = 0; i < points.length; i++) if (points[i] > max) max = points[i];
    var out = [];
    for (var j = 0; j < points.length; j++) out.push((j * 140 / (HIST - 1)).toFixed(1) + ',' + (32 - points[j] * 30 / max).toFixed(1));
    return '<polyline class="' + cls + '" points="' + out.join(' ') + '"/>';
  }

  function renderSummary() {
    var healthy = state.relays.filter(function (r) { return r.health === 'healthy'; }).length;
    var cards = [
      ['Relays healthy', healthy + ' / ' + state.relays.length],
      ['Tunnels', state.tunnels.length],
      ['Connectors', state.totals.connectors],
      ['Connections', state.totals.connections],
      ['Requests/s', fmtRate(state.totals.rps)],
      ['Errors/s', fmtRate(state.totals.eps)]
    ];
    setHtml($('#summary'), cards.map(function (c) {
      return '<div class="card"><div class="k">' + esc(c[0]) + '</div><div class="v">' + esc(c[1]) + '</div></div>';
    }).join(''));
  }

  function renderRelays() {
    if (!state.relays.length) return setHtml($('#relays'), '<p class="none">No live relays in the store.</p>');
    var rows = state.relays.map(function (r) {
      return '<tr data-relay="' + esc(r.id) + '"><td class="mono">' + esc(r.id) + (r.id === state.self.relayId ? ' <span class="badge active">this relay</span>' : '') +
        '</td><td>' + esc(r.region) + '</td><td><span class="badge ' + esc(r.health) + '">' + esc(r.health) + '</span></td>' +
        '<td class="num">' + r.connections + '</td><td class="num" data-age="' + r.startedAt + '">' + fmtAge(now() - r.startedAt) + '</td>' +
        '<td class="num">' + fmtAge(r.lastSeenAgoMs) + ' ago</td><td class="mono">' + esc(r.publicUrl) + '</td>' +
        '<td>' + (r.stats ? '' : '<span class="badge stale" title="request counts from this relay are unavailable">no stats</span>') + '</td></tr>';
    }).join('');
    setHtml($('#relays'), '<table class="grid"><thead><tr><th>Relay</th><th>Region</th><th>Health</th><th class="num">Connections</th><th class="num">Uptime</th><th class="num">Heartbeat</th><th>Public URL</th><th></th></tr></thead><tbody>' + rows + '</tbody></table>');
  }

  function renderTunnels() {
    if (!state.tunnels.length) return setHtml($('#tunnels'), '<p class="none">No tunnels yet.</p>');
    var html = state.tunnels.map(function (t) {
      var h = history[t.id] || { r: [], e: [] };
      var conns = [];
      t.connectors.forEach(function (c) {
        c.connections.forEach(function (k) {
          conns.push('<tr class="conn" data-connector="' + esc(c.connectorId) + '" data-index="' + k.connIndex + '">' +
            '<td class="mono" title="' + esc(c.connectorId) + '">' + esc(c.connectorId.slice(0, 8)) + '</td>' +
            '<td class="num">#' + k.connIndex + '</td><td class="mono">' + esc(k.relayId) + '</td>' +
            '<td class="num" data-age="' + k.connectedAt + '">' + fmtAge(now() - k.connectedAt) + '</td>' +
            '<td class="num streams">' + (k.streams == null ? '–' : k.streams) + '</td>' +
            '<td><span class="badge ' + esc(k.state) + '">' + esc(k.state) + '</span></td>' +
            '<td>' + esc(c.version) + '</td><td class="mono">' + esc(c.clientIp) + '</td></tr>');
        });
      });
      var errPct = t.requests ? (100 * t.errors / t.requests) : 0;
      return '<article class="tunnel" data-testid="tunnel-' + esc(t.name) + '" data-tunnel="' + esc(t.id) + '">' +
        '<div class="head"><div><div class="name">' + esc(t.name) + '</div><div class="id mono">' + esc(t.id) + ' · account ' + esc(t.account) + '</div>' +
        '<div>' + (t.hostnames.length ? t.hostnames.map(function (x) { return '<span class="chip">' + esc(x) + '</span>'; }).join('') : '<span class="none">no hostnames routed</span>') + '</div></div>' +
        '<div class="stats">' +
        '<span class="stat"><span class="k">Requests</span><span class="v" data-testid="requests">' + t.requests + '</span></span>' +
        '<span class="stat"><span class="k">Req/s</span><span class="v" data-testid="rps">' + fmtRate(t.rps) + '</span></span>' +
        '<span class="stat"><span class="k">Errors/s</span><span class="v' + (t.eps > 0 ? ' bad' : '') + '" data-testid="eps">' + fmtRate(t.eps) + '</span></span>' +
        '<span class="stat"><span class="k">Error rate</span><span class="v' + (errPct >= 1 ? ' bad' : '') + '">' + errPct.toFixed(1) + '%</span></span>' +
        '<svg class="spark" viewBox="0 0 140 34" aria-label="requests per second, last minute">' + spark(h.r, '') + spark(h.e, 'err') + '</svg>' +
        '</div></div>' +
        (conns.length
          ? '<table class="grid"><thead><tr><th>Connector</th><th class="num">Conn</th><th>Relay</th><th class="num">Age</th><th class="num">Streams</th><th>State</th><th>Version</th><th>Origin IP</th></tr></thead><tbody>' + conns.join('') + '</tbody></table>'
          : '<p class="none">No connector connected.</p>') +
        '</article>';
    }).join('');
    setHtml($('#tunnels'), html);
  }

  // Login rows are keyed by code and only added or removed, so an account
  // name being typed survives the once-a-second updates.
  function renderLogins() {
    var body = $('#logins tbody');
    var codes = {};
    state.logins.forEach(function (l) { codes[l.code] = l; });
    Array.prototype.forEach.call(body.querySelectorAll('tr'), function (tr) {
      if (!codes[tr.getAttribute('data-code')]) tr.remove();
    });
    state.logins.forEach(function (l) {
      var tr = body.querySelector('tr[data-code="' + l.code + '"]');
      if (!tr) {
        tr = document.createElement('tr');
        tr.setAttribute('data-code', l.code);
        tr.innerHTML = '<td class="mono code">' + esc(l.code) + '</td><td data-age="' + l.createdAt + '"></td><td class="expires"></td>' +
          '<td><input type="text" class="account" value="default" aria-label="account for ' + esc(l.code) + '" spellcheck="false"></td>' +
          '<td><button class="approve" type="button">Approve</button></td>';
        tr.querySelector('button').addEventListener('click', function () { approve(l.code, tr); });
        body.appendChild(tr);
      }
      tr.querySelector('[data-age]').textContent = fmtAge(now() - l.createdAt) + ' ago';
      tr.querySelector('.expires').textContent = fmtAge(l.expiresAt - now());
    });
    $('#logins-section').hidden = state.logins.length === 0 && !$('#approve-msg').textContent;
    focusWanted();
  }

  function approve(code, tr) {
    var btn = tr.querySelector('button');
    var account = tr.querySelector('input').value.trim() || 'default';
    btn.disabled = true;
    var msg = $('#approve-msg');
    fetch('api/logins/' + encodeURIComponent(code) + '/approve', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ account: account }), credentials: 'same-origin'
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, j: j }; });
    }).then(function (x) {
      if (x.ok) { msg.className = 'msg ok'; msg.textContent = 'Approved ' + x.j.approved + ' for account ' + x.j.account + '.'; tr.remove(); }
      else { msg.className = 'msg bad'; msg.textContent = (x.j.error && x.j.error.message) || 'approval failed'; btn.disabled = false; }
    }, function (e) { msg.className = 'msg bad'; msg.textContent = 'approval failed: ' + e; btn.disabled = false; });
  }

  function tickAges() {
    if (!state) return;
    Array.prototype.forEach.call(document.querySelectorAll('td[data-age]'), function (td) {
      var t = Number(td.getAttribute('data-age'));
      var ago = td.closest('#logins') ? ' ago' : '';
      td.textContent = fmtAge(now() - t) + ago;
    });
    Array.prototype.forEach.call(document.querySelectorAll('#logins tr[data-code]'), function (tr) {
      var l = state.logins.filter(function (x) { return x.code === tr.getAttribute('data-code'); })[0];
      if (l) tr.querySelector('.expires').textContent = fmtAge(l.expiresAt - now());
    });
  }

  function onState(s) {
    state = s;
    receivedAt = Date.now();
    s.tunnels.forEach(function (t) {
      var h = history[t.id] || (history[t.id] = { r: [], e: [] });
      h.r.push(t.rps); h.e.push(t.eps);
      while (h.r.length < HIST) { h.r.unshift(0); h.e.unshift(0); }
      while (h.r.length > HIST) { h.r.shift(); h.e.shift(); }
    });
    renderSummary();
    renderLogins();
    renderRelays();
    renderTunnels();
  }

  var live = $('#live');
  function connect() {
    var es = new EventSource('api/events');
    es.addEventListener('open', function () { live.className = 'live on'; live.textContent = 'live'; });
    es.addEventListener('state', function (e) { onState(JSON.parse(e.data)); });
    es.addEventListener('logout', function () { es.close(); location.reload(); });
    es.addEventListener('error', function () {
      live.className = 'live off'; live.textContent = 'reconnecting…';
      if (es.readyState === 2) { setTimeout(function () { fetch('api/state', { credentials: 'same-origin' }).then(function (r) { if (r.status === 401) location.reload(); else connect(); }, connect); }, 2000); }
    });
  }
  connect();
  setInterval(tickAges, 1000);
})();
`;
