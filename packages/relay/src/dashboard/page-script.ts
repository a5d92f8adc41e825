// The dashboard's browser script (served as /dashboard/app.js): plain
// JavaScript, no framework, no build step, no template literals (it lives in
// a TS string). It renders the state pushed over server-sent events and posts
// the operator actions with the session's CSRF token.

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

  var csrf = ($('meta[name="csrf-token"]') || {}).content || '';
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
  function fmtTime(t) {
    var d = new Date(t), p = function (n) { return (n < 10 ? '0' : '') + n; };
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }
  function fmtNum(n) { return n >= 1e6 ? (n / 1e6).toFixed(1) + 'M' : n >= 1e4 ? (n / 1e3).toFixed(1) + 'k' : String(n); }
  function fmtRate(r) { return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2); }
  function now() { return state ? state.at + (Date.now() - receivedAt) : Date.now(); }
  function setHtml(el, html) { if (el && el.__html !== html) { el.innerHTML = html; el.__html = html; } }

  // An action: JSON POST with the CSRF token; the answer (or its error) goes to the message line.
  function post(path, body, msgEl, okText, done) {
    fetch(path, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, status: r.status, j: j }; }, function () { return { ok: false, status: r.status, j: {} }; });
    }).then(function (x) {
      if (x.status === 401) { location.reload(); return; }
      msgEl.className = 'msg ' + (x.ok ? 'ok' : 'bad');
      msgEl.textContent = x.ok ? okText(x.j) : ((x.j.error && x.j.error.message) || ('failed (' + x.status + ')'));
      if (done) done(x.ok, x.j);
    }, function (e) {
      msgEl.className = 'msg bad'; msgEl.textContent = 'failed: ' + e;
      if (done) done(false, null);
    });
  }

  // Requests per second over the last minute, with its axes: the scale on
  // the left (0 and the peak), the time below (a minute ago .. now).
  function spark(h) {
    var max = 0, i;
    for (i = 0; i < h.r.length; i++) if (h.r[i] > max) max = h.r[i];
    var top = max > 0 ? max : 1, x0 = 30, w = 156, y0 = 40, ht = 34;
    function line(points, cls) {
      var out = [];
      for (var j = 0; j < points.length; j++) out.push((x0 + j * w / (HIST - 1)).toFixed(1) + ',' + (y0 - points[j] * ht / top).toFixed(1));
      return '<polyline class="' + cls + '" points="' + out.join(' ') + '"/>';
    }
    return '<svg class="spark" viewBox="0 0 190 52" role="img" aria-label="requests per second, last minute (peak ' + fmtRate(max) + '/s)">' +
      '<line class="axis" x1="' + x0 + '" y1="' + (y0 - ht) + '" x2="' + x0 + '" y2="' + y0 + '"/>' +
      '<line class="axis" x1="' + x0 + '" y1="' + y0 + '" x2="' + (x0 + w) + '" y2="' + y0 + '"/>' +
      '<text class="y-max" x="' + (x0 - 3) + '" y="' + (y0 - ht + 7) + '" text-anchor="end">' + esc(fmtRate(max)) + '</text>' +
      '<text class="y-min" x="' + (x0 - 3) + '" y="' + y0 + '" text-anchor="end">0/s</text>' +
      '<text class="x-min" x="' + x0 + '" y="51">-60s</text>' +
      '<text class="x-max" x="' + (x0 + w) + '" y="51" text-anchor="end">now</text>' +
      line(h.r, '') + line(h.e, 'err') + '</svg>';
  }

  function renderSummary() {
    var t = state.totals;
    var cards = [
      ['Relays up', t.relaysUp + ' / ' + state.relays.length, 'relays-up'],
      ['Relays down', t.relaysDown, 'relays-down'],
      ['Tunnels', state.tunnels.length, 'tunnels'],
      ['Connectors', t.connectors, 'connectors'],
      ['Connections', t.connections, 'connections'],
      ['Requests', fmtNum(t.requests), 'total-requests'],
      ['Requests/s', fmtRate(t.rps), 'total-rps'],
      ['Errors/s', fmtRate(t.eps), 'total-eps']
    ];
    setHtml($('#summary'), cards.map(function (c) {
      return '<div class="card" data-testid="card-' + c[2] + '"><div class="k">' + esc(c[0]) + '</div><div class="v">' + esc(c[1]) + '</div></div>';
    }).join(''));
  }

  // This relay's ACME line: certificates held, the next renewal, the last failure and what backs off.
  function renderAcme() {
    var a = state.acme, el = $('#acme');
    el.hidden = !a;
    if (!a) return;
    var parts = ['<b>ACME</b> <span data-testid="acme-certs">' + a.certificates.length + ' certificate' + (a.certificates.length === 1 ? '' : 's') + '</span>' +
      (a.certificates.length ? ' <span class="mono">' + esc(a.certificates.map(function (c) { return c.name; }).join(', ')) + '</span>' : '')];
    if (a.nextRenewal != null) {
      var next = a.certificates.filter(function (c) { return c.renewAt === a.nextRenewal; })[0];
      parts.push('<span data-testid="acme-renewal">next renewal ' + esc(next ? next.name : '') + ' ' + (a.nextRenewal > now() ? 'in ' + fmtAge(a.nextRenewal - now()) : 'due now') + ' (' + esc(fmtTime(a.nextRenewal)) + ')</span>');
    }
    if (a.lastFailure) {
      var f = a.lastFailure, waiting = f.retryAt > now();
      parts.push('<span class="bad" data-testid="acme-failure">last failure ' + esc(f.name) + ' ' + fmtAge(now() - f.at) + ' ago: ' + esc(f.reason) +
        (waiting ? ' · retry in ' + fmtAge(f.retryAt - now()) : '') + '</span>');
    }
    if (a.backoff.length) parts.push('<span data-testid="acme-backoff">' + a.backoff.length + ' name' + (a.backoff.length === 1 ? '' : 's') + ' backing off: ' + esc(a.backoff.map(function (b) { return b.name + ' (' + b.failures + '×)'; }).join(', ')) + '</span>');
    parts.push('<span class="k">orders ' + a.orders.ok + ' ok · ' + a.orders.failed + ' failed · ' + a.orders.rateLimited + ' over the hourly ceiling</span>');
    setHtml(el, parts.join(' · '));
  }

  function relayHealth(r) {
    if (r.health === 'down') return '<span class="badge down">down</span><span class="since" data-since="' + r.lastSeenAt + '">since ' + esc(fmtTime(r.lastSeenAt)) + '</span>';
    if (r.health === 'stopped') return '<span class="badge stopped">stopped</span><span class="since">at ' + esc(fmtTime(r.lastSeenAt)) + '</span>';
    return '<span class="badge ' + esc(r.health) + '">' + esc(r.health) + '</span>';
  }

  function renderRelays() {
    if (!state.relays.length) return setHtml($('#relays'), '<p class="none">No relays in the store.</p>');
    var rows = state.relays.map(function (r) {
      var gone = r.health === 'down' || r.health === 'stopped';
      return '<tr data-relay="' + esc(r.id) + '" data-health="' + esc(r.health) + '"' + (gone ? ' class="down"' : '') + '><td class="mono">' + esc(r.id) + (r.id === state.self.relayId ? ' <span class="badge active">this relay</span>' : '') +
        '</td><td>' + esc(r.region) + '</td><td class="health">' + relayHealth(r) + '</td>' +
        '<td class="num">' + r.connections + '</td><td class="num relay-requests">' + r.requests + '</td>' +
        '<td class="num">' + (gone ? '–' : fmtAge(now() - r.startedAt)) + '</td>' +
        '<td class="num last-seen" title="' + esc(fmtTime(r.lastSeenAt)) + '">' + esc(fmtTime(r.lastSeenAt)) + '<span class="since">' + fmtAge(r.lastSeenAgoMs) + ' ago</span></td>' +
        '<td class="mono">' + esc(r.publicUrl) + '</td><td>' +
        (gone ? '<button type="button" class="quiet forget" data-relay="' + esc(r.id) + '">Forget</button>' :
          (r.stats ? '' : '<span class="badge stale" title="request counts and streams from this relay are unavailable">no stats</span>') +
          (r.unrecorded ? ' <span class="badge stale" title="the fleet history is full (--max-relay-history): this relay is not remembered">not recorded</span>' : '')) +
        '</td></tr>';
    }).join('');
    setHtml($('#relays'), '<table class="grid"><thead><tr><th>Relay</th><th>Region</th><th>Health</th><th class="num">Connections</th><th class="num">Requests</th><th class="num">Uptime</th><th class="num">Last seen</th><th>Public URL</th><th></th></tr></thead><tbody>' + rows + '</tbody></table>');
  }

  function renderTunnels() {
    if (!state.tunnels.length) return setHtml($('#tunnels'), '<p class="none">No tunnels yet.</p>');
    var html = state.tunnels.map(function (t) {
      var h = history[t.id] || { r: [], e: [] };
      var conns = [];
      t.connectors.forEach(function (c) {
        var who = (c.host ? 'host ' + c.host + ' · ' : '') + 'connector ' + c.connectorId;
        c.connections.forEach(function (k) {
          conns.push('<tr class="conn" data-connector="' + esc(c.connectorId) + '" data-index="' + k.connIndex + '">' +
            '<td class="mono connector" title="' + esc(who) + '">' + esc(c.host || c.connectorId.slice(0, 8)) + '</td>' +
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
        spark(h) +
        '<button type="button" class="disconnect-tunnel" data-tunnel="' + esc(t.id) + '" data-name="' + esc(t.name) + '" title="drop its connections on every relay; the tunnel and its credential stay and the connectors reconnect">Disconnect</button> ' +
        '<button type="button" class="danger delete-tunnel" data-tunnel="' + esc(t.id) + '" data-name="' + esc(t.name) + '" title="delete the tunnel and its routes; its connectors are disconnected everywhere">Delete</button>' +
        '</div></div>' +
        (conns.length
          ? '<table class="grid"><thead><tr><th>Connector</th><th class="num">Conn</th><th>Relay</th><th class="num">Age</th><th class="num">Streams</th><th>State</th><th>Version</th><th>Origin IP</th></tr></thead><tbody>' + conns.join('') + '</tbody></table>'
          : '<p class="none">No connector connected.</p>') +
        '</article>';
    }).join('');
    setHtml($('#tunnels'), html);
  }

  // Quick tunnels (tunnel --url): anonymous, so shown by hostname, age and the address they come from.
  function renderQuick() {
    var q = state.quick || [];
    $('#quick-section').hidden = !q.length;
    setHtml($('#quick'), '<table class="grid"><thead><tr><th>Hostname</th><th class="num">Age</th><th>Client IP</th><th class="num">Conns</th><th class="num">Requests</th><th class="num">Req/s</th><th></th></tr></thead><tbody>' +
      q.map(function (t) {
        return '<tr data-quick="' + esc(t.hostname) + '"><td class="mono">' + esc(t.hostname) + '</td>' +
          '<td class="num" data-age="' + t.createdAt + '">' + fmtAge(now() - t.createdAt) + '</td>' +
          '<td class="mono client-ip">' + (t.clientIps.length ? esc(t.clientIps.join(', ')) : '<span class="none">not connected</span>') + '</td>' +
          '<td class="num">' + t.connections + '</td><td class="num">' + t.requests + '</td><td class="num" data-testid="rps">' + fmtRate(t.rps) + '</td>' +
          '<td><button type="button" class="danger kill-quick" data-host="' + esc(t.hostname) + '" title="remove the hostname; its connector stops">Kill</button></td></tr>';
      }).join('') + '</tbody></table>');
  }

  function renderAccounts() {
    if (!state.accounts.length) setHtml($('#accounts'), '<p class="none">No accounts yet.</p>');
    else setHtml($('#accounts'), '<table class="grid" id="accounts-table"><thead><tr><th>Account</th><th class="num">Tunnels</th><th>Zones</th><th>Created</th></tr></thead><tbody>' +
      state.accounts.map(function (a) {
        return '<tr data-account="' + esc(a.name) + '"><td title="' + esc(a.id) + '">' + esc(a.name) + '</td><td class="num">' + a.tunnels + '</td><td>' +
          (a.zones.length ? a.zones.map(function (z) { return '<span class="chip">' + esc(z) + '</span>'; }).join('') : '<span class="none">none</span>') +
          '</td><td>' + esc(fmtTime(a.createdAt)) + '</td></tr>';
      }).join('') + '</tbody></table>');
    if (!state.zones.length) setHtml($('#zones'), '<p class="none">No zones granted.</p>');
    else setHtml($('#zones'), '<table class="grid" id="zones-table"><thead><tr><th>Zone</th><th>Account</th><th>How</th><th>Since</th></tr></thead><tbody>' +
      state.zones.map(function (z) {
        return '<tr data-zone="' + esc(z.zone) + '"><td class="mono">' + esc(z.zone) + '</td><td>' + esc(z.account) + '</td><td>' + esc(z.source) + '</td><td>' + esc(fmtTime(z.createdAt)) + '</td></tr>';
      }).join('') + '</tbody></table>');
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
          '<td><button class="approve" type="button">Approve</button> <button class="danger deny" type="button">Deny</button></td>';
        tr.querySelector('button.approve').addEventListener('click', function () { approve(l.code, tr); });
        tr.querySelector('button.deny').addEventListener('click', function () { deny(l.code, tr); });
        body.appendChild(tr);
      }
      tr.querySelector('[data-age]').textContent = fmtAge(now() - l.createdAt) + ' ago';
      tr.querySelector('.expires').textContent = fmtAge(l.expiresAt - now());
    });
    $('#logins-section').hidden = state.logins.length === 0 && !$('#approve-msg').textContent;
    focusWanted();
  }

  function approve(code, tr) {
    var buttons = tr.querySelectorAll('button');
    var account = tr.querySelector('input').value.trim() || 'default';
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    post('api/logins/' + encodeURIComponent(code) + '/approve', { account: account }, $('#approve-msg'),
      function (j) { return 'Approved ' + j.approved + ' for account ' + j.account + '.'; },
      function (ok) { if (ok) tr.remove(); else Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; }); });
  }

  function deny(code, tr) {
    var buttons = tr.querySelectorAll('button');
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    post('api/logins/' + encodeURIComponent(code) + '/deny', {}, $('#approve-msg'),
      function (j) { return 'Denied ' + j.denied + ': the login was refused.'; },
      function (ok) { if (ok) tr.remove(); else Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; }); });
  }

  // Buttons inside re-rendered tables: one delegated listener each.
  document.addEventListener('click', function (e) {
    var b = e.target.closest && e.target.closest('button');
    if (!b) return;
    if (b.classList.contains('delete-tunnel')) {
      var name = b.getAttribute('data-name');
      if (!window.confirm('Delete tunnel ' + name + '? Its routes go and its connectors are disconnected on every relay.')) return;
      b.disabled = true;
      post('api/tunnels/' + encodeURIComponent(b.getAttribute('data-tunnel')) + '/delete', {}, $('#action-msg'),
        function (j) { return 'Deleted tunnel ' + j.name + ' (' + j.deleted + ').'; },
        function (ok) { if (!ok) b.disabled = false; });
    } else if (b.classList.contains('disconnect-tunnel')) {
      var tname = b.getAttribute('data-name');
      if (!window.confirm('Disconnect tunnel ' + tname + '? Its connections are dropped on every relay; its connectors reconnect.')) return;
      b.disabled = true;
      post('api/tunnels/' + encodeURIComponent(b.getAttribute('data-tunnel')) + '/disconnect', {}, $('#action-msg'),
        function (j) { return 'Disconnected tunnel ' + j.name + ' (' + j.connections + ' connection' + (j.connections === 1 ? '' : 's') + ' dropped); its connectors reconnect.'; },
        function () { b.disabled = false; });
    } else if (b.classList.contains('kill-quick')) {
      var host = b.getAttribute('data-host');
      if (!window.confirm('Kill quick tunnel ' + host + '? The hostname goes and its connector stops.')) return;
      b.disabled = true;
      post('api/quick/' + encodeURIComponent(host) + '/kill', {}, $('#action-msg'),
        function (j) { return 'Killed quick tunnel ' + j.killed + '.'; },
        function (ok) { if (!ok) b.disabled = false; });
    } else if (b.classList.contains('forget')) {
      var id = b.getAttribute('data-relay');
      if (!window.confirm('Forget relay ' + id + '? It leaves this list; its requests stay in the totals.')) return;
      b.disabled = true;
      post('api/relays/' + encodeURIComponent(id) + '/forget', {}, $('#action-msg'),
        function (j) { return 'Forgot relay ' + j.forgotten + '.'; },
        function (ok) { if (!ok) b.disabled = false; });
    }
  });

  $('#revoke').addEventListener('submit', function (e) {
    e.preventDefault();
    var input = $('#revoke-token');
    var btn = $('#revoke button');
    btn.disabled = true;
    post('api/tokens/revoke', { token: input.value }, $('#revoke-msg'),
      function (j) { return 'Revoked ' + j.kind + ' ' + j.revoked + ': it is refused on every relay, and connections using it are closed.'; },
      function (ok) { btn.disabled = false; if (ok) input.value = ''; });
  });

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
    renderAcme();
    renderLogins();
    renderRelays();
    renderTunnels();
    renderQuick();
    renderAccounts();
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
