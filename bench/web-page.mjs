// bench/web-page.mjs: the jobs page with 100,000 jobs (issue 17's measured list, first part).
// Starts the real service (tests/web/service.mjs) with its worker stopped, so jobs stay queued;
// user "ann" gets N jobs by bulk submits; then, in headless Debian chromium (playwright-core from
// tests/web/node_modules), prints: the page's first contentful paint and load time, the time to
// show a filter's result (a search, and a state filter), and the longest main-thread task while a
// second user submits 10 bulks of 1,000. Figures only; nothing asserted.
//   cd tests/web && node ../../bench/web-page.mjs [JOBS]      (DESCPROD_BIN_DIR as for the suite)
import { createRequire } from 'node:module';
import path from 'node:path';
import { Service, launchChromium, httpJson, SOURCE_DIR } from '../tests/web/service.mjs';

const require = createRequire(path.join(SOURCE_DIR, 'tests', 'web', 'package.json'));
const { chromium } = require('playwright-core');
const JOBS = Number(process.argv[2] || 100000);
const CHUNK = 5000;

async function bulk(svc, who, n, tag) {
  const jobs = Array.from({ length: n }, (_, i) => ({ jobtype: 'quick', config: String(i % 1000000) }));
  const r = await httpJson(svc.port, 'POST', '/api/jobs/bulk', { jobs }, who.auth);
  if (r.status !== 201) throw new Error(`bulk ${tag}: ${r.status} ${r.text.slice(0, 200)}`);
}

// Navigates and returns [ms to the load event, first contentful paint in ms].
async function timedGoto(page, url) {
  const t0 = performance.now();
  await page.goto(url, { waitUntil: 'load' });
  const loaded = performance.now() - t0;
  const fcp = await page.evaluate(() => {
    const e = performance.getEntriesByName('first-contentful-paint')[0];
    return e ? e.startTime : NaN;
  });
  return [loaded, fcp];
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const svc = new Service();
let browser;
try {
  await svc.start();
  await svc.procs.worker.stop();  // the jobs stay ready: the page shows a queue of JOBS
  const ann = await svc.approvedUser('ann'), bob = await svc.approvedUser('bob');
  const t0 = performance.now();
  for (let done = 0; done < JOBS; done += CHUNK) await bulk(svc, ann, Math.min(CHUNK, JOBS - done), 'ann');
  process.stdout.write(`created ${JOBS} jobs for ann in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

  browser = await launchChromium(chromium);
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  await page.goto(svc.url('/login'));
  await page.fill('input[name=username]', ann.name);
  await page.fill('input[name=password]', ann.password);
  await Promise.all([page.waitForNavigation(), page.click('form[action="/login"] button[type=submit]')]);

  const rows = { first: [], search: [], state: [], sorted: [] };
  for (let i = 0; i < 5; i++) {
    rows.first.push(await timedGoto(page, svc.url('/')));
    rows.search.push(await timedGoto(page, svc.url('/?q=4242')));
    rows.state.push(await timedGoto(page, svc.url('/?state=failed')));
    rows.sorted.push(await timedGoto(page, svc.url('/?sort=-created')));
  }
  // (Chromium gives no first-contentful-paint entry for some reloads of a page it has painted: NaN.)
  const line = (what, xs) => process.stdout.write(
    `${what}: load ${median(xs.map((x) => x[0])).toFixed(0)} ms, first contentful paint ${median(xs.map((x) => x[1])).toFixed(0)} ms (median of 5)\n`);
  line(`jobs page, ${JOBS} jobs`, rows.first);
  line(`search q=4242 (a scan of ${JOBS})`, rows.search);
  line(`state=failed (a scan, no match)`, rows.state);
  line(`sort=-created (every job read and sorted)`, rows.sorted);

  // A second user's 10 bulks of 1,000 while ann's page is open: the longest main-thread task.
  await page.goto(svc.url('/'));
  await page.evaluate(() => {
    window.__longest = 0;
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
      .observe({ type: 'longtask', buffered: false });
  });
  const b0 = performance.now();
  for (let i = 0; i < 10; i++) await bulk(svc, bob, 1000, 'bob');
  await new Promise((r) => setTimeout(r, 1000));
  const longest = await page.evaluate(() => window.__longest);
  process.stdout.write(`bob's 10 bulks of 1,000 in ${((performance.now() - b0) / 1000).toFixed(1)} s while ann's page is open: longest main-thread task ${longest.toFixed(0)} ms\n`);
} finally {
  if (browser) await browser.close();
  await svc.stop();
}
