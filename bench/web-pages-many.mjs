// bench/web-pages-many.mjs: many open jobs pages during a stream of job transitions (issue 17's
// measured list, second part). Starts the real service (tests/web/service.mjs: redis-server, the
// daemon, the gateway, one worker with one slot), makes USERS users, and runs the same workload
// twice: JOBS `quick` jobs (each ready → dispatched → running → done: 4 transitions), submitted
// by the users in bulks of 50 while the worker runs them,
//   1. with no page open (the baseline), and
//   2. with PAGES headless chromium pages open on the users' jobs pages (PAGES / USERS each, one
//      browser context each).
// Prints, for run 2: the p50/p99/max time from a transition (its time in the event stream, Redis
// TIME) to an open page showing the row in that state (a MutationObserver in every page), and
// how many such changes were seen; for both runs: the gateway's CPU time and its RSS at the end;
// and the gateway CPU per open page = (CPU with pages − CPU without) / PAGES. Figures only;
// nothing asserted.
// With STREAMS, that many raw event-stream clients (no browser) listen too, and their own p50/p99
// (transition time in the event → its arrival) is printed: the gateway's part alone.
//   cd tests/web && node ../../bench/web-pages-many.mjs [PAGES=200] [JOBS=5000] [USERS=20] [STREAMS=0]
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Service, launchChromium, httpJson, sleep, SOURCE_DIR } from '../tests/web/service.mjs';

const require = createRequire(path.join(SOURCE_DIR, 'tests', 'web', 'package.json'));
const { chromium } = require('playwright-core');
const PAGES = Number(process.argv[2] || 200);
const JOBS = Number(process.argv[3] || 5000);
const USERS = Number(process.argv[4] || 20);
// More listeners that are not browsers: raw event-stream clients (node http), so the gateway's own
// figures can be had at a count of listeners a 2-core machine cannot run as chromium pages.
const STREAMS = Number(process.argv[5] || 0);
const BULK = 50;
const TICK = 100;  // USER_HZ: /proc's clock ticks a second on Linux

function procStat(pid) {
  // utime and stime (fields 14 and 15) in ticks, after the command name in parentheses.
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
}
function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
const pct = (xs, p) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] : NaN);

// The workload: every user submits its share in bulks, round robin, then waits for all to end.
async function workload(svc, users, tag) {
  const per = Math.ceil(JOBS / users.length);
  const t0 = performance.now();
  for (let sent = 0; sent < per; sent += BULK) {
    for (const u of users) {
      const n = Math.min(BULK, per - sent);
      const jobs = Array.from({ length: n }, (_, i) => ({ jobtype: 'quick', config: String(sent + i) }));
      const r = await httpJson(svc.port, 'POST', '/api/jobs/bulk', { jobs }, u.auth);
      if (r.status !== 201) throw new Error(`bulk ${tag}: ${r.status} ${r.text.slice(0, 200)}`);
    }
  }
  const deadline = Date.now() + 600000;
  for (;;) {
    const counts = await svc.redis.cmd('HGETALL', 'descprod:stats:jobs_by_state');
    const c = {};
    for (let i = 0; i + 1 < counts.length; i += 2) c[counts[i]] = Number(counts[i + 1]);
    if (!(c.ready || c.dispatched || c.running)) break;
    if (Date.now() > deadline) throw new Error(`${tag}: jobs still going after 600 s`);
    await sleep(200);
  }
  return (performance.now() - t0) / 1000;
}

// (id:state) → the transition's time in ms since the epoch, from the global event stream.
async function transitionTimes(svc) {
  const times = new Map();
  let start = '-';
  for (;;) {
    const batch = await svc.redis.cmd('XRANGE', 'descprod:events', start, '+', 'COUNT', '10000');
    if (!batch.length) break;
    for (const [sid, fields] of batch) {
      const f = {};
      for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]] = fields[i + 1];
      if (f.type === 'transition') {
        const key = `${f.id}:${f.state}`;
        if (!times.has(key)) times.set(key, Number(f.time) * 1000);
      }
      start = '(' + sid;
    }
    if (batch.length < 10000) break;
  }
  return times;
}

// The suite's service, allowing this bench's USERS registrations from one address.
class BenchService extends Service {
  writeConfig() {
    super.writeConfig();
    const text = fs.readFileSync(this.config, 'utf8');
    fs.writeFileSync(this.config, text.replace('gateway:\n', `gateway:\n  register_per_address: ${USERS + 10}\n`));
  }
}

// A raw event-stream client: records, for each transition event, its arrival less its time.
function rawStream(port, auth, lat) {
  const req = http.get({ host: '127.0.0.1', port, path: '/api/events', headers: auth }, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (chunk) => {
      const now = Date.now();
      buf += chunk;
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const line = block.split('\n').find((l) => l.startsWith('data: '));
        if (!line) continue;
        try {
          const d = JSON.parse(line.slice(6));
          if (d.type === 'transition' && d.state !== 'ready' && d.time) lat.push(now - d.time * 1000);
        } catch (e) { /* not JSON: not a job event */ }
      }
    });
  });
  req.on('error', () => {});
  return req;
}

