// The status plots (docs/web.md, /status): the panel's markup (on /status and /admin) and its
// script, /static/status.js. The script reads GET /api/status (the daemon's samples of the last
// hour, docs/api.md) and draws small SVG plots itself: no plotting library, no build step, no
// inline script or style (the pages' CSP). Each plot is an <svg role="img"> whose aria-label
// sums it up, with its data as a table in a <details> under it; the colours are the theme's
// CSS variables (app.css, --plot-*), so both themes apply. It polls the API once per sampling
// interval, just after the daemon's next sample is due, and not while the page is hidden.
#include <string>
#include <string_view>

#include "gateway/web.hpp"

namespace descprod::gateway::web {

namespace {

constexpr std::string_view status_js_text = R"JS('use strict';
(function () {
  const panel = document.getElementById('status-panel');
  if (!panel) return;
  const SVG = 'http://www.w3.org/2000/svg';
  const WINDOW = 3600, MINUTE = 60, HEIGHT = 160;
  const M = { left: 44, right: 10, top: 10, bottom: 24 };
  // The plots: per-minute bars of counts, or lines of gauges at each sample.
  const PLOTS = [
    { id: 'done', title: 'Jobs done per minute', kind: 'bars', unit: 'jobs',
      series: [{ key: 'done', label: 'done', cls: 'p-done' }] },
    { id: 'failed', title: 'Failures per minute', kind: 'bars', unit: 'jobs',
      series: [{ key: 'failed', label: 'failed, timed out, killed or lost', cls: 'p-failed' }] },
    { id: 'queue', title: 'Ready jobs queued', kind: 'lines',
      series: [{ key: 'queue', label: 'queued', cls: 'p-queue' }] },
    { id: 'running', title: 'Running jobs', kind: 'lines',
      series: [{ key: 'running', label: 'leased to workers', cls: 'p-running' }] },
    { id: 'workers', title: 'Workers and slots', kind: 'lines',
      series: [{ key: 'workers', label: 'workers', cls: 'p-workers' },
               { key: 'slots', label: 'slots', cls: 'p-slots' },
               { key: 'busy', label: 'busy slots', cls: 'p-busy' }] },
  ];
  const plotsBox = panel.querySelector('.plots');
  const updated = document.getElementById('status-updated');
  const problem = document.getElementById('status-problem');
  let last = null, timer = 0, period = 10, stopped = false;

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function h(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function pad(n) { return n < 10 ? '0' + n : '' + n; }
  function clock(t) { const d = new Date(t * 1000); return pad(d.getHours()) + ':' + pad(d.getMinutes()); }
  function clockS(t) { const d = new Date(t * 1000); return clock(t) + ':' + pad(d.getSeconds()); }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  // The figures and tables, made once; each poll redraws the SVG and refills the tables.
  const views = PLOTS.map(function (p) {
    const fig = h('figure', 'plot');
    fig.id = 'plot-' + p.id;
    const cap = h('figcaption', null, p.title);
    cap.id = 'plot-' + p.id + '-title';
    const box = h('div', 'plot-box');
    fig.append(cap, box);
    if (p.series.length > 1) {
      const legend = h('ul', 'legend');
      p.series.forEach(function (s) {
        const li = h('li');
        li.append(h('span', 'swatch ' + s.cls), document.createTextNode(s.label));
        legend.append(li);
      });
      fig.append(legend);
    }
    const details = h('details', 'plot-data');
    details.append(h('summary', null, 'Data: ' + p.title.toLowerCase()));
    const scroll = h('div', 'scroll');
    const table = h('table', 'plot-table');
    const caption = h('caption', 'sr-only', p.title + ', by minute, newest first');
    const thead = h('thead');
    const tr = h('tr');
    [p.kind === 'bars' ? 'Minute' : 'Minute (last sample)'].concat(p.series.map(function (s) { return s.label; }))
      .forEach(function (t) { const th = h('th', null, t); th.scope = 'col'; tr.append(th); });
    thead.append(tr);
    const tbody = h('tbody');
    table.append(caption, thead, tbody);
    scroll.append(table);
    details.append(scroll);
    fig.append(details);
    plotsBox.append(fig);
    return { p: p, box: box, tbody: tbody };
  });

  // Samples → per-minute rows: counts summed, gauges as their last sample in the minute.
  function minutes(d, start) {
    const s = d.samples, rows = new Map();
    for (let i = 0; i < s.t.length; i++) {
      const m = Math.floor((s.t[i] - start) / MINUTE);
      if (m < 0 || m >= WINDOW / MINUTE) continue;
      let r = rows.get(m);
      if (!r) { r = { m: m, n: 0 }; rows.set(m, r); }
      r.n++;
      for (const k of ['done', 'failed', 'cancelled']) r[k] = (r[k] || 0) + (s[k][i] || 0);
      for (const k of ['queue', 'running', 'workers', 'slots', 'busy']) r[k] = s[k][i];
    }
    return rows;
  }

  function summary(p, d, rows, lastRow) {
    const s = d.samples, n = s.t.length;
    if (!n) return p.title + ', the last hour: no samples yet.';
    if (p.kind === 'bars') {
      const k = p.series[0].key;
      let total = 0, most = 0;
      rows.forEach(function (r) { total += r[k]; most = Math.max(most, r[k]); });
      const now = lastRow ? lastRow[k] : 0;
      return p.title + ', the last hour: ' + plural(total, 'job', 'jobs') + ' in all, at most ' + most +
        ' in one minute, ' + now + ' in the current minute.';
    }
    return p.title + ', the last hour: ' + p.series.map(function (ser) {
      const v = s[ser.key];
      let hi = -Infinity, lo = Infinity;
      for (const x of v) { hi = Math.max(hi, x); lo = Math.min(lo, x); }
      return ser.label + ' now ' + v[n - 1] + ' (lowest ' + lo + ', highest ' + hi + ')';
    }).join('; ') + '.';
  }

  function draw(view, d, start, end, rows) {
    const p = view.p, s = d.samples;
    const width = Math.max(260, Math.floor(view.box.clientWidth || 600));
    const iw = width - M.left - M.right, ih = HEIGHT - M.top - M.bottom;
    let top = 0;
    if (p.kind === 'bars') rows.forEach(function (r) { top = Math.max(top, r[p.series[0].key]); });
    else p.series.forEach(function (ser) { for (const v of s[ser.key]) top = Math.max(top, v); });
    top = niceMax(top);
    const x = function (t) { return M.left + (t - start) / (end - start) * iw; };
    const y = function (v) { return M.top + ih - v / top * ih; };
    const keys = Array.from(rows.keys()).sort(function (a, b) { return b - a; });
    const lastRow = keys.length && keys[0] === WINDOW / MINUTE - 1 ? rows.get(keys[0]) : null;
    const svg = el('svg', { viewBox: '0 0 ' + width + ' ' + HEIGHT, width: width, height: HEIGHT,
      role: 'img', 'aria-label': summary(p, d, rows, lastRow), focusable: 'false' });
    // Grid and axes: 0, half (when a whole number: every figure is a count) and the top; the
    // hour's start, middle and end.
    (Number.isInteger(top / 2) ? [0, top / 2, top] : [0, top]).forEach(function (v) {
      svg.append(el('line', { class: 'grid', x1: M.left, x2: width - M.right, y1: y(v), y2: y(v) }));
      svg.append(el('text', { class: 'axis', x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, String(v)));
    });
    [[start, 'start'], [(start + end) / 2, 'middle'], [end, 'end']].forEach(function (a) {
      svg.append(el('text', { class: 'axis', x: x(a[0]), y: HEIGHT - 6, 'text-anchor': a[1] }, clock(a[0])));
    });
    if (p.kind === 'bars') {
      const k = p.series[0].key, bw = iw / (WINDOW / MINUTE);
      rows.forEach(function (r) {
        if (!r[k]) return;
        svg.append(el('rect', { class: 'bar ' + p.series[0].cls, x: M.left + r.m * bw + 1, y: y(r[k]),
          width: Math.max(1, bw - 2), height: Math.max(1, ih - (y(r[k]) - M.top)) }));
      });
    } else {
      // A gap of more than three sampling intervals (the daemon was away) breaks the line.
      const gap = 3 * Math.max(1, d.period_s);
      p.series.forEach(function (ser) {
        let path = '';
        for (let i = 0; i < s.t.length; i++) {
          if (s.t[i] < start) continue;
          const join = i > 0 && s.t[i] - s.t[i - 1] <= gap && path !== '';
          path += (join ? 'L' : 'M') + x(s.t[i]).toFixed(1) + ' ' + y(s[ser.key][i]).toFixed(1);
        }
        if (!path) return;
        svg.append(el('path', { class: 'line ' + ser.cls, d: path }));
        // The newest value as a dot, so that a short stretch still shows.
        const n = s.t.length - 1;
        svg.append(el('circle', { class: 'dot ' + ser.cls, cx: x(s.t[n]).toFixed(1), cy: y(s[ser.key][n]).toFixed(1), r: 3 }));
      });
    }
    view.box.replaceChildren(svg);
    // The table: one row per minute with samples, newest first.
    const trs = keys.map(function (m) {
      const r = rows.get(m);
      const tr = h('tr');
      const th = h('th', null, clock(start + m * MINUTE));
      th.scope = 'row';
      tr.append(th);
      p.series.forEach(function (ser) { tr.append(h('td', null, String(r[ser.key]))); });
      return tr;
    });
    view.tbody.replaceChildren.apply(view.tbody, trs);
  }

  function render(d) {
    last = d;
    // The hour up to the end of the current minute, on whole minutes.
    const end = Math.ceil(d.now / MINUTE) * MINUTE, start = end - WINDOW;
    const rows = minutes(d, start);
    views.forEach(function (v) { draw(v, d, start, end, rows); });
    const c = d.current;
    const set = function (id, v) { const e = document.getElementById(id); if (e) e.textContent = v; };
    set('now-queue', c ? String(c.queue) : '–');
    set('now-running', c ? String(c.running) : '–');
    set('now-workers', c ? String(c.workers) : '–');
    set('now-slots', c ? c.slots + ' (' + c.busy + ' busy)' : '–');
    set('now-done', String(d.totals.done));
    set('now-failed', String(d.totals.failed));
    updated.textContent = 'Updated ' + clockS(d.now) + '; the daemon takes a sample every ' +
      (d.period_s === 1 ? 'second' : d.period_s + ' seconds') + '.';
    let why = '';
    if (!c) why = 'The daemon has not reported yet.';
    else if (d.now - c.time > Math.max(30, 3 * d.period_s))
      why = 'The daemon has not reported for ' + Math.round(d.now - c.time) + ' s: is it running?';
    say(why);
  }

  function say(text) {
    if (problem.textContent !== text) problem.textContent = text;
    problem.hidden = text === '';
  }

  function schedule(ms) {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(poll, Math.max(0, ms));
  }

  function poll() {
    if (document.hidden) return;  // visibilitychange polls again
    fetch('/api/status', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (r.status === 401) { stopped = true; throw new Error('your session has ended: log in again'); }
        if (!r.ok) throw new Error('the service answered ' + r.status);
        return r.json();
      })
      .then(function (d) {
        render(d);
        period = Math.min(60, Math.max(1, d.period_s || 10));
        // Just after the daemon's next sample is due (its last one plus the interval).
        const t = d.samples.t, lastT = t.length ? t[t.length - 1] : d.now;
        let wait = (lastT + period + 0.3 - d.now) * 1000;
        if (!(wait > 200) || wait > period * 1000) wait = period * 1000;
        schedule(wait);
      })
      .catch(function (e) {
        say('The figures could not be read (' + e.message + ').' + (stopped ? '' : ' Trying again.'));
        schedule(Math.min(period, 10) * 1000);
      });
  }

  document.addEventListener('visibilitychange', function () { if (!document.hidden) schedule(0); });
  let resizing = 0;
  window.addEventListener('resize', function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () { if (last) render(last); }, 150);
  });
  window.addEventListener('pagehide', function () { stopped = true; clearTimeout(timer); });
  poll();
})();
)JS";

}  // namespace

