// The dashboard's stylesheet (served as /dashboard/app.css; the CSP allows no inline style).

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
.badge.draining, .badge.stale, .badge.stopped { color: var(--warn); background: var(--warn-bg); }
.badge.bad, .badge.down { color: var(--bad); background: var(--bad-bg); }
tr.down td { background: #fff7f6; }
button.danger { background: var(--panel); color: var(--bad); border-color: var(--bad); padding: 3px 10px; font-size: 13px; }
button.quiet { background: var(--panel); color: var(--ink); border-color: #b6bec8; padding: 3px 10px; font-size: 13px; }
.since { color: var(--muted); font-size: 12px; display: block; }
form.inline { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
form.inline input[type=text] { flex: 1; min-width: 260px; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 0 24px; }
.tunnel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; margin-bottom: 14px; overflow: hidden; }
.tunnel .head { display: flex; flex-wrap: wrap; align-items: center; gap: 10px 18px; padding: 12px 14px; border-bottom: 1px solid var(--line); }
.tunnel .name { font-size: 17px; font-weight: 650; }
.tunnel .id { color: var(--muted); font-size: 12px; }
.chip { display: inline-block; background: #eef2ff; color: #3730a3; border-radius: 6px; padding: 1px 8px; margin: 2px 4px 2px 0; font-size: 13px; }
.stats { display: flex; gap: 18px; margin-left: auto; align-items: center; }
.stat .k { color: var(--muted); font-size: 12px; display: block; }
.stat .v { font-size: 18px; font-weight: 650; font-variant-numeric: tabular-nums; }
.stat .v.bad { color: var(--bad); }
svg.spark { width: 190px; height: 52px; display: block; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
svg.spark polyline.err { stroke: var(--bad); }
svg.spark line.axis { stroke: #b6bec8; stroke-width: 1; }
svg.spark text { font-size: 9px; fill: var(--muted); font-family: inherit; }
.tunnel .grid { border: none; border-radius: 0; }
.none { color: var(--muted); padding: 10px 14px; }
.msg { margin: 6px 2px; }
.msg:empty { display: none; }
.msg.ok { color: var(--ok); } .msg.bad { color: var(--bad); }
.acme { margin: 10px 2px; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; }
.acme .bad { color: var(--bad); } .acme .k { color: var(--muted); }
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