const svc = new BenchService();
let browser;
try {
  await svc.start();
  const gw = svc.procs.gateway.pid;
  const users = [];
  for (let i = 0; i < USERS; i++) users.push(await svc.approvedUser(`u${i}`));

  // 1. No page open.
  let cpu0 = procStat(gw);
  const base_s = await workload(svc, users, 'baseline');
  const baseCpu = procStat(gw) - cpu0;
  const baseRss = rssMiB(gw);
  process.stdout.write(`no page open: ${JOBS} jobs (${JOBS * 4} transitions) in ${base_s.toFixed(1)} s; gateway CPU ${baseCpu.toFixed(2)} s, RSS ${baseRss.toFixed(0)} MiB\n`);
  await svc.redis.cmd('XTRIM', 'descprod:events', 'MAXLEN', '0');

  // 2. PAGES pages open, PAGES / USERS per user.
  browser = await launchChromium(chromium, ['--disable-renderer-backgrounding', '--disable-background-timer-throttling',
    '--disable-backgrounding-occluded-windows']);
  const pages = [];
  const t1 = performance.now();
  // One browser context a page (a browser allows 6 connections to one host per profile, and each
  // open page holds one for its event stream: a 7th page of one context would wait for ever).
  for (let k = 0; k < PAGES; k++) {
    const u = users[k % USERS];
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const p = await ctx.newPage();
    await p.goto(svc.url('/login'));
    await p.fill('input[name=username]', u.name);
    await p.fill('input[name=password]', u.password);
    await Promise.all([p.waitForNavigation(), p.click('form button[type=submit]')]);
    await p.goto(svc.url('/'), { waitUntil: 'load' });
    await p.evaluate(() => {
      window.__seen = new Map();
      const look = () => {
        const now = performance.timeOrigin + performance.now();
        for (const tr of document.querySelectorAll('#jobs tr[data-job]')) {
          const key = `${tr.dataset.job}:${tr.dataset.state}`;
          if (!window.__seen.has(key)) window.__seen.set(key, now);
        }
      };
      new MutationObserver(look).observe(document.querySelector('#jobs'),
        { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
    });
    pages.push(p);
  }
  const rawLat = [], raws = [];
  for (let k = 0; k < STREAMS; k++) raws.push(rawStream(svc.port, users[k % USERS].auth, rawLat));
  process.stdout.write(`${pages.length} pages open (${USERS} users) and ${STREAMS} raw streams in ${((performance.now() - t1) / 1000).toFixed(1)} s; gateway RSS ${rssMiB(gw).toFixed(0)} MiB\n`);
  await sleep(2000);
  cpu0 = procStat(gw);
  const run_s = await workload(svc, users, 'with pages');
  await sleep(2000);  // the pages catch up with the last transitions
  const runCpu = procStat(gw) - cpu0;
  const runRss = rssMiB(gw);
  for (const r of raws) r.destroy();

  const times = await transitionTimes(svc);
  const lat = [];
  for (const p of pages) {
    const seen = await p.evaluate(() => Array.from(window.__seen.entries()));
    for (const [key, t] of seen) {
      const at = times.get(key);
      if (at !== undefined && !key.endsWith(':ready')) lat.push(t - at);
    }
  }
  lat.sort((a, b) => a - b);
  process.stdout.write(`${pages.length} pages open: ${JOBS} jobs in ${run_s.toFixed(1)} s (${(run_s / base_s).toFixed(2)}x the baseline's time); gateway CPU ${runCpu.toFixed(2)} s, RSS ${runRss.toFixed(0)} MiB\n`);
  process.stdout.write(`transition → page shows it: p50 ${pct(lat, 50).toFixed(0)} ms, p99 ${pct(lat, 99).toFixed(0)} ms, max ${lat.length ? lat[lat.length - 1].toFixed(0) : 'NaN'} ms over ${lat.length} row changes seen\n`);
  if (STREAMS) {
    rawLat.sort((a, b) => a - b);
    process.stdout.write(`raw streams: transition → arrival p50 ${pct(rawLat, 50).toFixed(0)} ms, p99 ${pct(rawLat, 99).toFixed(0)} ms, max ${rawLat.length ? rawLat[rawLat.length - 1].toFixed(0) : 'NaN'} ms over ${rawLat.length} deliveries\n`);
  }
  process.stdout.write(`gateway CPU per open page: ${(((runCpu - baseCpu) / Math.max(1, pages.length + STREAMS)) * 1000).toFixed(1)} ms over the run (${(((runCpu - baseCpu) / Math.max(1, pages.length + STREAMS)) / run_s * 100).toFixed(3)} % of a core; pages and raw streams together)\n`);
} finally {
  if (browser) await browser.close();
  await svc.stop();
}