std::string_view status_js() { return status_js_text; }

std::string status_panel(std::string_view heading) {
  auto now = [](std::string_view id, std::string_view label) {
    return "<div><dt>" + std::string(label) + "</dt><dd id=\"" + std::string(id) + "\">–</dd></div>";
  };
  return "<section class=\"card status-panel\" id=\"status-panel\" aria-labelledby=\"status-heading\">"
         "<h2 id=\"status-heading\">" +
         html_escape(heading) + "</h2><dl class=\"stats\">" + now("now-queue", "Ready jobs queued") +
         now("now-running", "Running jobs") + now("now-workers", "Workers") + now("now-slots", "Slots") +
         now("now-done", "Jobs done in the last hour") + now("now-failed", "Failures in the last hour") +
         "</dl><p class=\"count\" id=\"status-updated\">Loading the figures…</p>"
         "<p class=\"flash error\" id=\"status-problem\" role=\"status\" hidden></p>"
         "<noscript><p>The plots are drawn by the page's script; the figures are also at "
         "<a href=\"/api/status\">/api/status</a>.</p></noscript>"
         "<div class=\"plots\"></div></section>"
         "<script src=\"/static/status.js\" defer></script>";
}

std::string status_page(const page_user& user) {
  std::string body = "<h1 class=\"page-title\">Service status</h1>" + status_panel("The last hour");
  return layout("Status", "status", &user, flash{}, body);
}

}  // namespace descprod::gateway::web
