// The web pages' stylesheet and scripts, served from memory as /static/app.css, /static/app.js
// and /static/theme.js (no build step, no external files). The script only ever writes text with
// textContent; HTML it inserts comes from the gateway's own escaped fragments (/jobs/<id>/row,
// /jobs/<id>/fields).
//
// Live updates: one EventSource on /api/events (the session cookie authenticates it). Each event
// updates the job's state badge and message at once, then the row (or the job page's detail) is
// fetched again, debounced, for the other fields. The browser reconnects by itself after a network
// error (retry: 1000 from the server, Last-Event-ID replays what was missed); when it gives up (a
// non-200 answer, e.g. while the gateway restarts behind a proxy) the script opens a new one with
// backoff 1 s → 30 s, from the last event id it saw, and refreshes every row it shows. The first
// subscription starts at the stream position the page was rendered at (data-since).
#include "gateway/web.hpp"

namespace descprod::gateway::web {

namespace {

constexpr std::string_view app_css = R"CSS(
/* Colours: the light theme by default; the dark one when the system asks for it (prefers-color-scheme)
   unless the viewer chose light, or when the viewer chose dark (<html data-theme>, set by theme.js
   from localStorage and by the header's toggle). */
:root { color-scheme:light; --fg:#1d2330; --muted:#5b6475; --bg:#f4f6fa; --card:#fff; --line:#dde2ea; --accent:#1f5fbf;
  --ok:#1c7c3a; --bad:#b3261e; --warn:#9a5800; --run:#1f5fbf; --wait:#5e4fa8;
  --head-bg:#17233b; --head-fg:#dfe7f7; --head-muted:#b9c6de; --head-line:#4a5a7a;
  --input-bg:#fff; --input-line:#8a95a8; --btn-bg:#eef2f8; --btn-line:#8a95a8; --primary:#1f5fbf; --primary-fg:#fff;
  --danger-line:#e1aaa5; --flash-bg:#e6f2ea; --flash-line:#b5d8c0; --flash-err-bg:#fbeaea; --flash-err-line:#e4b4b0;
  --badge:#e8ebf1; --b-ready:#ece9f8; --b-dispatched:#e6eefb; --b-running:#dce8fb; --b-done:#e1f3e6; --b-bad:#fbe4e2;
  --b-warn:#fbeedb; --sel-bg:#f1f5fc; --log-bg:#10151f; --log-fg:#d8dee9; --pre-bg:#f1f3f7;
  --note-bg:#fff8e1; --note-line:#f0d98a; --b-waiting:#eceff3; --waiting:#4a5568; --b-held:#fff3cd; --held:#7a5200; }
:root[data-theme="dark"] { color-scheme:dark; --fg:#e3e8f1; --muted:#a9b3c4; --bg:#0f141c; --card:#18202c; --line:#2f3a4b;
  --accent:#8ab8ff; --ok:#74d690; --bad:#ff9b91; --warn:#f2b766; --run:#8ab8ff; --wait:#c0b3ff;
  --head-bg:#0a101a; --head-fg:#d5deee; --head-muted:#a9b6cc; --head-line:#3d4a61;
  --input-bg:#0f1620; --input-line:#67748a; --btn-bg:#243044; --btn-line:#67748a; --primary:#2e6bd0; --primary-fg:#fff;
  --danger-line:#8a4a45; --flash-bg:#16301f; --flash-line:#2f6b43; --flash-err-bg:#3a1b1b; --flash-err-line:#7a3430;
  --badge:#2a3342; --b-ready:#2a2647; --b-dispatched:#1f2b44; --b-running:#1c2e4c; --b-done:#173322; --b-bad:#3d1f1f;
  --b-warn:#3b2c16; --sel-bg:#1f2a3b; --log-bg:#0a0e15; --log-fg:#d8dee9; --pre-bg:#111822;
  --note-bg:#33290f; --note-line:#6b5a22; --b-waiting:#2b3140; --waiting:#c3cad6; --b-held:#3a2f12; --held:#f5cf6b; }
@media (prefers-color-scheme: dark) {
  :root:not([data-theme="light"]) { color-scheme:dark; --fg:#e3e8f1; --muted:#a9b3c4; --bg:#0f141c; --card:#18202c; --line:#2f3a4b;
    --accent:#8ab8ff; --ok:#74d690; --bad:#ff9b91; --warn:#f2b766; --run:#8ab8ff; --wait:#c0b3ff;
    --head-bg:#0a101a; --head-fg:#d5deee; --head-muted:#a9b6cc; --head-line:#3d4a61;
    --input-bg:#0f1620; --input-line:#67748a; --btn-bg:#243044; --btn-line:#67748a; --primary:#2e6bd0; --primary-fg:#fff;
    --danger-line:#8a4a45; --flash-bg:#16301f; --flash-line:#2f6b43; --flash-err-bg:#3a1b1b; --flash-err-line:#7a3430;
    --badge:#2a3342; --b-ready:#2a2647; --b-dispatched:#1f2b44; --b-running:#1c2e4c; --b-done:#173322; --b-bad:#3d1f1f;
    --b-warn:#3b2c16; --sel-bg:#1f2a3b; --log-bg:#0a0e15; --log-fg:#d8dee9; --pre-bg:#111822;
    --note-bg:#33290f; --note-line:#6b5a22; --b-waiting:#2b3140; --waiting:#c3cad6; --b-held:#3a2f12; --held:#f5cf6b; }
}
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
.skip { position:absolute; left:.5rem; top:-3rem; z-index:10; background:var(--card); color:var(--accent); padding:.5rem .8rem; border:2px solid var(--accent); border-radius:6px; }
.skip:focus { top:.5rem; }
.sr-only { position:absolute; width:1px; height:1px; padding:0; margin:-1px; overflow:hidden; clip:rect(0 0 0 0); white-space:nowrap; border:0; }
:focus-visible { outline:3px solid var(--accent); outline-offset:2px; }
main:focus, .flash:focus, h1:focus { outline:none; }
header { background:var(--head-bg); color:#fff; }
header nav { display:flex; flex-wrap:wrap; align-items:center; gap:.25rem 1rem; padding:.5rem 1rem; max-width:1600px; margin:0 auto; }
header nav a { color:var(--head-fg); text-decoration:none; }
header nav a:hover { color:#fff; text-decoration:underline; }
header nav a[aria-current="page"] { color:#fff; text-decoration:underline; text-underline-offset:.3em; }
header nav .brand { font-weight:700; color:#fff; margin-right:.5rem; }
header nav .spacer { flex:1; }
header nav .who { color:var(--head-muted); }
header :focus-visible { outline-color:#fff; }
nav form button[type="submit"], nav button.theme-toggle { background:transparent; color:var(--head-fg); border:1px solid var(--head-line); padding:.2rem .6rem; }
nav button.theme-toggle[aria-pressed="true"] { background:var(--head-line); color:#fff; }
.site-status { display:inline-flex; gap:.3rem; flex-wrap:wrap; }
.site-badge { font-size:.8rem; padding:.05rem .45rem; border-radius:1rem; background:#5b6472; color:#fff; }
.site-badge[data-status="active"] { background:#1c7c3a; }
.site-badge[data-status="degraded"] { background:#8f5100; }
.site-badge[data-status="down"] { background:#b3261e; }
.live { font-size:.8rem; padding:.05rem .45rem; border-radius:1rem; background:#3a4660; color:#e1e7f2; }
.live[data-status="off"] { display:none; }
.live[data-status="on"] { background:#1c7c3a; color:#fff; }
.live[data-status="reconnecting"] { background:#8f5100; color:#fff; }
.live[data-status="outage"] { background:#b3261e; color:#fff; }
main { max-width:1600px; margin:0 auto; padding:1rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:1rem 1.25rem; margin-bottom:1rem; }
.card.narrow { max-width:28rem; margin:2rem auto; }
a.button.oidc-login { display:block; background:var(--primary); color:var(--primary-fg); border-color:var(--primary); text-align:center; padding:.55rem .8rem; }
p.or { text-align:center; color:var(--muted); margin:.8rem 0 .2rem; }
h1 { font-size:1.4rem; margin:.2rem 0 .8rem; }
h2 { font-size:1.15rem; margin:.2rem 0 .6rem; }
.toolbar h1 { font-size:1.15rem; margin:.2rem 0 .6rem; }
h1.page-title { margin:.2rem 0 .8rem; }
h1 small, h2 small { color:var(--muted); font-weight:400; font-size:.8em; }
a { color:var(--accent); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size:.9em; }
time { white-space:nowrap; }
.flash { padding:.6rem .9rem; border-radius:6px; background:var(--flash-bg); border:1px solid var(--flash-line); }
.flash.error { background:var(--flash-err-bg); border-color:var(--flash-err-line); }
.flash a { font-weight:600; }
form.stack { display:flex; flex-direction:column; gap:.7rem; }
form.stack label { display:flex; flex-direction:column; gap:.2rem; font-weight:600; }
form.stack small { font-weight:400; color:var(--muted); }
form.create { display:flex; flex-wrap:wrap; gap:.6rem 1rem; align-items:flex-end; }
form.create label { display:flex; flex-direction:column; gap:.2rem; font-size:.85rem; color:var(--muted); }
form.create label.check { flex-direction:row; align-items:center; gap:.4rem; align-self:center; padding-top:1.2rem; color:var(--fg); }
input[name="after"] { min-width:10rem; }
form.inline { display:inline; margin:0 .15rem 0 0; }
input, select, button, .button { font:inherit; padding:.35rem .6rem; border:1px solid var(--input-line); border-radius:5px; background:var(--input-bg); color:var(--fg); }
input[name="config"], input[name="howfig"] { min-width:14rem; }
input[type="number"] { width:6rem; }
button, .button { cursor:pointer; background:var(--btn-bg); border-color:var(--btn-line); text-decoration:none; display:inline-block; line-height:1.2; }
button[type="submit"] { background:var(--primary); color:var(--primary-fg); border-color:var(--primary); }
td button[type="submit"], .actions button[type="submit"] { background:var(--btn-bg); color:var(--fg); border-color:var(--btn-line); padding:.15rem .5rem; font-size:.85rem; }
td .button, .actions .button { padding:.15rem .5rem; font-size:.85rem; }
button.danger[type="submit"] { color:var(--bad); border-color:var(--danger-line); }
.apphelp { margin:.8rem 0 0; font-size:.9rem; }
.apphelp div { padding:.2rem .5rem; border-left:3px solid transparent; }
.apphelp div.selected { border-left-color:var(--accent); background:var(--sel-bg); }
.apphelp dt { font-weight:700; display:inline; }
.apphelp dd { display:inline; margin:0 0 0 .5rem; color:var(--muted); }
.toolbar { display:flex; flex-wrap:wrap; align-items:center; gap:.5rem 1rem; justify-content:space-between; }
.filters a { margin-right:.6rem; }
.filters a.on { font-weight:700; text-decoration:none; color:var(--fg); }
.count { color:var(--muted); font-size:.9rem; margin:.3rem 0; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:.75rem; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); }
table.jobs td { font-size:.9rem; }
td.c-actions { min-width:7rem; }
td.c-actions form, td.c-actions .button { margin:0 .15rem .2rem 0; }
div.actions { margin:.2rem 0 .6rem; }
td.c-progress { min-width:10rem; }
td.c-rundir code { word-break:break-all; }
progress { width:7rem; height:.8rem; vertical-align:middle; accent-color:var(--accent); }
.state { display:inline-block; padding:.05rem .5rem; border-radius:1rem; font-size:.8rem; font-weight:600; background:var(--badge); color:var(--fg); }
.s-waiting { background:var(--b-waiting); color:var(--waiting); }
.s-held { background:var(--b-held); color:var(--held); }
.s-ready { background:var(--b-ready); color:var(--wait); }
.s-dispatched { background:var(--b-dispatched); color:var(--run); }
.s-running { background:var(--b-running); color:var(--run); }
.s-done { background:var(--b-done); color:var(--ok); }
.s-failed, .s-lost, .s-killed { background:var(--b-bad); color:var(--bad); }
.s-timeout, .s-cancelled { background:var(--b-warn); color:var(--warn); }
.gone { color:var(--muted); }
.jobmeta { margin:.3rem 0; }
table.fields th { width:12rem; text-transform:none; font-size:.85rem; }
.status { font-size:1rem; }
.logbox { background:var(--log-bg); border-radius:6px; max-height:26rem; overflow:auto; }
pre.log { color:var(--log-fg); padding:.7rem; margin:0; white-space:pre-wrap; word-break:break-all; min-height:2.5rem; }
.logtools { display:flex; flex-wrap:wrap; gap:.6rem 1.2rem; align-items:center; margin-top:.7rem; }
.logtools p { flex-basis:100%; margin:0; }
.logsearch { display:flex; gap:.4rem; align-items:center; flex-wrap:wrap; }
.logsearch input { min-width:14rem; }
.logresults { margin-top:.7rem; }
pre.log .ln { display:inline-block; min-width:4.5em; margin-right:.8em; text-align:right; color:#9aa7b8; user-select:none; }
pre.log mark { background:#f5d76e; color:#10151f; border-radius:2px; }
ol.timeline { padding-left:1.2rem; margin:0; }
ol.timeline li { padding:.15rem 0; }
ol.timeline time { color:var(--muted); font-size:.85rem; }
ol.timeline .etype { color:var(--muted); font-size:.85rem; }
dl.stats { display:flex; flex-wrap:wrap; gap:1rem 2.5rem; margin:0; }
dl.stats dt { color:var(--muted); font-size:.85rem; }
dl.stats dd { margin:0; font-size:1.5rem; font-weight:700; }
.ustatus { font-weight:600; }
.u-pending { color:var(--wait); } .u-disabled, .u-rejected { color:var(--bad); } .u-active { color:var(--ok); }
.newtoken { background:var(--note-bg); border:1px solid var(--note-line); border-radius:6px; padding:.6rem .9rem; margin-bottom:1rem; }
.newtoken code { display:block; word-break:break-all; font-size:1rem; padding:.3rem 0; user-select:all; }
.pager { display:flex; gap:1rem; margin-top:.6rem; }
.pager a { color:var(--accent); font-weight:600; }
.inline-label { font-size:.85rem; color:var(--muted); margin-right:.3rem; }
.filterform { display:inline-flex; flex-wrap:wrap; align-items:center; gap:.3rem; }
.filterform .inline-label { margin-left:.4rem; }
.filterform input[type=search] { width:14rem; max-width:100%; }
th a.sort { color:inherit; text-decoration:none; }
th a.sort:hover, th a.sort:focus { text-decoration:underline; }
th[aria-sort] { color:var(--fg); }
table.jobs:not([data-bulk]) .c-sel { display:none; }
.c-sel { width:1.5rem; }
table.jobs:not([data-owners]) .c-owner { display:none; }
form.bulk { display:flex; flex-wrap:wrap; align-items:center; gap:.3rem; margin:.4rem 0; }
form.bulk button[type="submit"] { background:var(--btn-bg); color:var(--fg); border-color:var(--btn-line); }
form.bulk button.danger[type="submit"] { color:var(--bad); border-color:var(--danger-line); }
.newjobs { margin:.3rem 0; }
.newjobs a { font-weight:600; }
.empty { color:var(--muted); }
.prose { max-width:60rem; }
.prose pre { background:var(--pre-bg); padding:.6rem; border-radius:6px; overflow-x:auto; }
/* The status plots (status.js): colours from the theme's variables, so both themes apply. */
:root { --plot-done:var(--ok); --plot-failed:var(--bad); --plot-queue:var(--wait); --plot-running:var(--run);
  --plot-workers:var(--accent); --plot-slots:var(--muted); --plot-busy:var(--warn); --plot-grid:var(--line); }
.plots { display:grid; grid-template-columns:repeat(auto-fill, minmax(min(100%, 30rem), 1fr)); gap:1rem 1.5rem; margin-top:.8rem; }
.plot { margin:0; min-width:0; }
.plot figcaption { font-weight:600; margin-bottom:.2rem; }
.plot-box svg { display:block; max-width:100%; height:auto; }
.plot .grid { stroke:var(--plot-grid); stroke-width:1; }
.plot .axis { fill:var(--muted); font-size:11px; }
.plot .line { fill:none; stroke-width:2; stroke-linejoin:round; }
.plot .p-done { fill:var(--plot-done); stroke:var(--plot-done); } .plot .p-failed { fill:var(--plot-failed); stroke:var(--plot-failed); }
.plot .line.p-queue { stroke:var(--plot-queue); } .plot .line.p-running { stroke:var(--plot-running); }
.plot .line.p-workers { stroke:var(--plot-workers); } .plot .line.p-slots { stroke:var(--plot-slots); stroke-dasharray:6 3; }
.plot .line.p-busy { stroke:var(--plot-busy); stroke-dasharray:2 2; }
.plot .dot { stroke:none; } .plot .dot.p-queue { fill:var(--plot-queue); } .plot .dot.p-running { fill:var(--plot-running); }
.plot .dot.p-workers { fill:var(--plot-workers); } .plot .dot.p-slots { fill:var(--plot-slots); } .plot .dot.p-busy { fill:var(--plot-busy); }
.plot .legend { list-style:none; display:flex; flex-wrap:wrap; gap:.2rem 1rem; padding:0; margin:.3rem 0 0; font-size:.85rem; color:var(--muted); }
.plot .swatch { display:inline-block; width:1.4rem; height:0; border-top:3px solid; vertical-align:middle; margin-right:.35rem; }
.swatch.p-workers { border-color:var(--plot-workers); } .swatch.p-slots { border-color:var(--plot-slots); border-top-style:dashed; }
.swatch.p-busy { border-color:var(--plot-busy); border-top-style:dotted; }
.plot-data summary { cursor:pointer; font-size:.85rem; color:var(--accent); margin-top:.3rem; }
.plot-table { font-size:.85rem; max-width:24rem; }
.plot-table th[scope=row] { font-weight:400; color:var(--fg); text-transform:none; font-size:.85rem; }
#status-problem { margin:.4rem 0; }
/* The job page's dependency graph: dependencies | the job | dependents, joined by lines drawn with
   borders (a trunk down each list, a branch to each job; dashed for after_any). Each row's branch
   sits at --dg-y from its top: the centre of a one-line node, so the lines meet whatever wraps. */
.depgraph { --dg-y:1.15rem; --dg-gap:2rem; display:grid; grid-template-columns:minmax(0,1fr) auto minmax(0,1fr); row-gap:.3rem; align-items:start; margin:.4rem 0; }
.depgraph h3 { font-size:.75rem; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); margin:0; font-weight:600; }
.depgraph h3 small { text-transform:none; font-weight:400; }
.dg-h-before { grid-column:1; grid-row:1; text-align:right; padding-right:var(--dg-gap); }
.dg-h-self { grid-column:2; grid-row:1; text-align:center; }
.dg-h-after { grid-column:3; grid-row:1; padding-left:var(--dg-gap); }
ul.dg-before { grid-column:1; grid-row:2; }
.dg-self { grid-column:2; grid-row:2; }
ul.dg-after { grid-column:3; grid-row:2; }
ul.dg-list { list-style:none; margin:0; padding:0; min-width:0; }
ul.dg-list li { position:relative; padding:.15rem 0; }
ul.dg-before li { padding-right:var(--dg-gap); text-align:right; }
ul.dg-after li { padding-left:var(--dg-gap); }
.dg-node { display:inline-block; max-width:100%; border:1px solid var(--line); border-radius:6px; padding:.25rem .5rem; background:var(--card); line-height:1.4; text-align:left; }
.dg-self { position:relative; padding:.15rem var(--dg-gap) 0; }
.dg-self .dg-node { border:2px solid var(--accent); padding:calc(.25rem - 1px) calc(.5rem - 1px); }
.dg-kind { font-size:.8rem; color:var(--muted); font-family:ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.dg-none { color:var(--muted); font-size:.9rem; }
ul.dg-list li.dg-edge::before, ul.dg-list li.dg-more::before, .dg-self.has-before::before, .dg-self.has-after::after {
  content:""; position:absolute; top:var(--dg-y); width:var(--dg-gap); border-top:2px solid var(--muted); }
ul.dg-before li::before { right:0; }
ul.dg-after li::before { left:0; }
.dg-self.has-before::before { left:0; }
.dg-self.has-after::after { right:0; }
ul.dg-list li.k-after_any::before { border-top-style:dashed; }
ul.dg-list li.dg-more::before { border-top-style:dotted; }
ul.dg-list li.dg-edge::after, ul.dg-list li.dg-more::after { content:""; position:absolute; top:0; bottom:0; border-left:2px solid var(--muted); }
ul.dg-before li::after { right:0; }
ul.dg-after li::after { left:0; }
ul.dg-list li:first-child::after { top:var(--dg-y); }
ul.dg-list li:last-child::after { bottom:auto; height:var(--dg-y); }
ul.dg-list li:only-child::after { display:none; }
.dg-legend { color:var(--muted); font-size:.85rem; margin:.5rem 0 0; }
.dg-swatch { display:inline-block; width:1.6rem; height:0; border-top:2px solid var(--muted); vertical-align:middle; }
.dg-swatch.k-after_any { border-top-style:dashed; }
[hidden] { display:none !important; }
@media (max-width: 760px) {
  main { padding:.5rem; }
  .card { padding:.75rem; }
  header nav { gap:.25rem .8rem; }
  form.create label, form.create input, form.create select { width:100%; }
  table.jobs thead, table.list thead { display:none; }
  table.jobs tr, table.list tr { display:block; border:1px solid var(--line); border-radius:6px; margin-bottom:.6rem; padding:.3rem; }
  table.jobs td, table.list td { display:flex; gap:.6rem; border:none; padding:.2rem .3rem; }
  table.jobs td:empty, table.jobs td:has(> code:empty) { display:none; }
  table.jobs td::before, table.list td::before { content:attr(data-label); flex:0 0 7.5rem; color:var(--muted); font-size:.8rem; }
  td.c-actions { flex-wrap:wrap; white-space:normal; gap:.4rem; }
  form.create label.check { width:100%; padding-top:0; }
  form.create input[type="checkbox"] { width:auto; }
  /* The graph as three lists one under the other, without the lines. */
  .depgraph { display:block; }
  .depgraph h3, ul.dg-list li { text-align:left; padding:.15rem 0; }
  .depgraph h3 { margin-top:.5rem; }
  .dg-self { padding:.15rem 0 0; }
  ul.dg-list li::before, ul.dg-list li::after, .dg-self::before, .dg-self::after { display:none; }
  table.fields th { width:8rem; }
  /* Touch targets: every button, and every link that acts as one, at least 40 px high. */
  button, .button, td button[type="submit"], .actions button[type="submit"], td .button, .actions .button,
  nav form button[type="submit"], nav button.theme-toggle, input:not([type="hidden"]), select {
    min-height:40px; }
  .button, .pager a, .filters a { display:inline-flex; align-items:center; min-height:40px; }
  td button[type="submit"], .actions button[type="submit"], td .button, .actions .button { padding:.3rem .8rem; font-size:.9rem; }
  header nav a { display:inline-flex; align-items:center; min-height:40px; }
  div.actions { display:flex; flex-wrap:wrap; gap:.4rem; }
}
)CSS";

constexpr std::string_view app_js = R"JS('use strict';
(function () {
  const TERMINAL = new Set(['done', 'failed', 'timeout', 'killed', 'cancelled', 'lost']);
  const STATES = ['waiting', 'held', 'ready', 'dispatched', 'running', 'done', 'failed', 'timeout', 'killed', 'cancelled', 'lost'];
  const body = document.body;
  const page = body.dataset.page;

  // The sites' status in the header (GET /api/sites, polled by the daemon): a badge per site,
  // read at load and every minute while the page is shown.
  const sitesBox = document.getElementById('site-status');
  function showSites() {
    if (!sitesBox || document.hidden) return;
    fetch('/api/sites', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d || !Array.isArray(d.sites)) return;
        sitesBox.textContent = '';
        d.sites.forEach(function (st) {
          const b = document.createElement('span');
          b.className = 'site-badge';
          b.dataset.status = String(st.status || 'unknown');
          b.textContent = st.name + ': ' + st.status;
          let title = st.full_name || st.name;
          if (st.description) title += ' — ' + st.description;
          if (st.notes) title += ' (' + st.notes + ')';
          if (typeof st.age_s === 'number') title += '; reported ' + Math.round(st.age_s) + ' s ago';
          if (st.error) title += '; last check failed: ' + st.error;
          b.title = title;
          sitesBox.appendChild(b);
        });
      })
      .catch(function () {});
  }
  showSites();
  if (sitesBox) setInterval(showSites, 60000);

  // Forms that need a confirmation (delete, reject, revoke, ...).
  document.addEventListener('submit', function (ev) {
    const f = ev.target;
    // The button's own question first (the many-jobs form has one per action), else the form's.
    const ask = (ev.submitter && ev.submitter.dataset.confirm) || (f instanceof HTMLFormElement && f.dataset.confirm);
    if (ask && !window.confirm(ask)) ev.preventDefault();
  }, true);
  // "Select every job on this page" ticks or clears each row's box.
  document.addEventListener('change', function (ev) {
    const box = ev.target;
    if (!(box instanceof HTMLInputElement) || !box.classList.contains('selectall')) return;
    const t = box.closest('table');
    if (t) t.querySelectorAll('tbody input[name=ids]').forEach(function (c) { c.checked = box.checked; });
  });
  // A filter menu applies a choice made with the pointer at once; one made with the keyboard's
  // arrows only on Enter (so stepping through the choices does not load a page per step).
  document.querySelectorAll('select[data-autosubmit]').forEach(function (s) {
    let keyed = false;
    s.addEventListener('keydown', function (e) {
      if (e.key === 'Enter') { e.preventDefault(); s.form.submit(); return; }
      if (e.key !== 'Tab' && e.key !== 'Shift') keyed = true;
    });
    s.addEventListener('pointerdown', function () { keyed = false; });
    s.addEventListener('change', function () { if (!keyed) s.form.submit(); });
  });
  document.querySelectorAll('.nojs').forEach(function (e) { e.hidden = true; });

  // The theme: the system's (prefers-color-scheme) unless the viewer chose the other one with the
  // header's toggle; the choice is kept in localStorage (theme.js applies it before the first
  // paint). Choosing the system's own theme again forgets the choice, so the page follows the
  // system from then on.
  const THEME_KEY = 'descprod-theme';
  const root = document.documentElement;
  const systemDark = window.matchMedia('(prefers-color-scheme: dark)');
  const toggle = document.getElementById('theme-toggle');
  function isDark() { return root.dataset.theme ? root.dataset.theme === 'dark' : systemDark.matches; }
  function syncToggle() { if (toggle) toggle.setAttribute('aria-pressed', isDark() ? 'true' : 'false'); }
  if (toggle) {
    toggle.hidden = false;
    syncToggle();
    toggle.addEventListener('click', function () {
      const dark = !isDark();
      try {
        if (dark === systemDark.matches) localStorage.removeItem(THEME_KEY);
        else localStorage.setItem(THEME_KEY, dark ? 'dark' : 'light');
      } catch (e) { /* storage refused: the choice lasts for this page only */ }
      if (dark === systemDark.matches) delete root.dataset.theme;
      else root.dataset.theme = dark ? 'dark' : 'light';
      syncToggle();
    });
    systemDark.addEventListener('change', syncToggle);
  }

  // The application picker shows the chosen application's help.
  const picker = document.getElementById('jobtype');
  function showHelp() {
    document.querySelectorAll('#apphelp [data-app]').forEach(function (d) {
      d.classList.toggle('selected', d.dataset.app === picker.value);
    });
  }
  if (picker) { picker.addEventListener('change', showHelp); showHelp(); }

  function pad(n) { return n < 10 ? '0' + n : '' + n; }
  function fmtDuration(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    return h > 0 ? h + ':' + pad(m) + ':' + pad(sec) : m + ':' + pad(sec);
  }
  function fmtUtc(d) {
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + ' UTC';
  }

  // Times: the server writes <time datetime="...Z">YYYY-MM-DD HH:MM:SS UTC</time>; the page shows
  // them in the viewer's time zone (with its short name) and keeps the UTC text in the title.
  let zoneFormat = null;
  try { zoneFormat = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' }); } catch (e) { /* no Intl */ }
  function fmtLocal(d) {
    let zone = '';
    if (zoneFormat) {
      const part = zoneFormat.formatToParts(d).find(function (p) { return p.type === 'timeZoneName'; });
      if (part) zone = ' ' + part.value;
    }
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + zone;
  }
  function localize(el) {
    if (el.dataset.local) return;
    const d = new Date(el.getAttribute('datetime'));
    if (isNaN(d.getTime())) return;
    el.title = fmtUtc(d);
    el.textContent = fmtLocal(d);
    el.dataset.local = '1';
  }
  function localizeTimes(scope) { scope.querySelectorAll('time[datetime]').forEach(localize); }
  function timeElement(seconds) {
    const el = document.createElement('time');
    const d = new Date(seconds * 1000);
    if (isNaN(d.getTime())) return el;
    el.setAttribute('datetime', d.toISOString().replace(/\.\d+Z$/, 'Z'));
    localize(el);
    return el;
  }
  localizeTimes(document);

  // Focus after an action: a form post reloads the page (POST-redirect-GET), which would leave the
  // focus at the top. The control's row (job, user, token), label and place are noted before the
  // post; on the next page the same control gets the focus back, or the one that took its place
  // (Archive for Unarchive), else the message the action left (the flash, with its link to a new
  // job) when the row is gone.
  const FOCUS_KEY = 'descprod-focus';
  function rowOfControl(el) {
    const tr = el.closest('tr[data-job], tr[data-user], tr[data-token]');
    if (tr) {
      for (const k of ['job', 'user', 'token']) if (tr.dataset[k]) return { key: 'tr[data-' + k + '="' + tr.dataset[k] + '"]', el: tr };
    }
    const actions = el.closest('#jobdetail .actions');
    return actions ? { key: '#jobdetail .actions', el: actions } : { key: '', el: null };
  }
  function controlsOf(scope) { return Array.from(scope.querySelectorAll('button, a.button')); }
  document.addEventListener('submit', function (ev) {
    const f = ev.target;
    if (ev.defaultPrevented || !(f instanceof HTMLFormElement) || (f.method || '').toLowerCase() !== 'post') return;
    if (/\/(login|register|logout)$/.test(f.action)) return;
    const btn = ev.submitter || f.querySelector('button');
    const row = rowOfControl(f);
    const index = row.el && btn ? controlsOf(row.el).indexOf(btn) : -1;
    try {
      sessionStorage.setItem(FOCUS_KEY, JSON.stringify({ row: row.key, label: btn ? btn.textContent : '', index: index, at: Date.now() }));
    } catch (e) { /* no storage: the focus starts at the top */ }
  });
  (function restoreFocus() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(FOCUS_KEY) || 'null');
      sessionStorage.removeItem(FOCUS_KEY);
    } catch (e) { return; }
    if (!saved || Date.now() - saved.at > 60000) return;
    let target = null;
    const scope = saved.row && /^(tr\[data-(job|user|token)="[^"\\]*"\]|#jobdetail \.actions)$/.test(saved.row)
      ? document.querySelector(saved.row) : null;
    if (scope) {
      const controls = controlsOf(scope);
      target = controls.find(function (c) { return c.textContent === saved.label; }) ||
        controls[Math.min(Math.max(saved.index, 0), controls.length - 1)] || null;
    }
    if (!target) target = document.getElementById('flash');
    if (target) target.focus();
  })();

  // Durations of running jobs tick every second.
  setInterval(function () {
    document.querySelectorAll('tr[data-job]').forEach(function (tr) {
      if (!tr.dataset.start || tr.dataset.stop || TERMINAL.has(tr.dataset.state)) return;
      const cell = tr.querySelector('.c-duration');
      if (cell) cell.textContent = fmtDuration(Date.now() / 1000 - parseFloat(tr.dataset.start));
    });
  }, 1000);

  // Browser notifications when one's own jobs end (opt-in; docs/web.md#notifications). The choice
  // is kept in localStorage; the permission is asked only on the header button's click. One tab
  // of the browser notifies (a short lease in localStorage), and bursts are coalesced: at most
  // NOTE_SINGLE notifications of single jobs per NOTE_WINDOW_MS, the rest in one "N more jobs
  // ended" at the window's end.
  const NOTIFY_KEY = 'descprod-notify', LEADER_KEY = 'descprod-notify-leader';
  const NOTE_WINDOW_MS = 5000, NOTE_SINGLE = 3;
  const tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  const me = body.dataset.user || '';
  const notifyToggle = document.getElementById('notify-toggle');
  let noteStart = 0, noteShown = 0, noteMore = 0, noteTimer = null;
  function notifySupported() { return typeof window.Notification === 'function'; }
  function notifyOn() {
    try {
      return notifySupported() && Notification.permission === 'granted' && localStorage.getItem(NOTIFY_KEY) === '1';
    } catch (e) { return false; }
  }
  function syncNotify() { if (notifyToggle) notifyToggle.setAttribute('aria-pressed', notifyOn() ? 'true' : 'false'); }
  if (notifyToggle && notifySupported() && me) {
    notifyToggle.hidden = false;
    syncNotify();
    notifyToggle.addEventListener('click', function () {
      if (notifyOn()) {
        try { localStorage.removeItem(NOTIFY_KEY); } catch (e) { /* storage refused */ }
        syncNotify();
        return;
      }
      Promise.resolve(Notification.requestPermission()).then(function (p) {
        if (p === 'granted') {
          try { localStorage.setItem(NOTIFY_KEY, '1'); } catch (e) { /* storage refused */ }
        } else {
          notifyToggle.title = 'Notifications are blocked for this site in the browser\'s settings';
        }
        syncNotify();
      });
    });
    window.addEventListener('storage', function (e) { if (e.key === NOTIFY_KEY) syncNotify(); });
  }
  // Whether this tab is the one that notifies: it holds the lease, or takes a free or stale one.
  function leading() {
    const now = Date.now();
    try {
      const cur = JSON.parse(localStorage.getItem(LEADER_KEY) || 'null');
      if (cur && cur.tab !== tabId && cur.until > now) return false;
      localStorage.setItem(LEADER_KEY, JSON.stringify({ tab: tabId, until: now + 5000 }));
      const back = JSON.parse(localStorage.getItem(LEADER_KEY) || 'null');
      return !back || back.tab === tabId;
    } catch (e) { return true; }
  }
  setInterval(function () { if (notifyOn()) leading(); }, 2000);
  window.addEventListener('pagehide', function () {
    try {
      const cur = JSON.parse(localStorage.getItem(LEADER_KEY) || 'null');
      if (cur && cur.tab === tabId) localStorage.removeItem(LEADER_KEY);
    } catch (e) { /* storage refused */ }
  });
  function popup(title, text, tag, href) {
    try {
      const n = new Notification(title, { body: text || '', tag: tag });
      n.onclick = function () { window.focus(); location.href = href; if (n.close) n.close(); };
    } catch (e) { /* a browser that allows notifications only from a service worker */ }
  }
  function popupJob(d) {
    const id = String(d.id);
    fetch('/api/jobs/' + encodeURIComponent(id), { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .catch(function () { return null; })
      .then(function (j) {
        const type = j && j.jobtype ? ' ' + j.jobtype : '';
        popup('Job ' + id + type + ': ' + d.state, d.progress || '', 'descprod-job-' + id, '/jobs/' + id);
      });
  }
  function flushMoreNotes() {
    noteTimer = null;
    if (noteMore > 0) {
      const n = noteMore;
      noteMore = 0;
      popup((n === 1 ? '1 more job' : n + ' more jobs') + ' ended', 'See the Jobs page.', 'descprod-more', '/?view=all');
    }
    // A burst that goes on gets only summaries, one per window.
    noteStart = Date.now();
    noteShown = NOTE_SINGLE;
  }
  function notifyEnded(d) {
    if (d.type !== 'transition' || !TERMINAL.has(d.state) || !me || d.owner !== me) return;
    if (!notifyOn() || !leading()) return;
    const now = Date.now();
    if (!noteTimer && now - noteStart >= NOTE_WINDOW_MS) { noteStart = now; noteShown = 0; }
    if (noteShown < NOTE_SINGLE) { noteShown++; popupJob(d); return; }
    noteMore++;
    if (!noteTimer) noteTimer = setTimeout(flushMoreNotes, Math.max(0, noteStart + NOTE_WINDOW_MS - now));
  }

  if (page !== 'home' && page !== 'job') return;

  const jobId = body.dataset.job || '';
  const live = document.getElementById('live');
  const LIVE_TEXT = { on: 'live', reconnecting: 'reconnecting', outage: 'service outage' };
  function setLive(status) {
    if (!live) return;
    live.dataset.status = status;
    live.textContent = LIVE_TEXT[status] || 'live';
  }

  function here() { return location.pathname + location.search; }
  function table() { return document.querySelector(page === 'home' ? '#jobs' : '#children'); }
  function rowOf(id) {
    const t = table();
    return t ? t.querySelector('tbody tr[data-job="' + id + '"]') : null;
  }
  function setBadge(container, state, progress) {
    if (!container) return;
    const badge = container.querySelector('.state');
    if (badge && state) { badge.textContent = state; badge.className = 'state s-' + state; }
    const msg = container.querySelector('.msg');
    if (msg && typeof progress === 'string') msg.textContent = progress;
  }
  // A live update replaces a row (or the job page's detail): the focus, if it was inside, moves to
  // the same control in the new one (same tag and text), else to the new one's first control.
  function replaceKeepingFocus(old, fresh) {
    const had = document.activeElement;
    const inside = had && had !== document.body && old.contains(had);
    // A ticked row stays ticked when a live update replaces it.
    const was = old.querySelector('input[name=ids]'), now = fresh.querySelector('input[name=ids]');
    if (was && now) now.checked = was.checked;
    old.replaceWith(fresh);
    localizeTimes(fresh);
    if (!inside) return;
    const same = Array.from(fresh.querySelectorAll(had.tagName)).find(function (e) { return e.textContent === had.textContent; });
    const target = same || fresh.querySelector('a, button');
    if (target) target.focus();
  }
  // A row that leaves the table (deleted, archived out of view): the focus, if it was inside, goes
  // to the next row's link, else to the table's heading.
  function removeKeepingFocus(tr) {
    const had = document.activeElement;
    const inside = had && had !== document.body && tr.contains(had);
    const next = tr.nextElementSibling || tr.previousElementSibling;
    tr.remove();
    if (!inside) return;
    const target = (next && next.querySelector('a, button')) || document.querySelector('main h1');
    if (target) {
      if (!target.matches('a, button')) target.tabIndex = -1;
      target.focus();
    }
  }
  function parseRow(html) {
    const t = document.createElement('template');
    t.innerHTML = html.trim();
    const tb = document.createElement('tbody');
    tb.appendChild(t.content);
    return tb.querySelector('tr[data-job]');
  }

  // The job page's detail is fetched again after its events, debounced.
  const timers = new Map();
  function later(key, fn, ms) {
    if (timers.has(key)) return;
    timers.set(key, setTimeout(function () { timers.delete(key); fn(); }, ms));
  }

  // Rows converge to the jobs' state in Redis, however many events come and in whatever order:
  // an event marks its job's row stale (its badge and message change at once); stale rows are
  // fetched in batches (GET /jobs/rows?ids=..., at most ROWS_PER_REQUEST, one request in flight at
  // a time) and replace the rows shown. An event for a row being fetched marks it stale again, so
  // it is fetched once more after that answer. New jobs are inserted in ID order while the table
  // keeps its page size; those beyond it are only counted.
  const ROWS_PER_REQUEST = 200;
  const stale = new Set();    // rows shown, to fetch again
  const fresh = new Set();    // new jobs that may belong on this page
  let fetchingNew = new Set();  // new jobs whose rows are being fetched
  let flushTimer = null, fetching = false, retryMs = 0;
  function perPage() { const t = table(); return t ? (parseInt(t.dataset.perpage, 10) || 50) : 50; }
  function shownRows() { const t = table(); return t ? t.querySelectorAll('tbody tr[data-job]') : []; }
  function scheduleFlush(ms) {
    if (flushTimer || fetching) return;
    flushTimer = setTimeout(flush, ms === undefined ? 50 : ms);
  }
  function markStale(id) { stale.add(id); scheduleFlush(); }
  // The new jobs worth fetching: those that would be among the page's rows (IDs descending).
  function freshCandidates(room) {
    const rows = shownRows(), per = perPage();
    let lowest = 0;
    if (rows.length >= per) lowest = Math.min.apply(null, Array.from(rows, function (r) { return Number(r.dataset.job); }));
    const ids = Array.from(fresh).map(Number).filter(function (n) { return n > lowest; });
    ids.sort(function (x, y) { return y - x; });
    fresh.clear();
    return ids.slice(0, Math.min(per, room)).map(String);
  }
  function flush() {
    flushTimer = null;
    if (fetching) return;
    const ids = [];
    for (const id of stale) { if (ids.length >= ROWS_PER_REQUEST) break; ids.push(id); }
    ids.forEach(function (id) { stale.delete(id); });
    const news = freshCandidates(ROWS_PER_REQUEST - ids.length);
    const all = ids.concat(news);
    if (all.length === 0) return;
    fetching = true;
    fetchingNew = new Set(news);
    fetch('/jobs/rows?ids=' + all.join(',') + '&next=' + encodeURIComponent(here()), { credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (j) { retryMs = 0; applyRows(j, fetchingNew); })
      .catch(function () {
        // Fetch them again later (the gateway may be restarting); nothing is forgotten.
        ids.forEach(function (id) { stale.add(id); });
        news.forEach(function (id) { fresh.add(id); });
        retryMs = Math.min(Math.max(retryMs * 2, 500), 10000);
      })
      .finally(function () {
        fetching = false;
        fetchingNew = new Set();
        if (stale.size || fresh.size) scheduleFlush(retryMs || 50);
      });
  }
  function rowMatchesView(row) {
    const t = table();
    if (!t) return false;
    if (t.dataset.view === 'active' && row.dataset.archive === '1') return false;
    if (page === 'job' && row.dataset.parent !== jobId) return false;
    if (!ownerShown(t, row.dataset.owner)) return false;
    const filter = t.dataset.state;
    return !filter || filter === row.dataset.state;
  }
  function insertSorted(tbody, row) {
    const id = Number(row.dataset.job);
    for (const tr of tbody.querySelectorAll('tr[data-job]')) {
      if (Number(tr.dataset.job) < id) { tbody.insertBefore(row, tr); return; }
    }
    tbody.appendChild(row);
  }
  function applyRows(j, news) {
    const t = table();
    if (!t) return;
    const tbody = t.querySelector('tbody');
    let removed = 0;
    (j.gone || []).forEach(function (id) {
      const old = rowOf(String(id));
      if (old) { removeKeepingFocus(old); removed++; }
    });
    const rows = j.rows || {};
    let inserted = 0;
    Object.keys(rows).forEach(function (id) {
      const row = parseRow(rows[id]);
      if (!row) return;
      const old = rowOf(id);
      if (old) {
        // A shown row stays (its state may have left the filter), unless archived out of view.
        if (t.dataset.view === 'active' && row.dataset.archive === '1') { removeKeepingFocus(old); removed++; }
        else replaceKeepingFocus(old, row);
      } else if (news.has(id) && rowMatchesView(row)) {
        insertSorted(tbody, row);
        localizeTimes(row);
        inserted++;
      }
    });
    // Keep the page size: the oldest rows beyond it belong to the next page.
    const shown = shownRows(), per = perPage();
    for (let i = shown.length - 1; i >= per; i--) removeKeepingFocus(shown[i]);
    if (inserted) {
      const wrap = t.closest('.scroll');
      if (wrap) wrap.hidden = false;
      const empty = wrap && wrap.parentElement.querySelector('p.empty');
      if (empty) empty.remove();
    }
    if (removed) addToTotal(-removed);
    rollup();
  }

  // The count line ("Jobs 1–50 of 2015") and, on a later page, "N new jobs — show".
  let newJobs = 0;
  function addToTotal(n) {
    const p = document.getElementById('jobcount');
    if (!p || !p.dataset.total) return;
    const total = Math.max(0, Number(p.dataset.total) + n);
    p.dataset.total = String(total);
    const first = Number(p.dataset.first), per = Number(p.dataset.perpage);
    const filter = table() ? table().dataset.state : '';
    const inState = (filter ? ' in state ' + filter : '') + (p.dataset.suffix || '');
    if (first > total && total > 0) return;  // past the end: the server's line with its link stays
    p.textContent = total === 0 ? 'No ' + p.dataset.noun + inState
      : 'Jobs ' + first + '–' + Math.min(total, first + per - 1) + ' of ' + total + inState;
  }
  // Whether new jobs get rows as they come: not under a search, a type filter or another sort
  // (the server decides which jobs match and where they go; the page offers to reload instead).
  function liveInsert(t) { return t.dataset.liveInsert !== '0'; }
  // Whether a job of `owner` belongs in the table: an admin's stream carries every user's jobs,
  // and the table shows one user's (theirs unless they chose another) or everyone's ("*").
  function ownerShown(t, owner) {
    const view = t.dataset.owner;
    return !view || view === '*' || !owner || owner === view;
  }
  function countNewJob(state) {
    const t = table();
    if (!t || page !== 'home') return;
    if (t.dataset.array) return;  // an array's jobs were all made with it: a new job is not one
    const filter = t.dataset.state;
    if (filter && filter !== state) return;
    if (liveInsert(t)) {
      addToTotal(1);
      if (t.dataset.pagenum === '1') return;
    }
    newJobs++;
    const note = document.getElementById('newjobs');
    if (!note) return;
    note.hidden = false;
    note.firstElementChild.textContent = newJobs + (newJobs === 1 ? ' new job' : ' new jobs') + ' — show';
  }
  function announce(text) {
    const a = document.getElementById('announce');
    if (a) a.textContent = text;
  }
  function refreshDetail() {
    later('detail', function () {
      fetch('/jobs/' + jobId + '/fields', { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) return;
          const t = document.createElement('template');
          t.innerHTML = html.trim();
          const fresh = t.content.firstElementChild;
          const old = document.getElementById('jobdetail');
          if (fresh && old) replaceKeepingFocus(old, fresh);
        })
        .catch(function () {});
    }, 50);
  }
  function rollup() {
    const p = document.getElementById('rollup');
    const t = document.querySelector('#children');
    if (!p || !t || t.dataset.complete !== '1') return;
    const counts = {};
    let total = 0;
    t.querySelectorAll('tbody tr[data-job]').forEach(function (tr) {
      total++;
      const s = tr.dataset.state;
      counts[s] = (counts[s] || 0) + 1;
    });
    let text = total + (total === 1 ? ' child' : ' children');
    STATES.forEach(function (s) { if (counts[s]) text += ', ' + counts[s] + ' ' + s; });
    p.textContent = text;
    p.dataset.total = String(total);
  }

  // The first job's page of an array: the array's roll-up (#array-rollup) is read again from
  // GET /api/jobs/<id> (its array_jobs) after events of jobs that may be the array's (an ID not
  // below the array's), at most once a second.
  const arrayRollup = page === 'job' ? document.getElementById('array-rollup') : null;
  function refreshArrayRollup(id) {
    if (!arrayRollup || !(Number(id) >= Number(arrayRollup.dataset.array))) return;
    later('array', function () {
      fetch('/api/jobs/' + jobId, { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          const a = j && j.array_jobs;
          if (!a || typeof a.total !== 'number') return;
          let text = a.total + (a.total === 1 ? ' job' : ' jobs');
          STATES.forEach(function (s) { if (a[s]) text += ', ' + a[s] + ' ' + s; });
          if (arrayRollup.textContent !== text) arrayRollup.textContent = text;
          arrayRollup.dataset.total = String(a.total);
        })
        .catch(function () {});
    }, 1000);
  }

  // A job new to the page: one whose ID is above the last ID handed out when the page was read
  // (data-maxid), met for the first time. Its first event may be a transition to ready, waiting
  // (dependencies), held or cancelled (a dependency had failed); a held or waiting job that existed
  // before becomes ready later, and is not new. Without data-maxid: a first transition to ready.
  const maxId = body.dataset.maxid ? Number(body.dataset.maxid) : null;
  const metJobs = new Set();
  function isNewJob(d) {
    if (maxId === null || isNaN(maxId)) return d.type === 'transition' && d.state === 'ready' && !(d.attempt > 1);
    const id = String(d.id);
    if (!(Number(d.id) > maxId) || metJobs.has(id)) return false;
    metJobs.add(id);
    return true;
  }
  // The job page's dependency graph: the badges of the jobs it shows follow their events.
  function graphBadges(id, state) {
    if (page !== 'job' || !state) return;
    document.querySelectorAll('#depgraph [data-node="' + id + '"] .state').forEach(function (b) {
      b.textContent = state;
      b.className = 'state s-' + state;
    });
  }

  function onJobEvent(d) {
    const id = String(d.id);
    refreshArrayRollup(id);
    if (d.type === 'deleted') {
      const old = rowOf(id);
      if (old) { removeKeepingFocus(old); rollup(); addToTotal(-1); }
      stale.delete(id);
      fresh.delete(id);
      return;
    }
    if (/^\d+$/.test(id)) graphBadges(id, d.state);
    if (page === 'job' && id === jobId) {
      const detail = document.getElementById('jobdetail');
      // A new state is announced (aria-live), not each progress message.
      if (detail && d.state && detail.dataset.state !== d.state) announce('Job ' + jobId + ' is ' + d.state + '.');
      setBadge(document.getElementById('jobstatus'), d.state, d.progress);
      if (detail) detail.dataset.state = d.state;
      const li = document.createElement('li');
      const time = d.time ? timeElement(Number(d.time)) : document.createElement('time');
      const type = document.createElement('span');
      type.className = 'etype';
      type.textContent = d.type || '';
      const badge = document.createElement('span');
      badge.className = 'state s-' + d.state;
      badge.textContent = d.state || '';
      const msg = document.createElement('span');
      msg.className = 'emsg';
      msg.textContent = d.progress || '';
      li.append(time, ' ', type, ' ', badge, ' ', msg);
      const tl = document.getElementById('timeline');
      if (tl) tl.appendChild(li);
      refreshDetail();
      pollLog();
      // The last lines of output may arrive just after the final transition.
      if (TERMINAL.has(d.state)) { setTimeout(pollLog, 1000); setTimeout(pollLog, 3000); }
      return;
    }
    const row = rowOf(id);
    if (row) {
      row.dataset.state = d.state;
      setBadge(row.querySelector('.c-state'), d.state, undefined);
      setBadge(row.querySelector('.c-progress'), undefined, d.progress);
      rollup();
      markStale(id);
      return;
    }
    if (fresh.has(id)) return;  // its row is fetched after this event
    // Its row is being fetched, maybe from before this event: fetch it again after that.
    if (fetchingNew.has(id)) { markStale(id); return; }
    // A job this page does not show yet: a new one (isNewJob). On the home page it counts; on its
    // first page, and on its parent's page, it may get a row.
    if (!isNewJob(d)) return;
    const shown = table();
    if (shown && page === 'home' && !ownerShown(shown, d.owner)) return;  // another user's job
    countNewJob(d.state);
    const t = table();
    if (!t || (page === 'home' && (t.dataset.pagenum !== '1' || !liveInsert(t)))) return;
    fresh.add(id);
    scheduleFlush();
  }

  // The job page's log tail: polled while the job runs, once more when it ends.
  let logBusy = false, logTimer = null;
  function pollLog() {
    if (page !== 'job' || logBusy) return;
    logBusy = true;
    fetch('/api/jobs/' + jobId + '/log?lines=200', { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (!j) return;
        const pre = document.getElementById('log');
        const box = document.getElementById('logbox') || pre;
        const text = (j.lines || []).join('\n');
        if (pre && pre.textContent !== text) {
          const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
          pre.textContent = text;
          if (atEnd) box.scrollTop = box.scrollHeight;
        }
      })
      .catch(function () {})
      .finally(function () { logBusy = false; });
  }
  if (page === 'job') {
    pollLog();
    logTimer = setInterval(function () {
      const detail = document.getElementById('jobdetail');
      if (detail && !TERMINAL.has(detail.dataset.state)) pollLog();
    }, 1000);
  }

  function refreshAll() {
    document.querySelectorAll('#jobs tbody tr[data-job], #children tbody tr[data-job]').forEach(function (tr) {
      markStale(tr.dataset.job);
    });
    if (page === 'job') { refreshDetail(); pollLog(); refreshArrayRollup(jobId); }
  }

  // Subscribe from where the page's data was read (data-since), so a change between rendering
  // and subscribing is not missed; replays are recognised by their event id.
  let es = null, backoff = 1000, hadError = false, lastId = body.dataset.since || '';
  const seenIds = new Set();
  // One event stream per browser, not per tab: over HTTP/1.1 a browser opens at most 6
  // connections to one host and each stream holds one, so a 7th open tab would never load. The tab
  // that holds the Web Lock 'descprod-events' keeps the stream and relays what it gets to the other
  // tabs over a BroadcastChannel; when it goes, the next tab takes the lock and opens the stream
  // from the last event it saw (since=). Without Web Locks or BroadcastChannel every tab has its own.
  let leader = false, channel = null, liveNow = 'on';
  function relay(msg) { if (leader && channel) channel.postMessage(msg); }
  function gotJob(id, data) {
    if (id) {
      if (seenIds.has(id)) return;
      seenIds.add(id);
      if (seenIds.size > 5000) seenIds.clear();
      lastId = id;
    }
    let d;
    try { d = JSON.parse(data); } catch (e) { return; }
    onJobEvent(d);
    notifyEnded(d);
  }
  function gotService(data) {
    let d;
    try { d = JSON.parse(data); } catch (e) { return; }
    if (d.redis === 'down') showLive('outage');
    else if (d.redis === 'up') { showLive('on'); refreshAll(); }
  }
  function showLive(status) { liveNow = status; setLive(status); }
  function gotOpen() {
    showLive('on');
    backoff = 1000;
    if (hadError) { hadError = false; refreshAll(); }
  }
  function gotError() { hadError = true; showLive('reconnecting'); }
  function connect() {
    es = new EventSource('/api/events' + (lastId ? '?since=' + encodeURIComponent(lastId) : ''));
    es.addEventListener('open', function () { gotOpen(); relay({ type: 'open' }); });
    es.addEventListener('job', function (m) {
      gotJob(m.lastEventId, m.data);
      relay({ type: 'job', id: m.lastEventId, data: m.data });
    });
    // The gateway lost Redis (no events can come) or has it back (fetch what may have changed).
    es.addEventListener('service', function (m) { gotService(m.data); relay({ type: 'service', data: m.data }); });
    es.addEventListener('error', function () {
      gotError();
      relay({ type: 'error' });
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 30000);
      }
    });
  }
  function fromLeader(m) {
    if (!m || typeof m !== 'object') return;
    if (m.type === 'job') gotJob(m.id, m.data);
    else if (m.type === 'service') gotService(m.data);
    else if (m.type === 'open') gotOpen();
    else if (m.type === 'error') gotError();
    else if (m.type === 'live' && typeof m.status === 'string') showLive(m.status);
  }
  if ('locks' in navigator && 'BroadcastChannel' in window) {
    channel = new BroadcastChannel('descprod-events');
    channel.onmessage = function (e) {
      if (!leader) fromLeader(e.data);
      else if (e.data && e.data.type === 'hello') relay({ type: 'live', status: liveNow });
    };
    channel.postMessage({ type: 'hello' });  // the leader answers with the badge's state
    body.dataset.events = 'relayed';
    navigator.locks.request('descprod-events', function () {
      leader = true;
      body.dataset.events = 'stream';  // this tab holds the stream (tests and debugging read it)
      connect();
      return new Promise(function () {});  // held until the page goes
    });
  } else {
    leader = true;
    connect();
  }
  window.addEventListener('pagehide', function () {
    if (es) es.close();
    if (channel) channel.close();
    if (logTimer) clearInterval(logTimer);
  });
})();
)JS";

// Loaded without defer in <head>, before the stylesheet: the theme the viewer chose applies before
// the body is parsed, so a page never paints in the other theme first. Kept tiny.
constexpr std::string_view theme_js = R"JS('use strict';
try {
  var theme = localStorage.getItem('descprod-theme');
  if (theme === 'dark' || theme === 'light') document.documentElement.dataset.theme = theme;
} catch (e) { /* storage refused: the system's theme */ }
)JS";

}  // namespace

std::optional<asset> find_asset(std::string_view name) {
  if (name == "theme.js") return asset{theme_js, "text/javascript; charset=utf-8"};
  if (name == "app.css") return asset{app_css, "text/css; charset=utf-8"};
  if (name == "app.js") return asset{app_js, "text/javascript; charset=utf-8"};
  if (name == "status.js") return asset{status_js(), "text/javascript; charset=utf-8"};
  return std::nullopt;
}

}  // namespace descprod::gateway::web
