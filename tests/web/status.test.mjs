// Browser test of the status plots (issue 17, item 7): the /status page and the same plots on
// /admin, drawn by /static/status.js from GET /api/status, against the real service (service.mjs)
// with the daemon sampling every second. Jobs run while the page is open: the plots must show
// the jobs done and the queue and running figures change without a reload; the page is checked by
// axe-core in both themes and photographed (light and dark) into DESCPROD_SCREENSHOT_DIR, the
// last ones copied to docs/screenshots/status.png and status-dark.png.
//
// Run: node --test tests/web/status.test.mjs (ctest -L web does, with the paths set).
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Service, launchChromium, stepTracker, waitFor, httpJson, SOURCE_DIR } from './service.mjs';

const SHOTS = process.env.DESCPROD_SCREENSHOT_DIR || path.join(SOURCE_DIR, 'build', 'web-screenshots');
const STEP_MS = 30000;
const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

// The suite's service with the daemon sampling every second and a worker with two slots.
class StatusService extends Service {
  writeConfig() {
    super.writeConfig();
    let text = fs.readFileSync(this.config, 'utf8');
    const daemon = '  worker_auth: open';
    assert.ok(text.includes(daemon + ' '), 'the daemon section of service.mjs changed');
    text = text.replace(daemon, '  stats_interval_s: 1\n' + daemon).replace('  slots: 1\n', '  slots: 2\n');
    fs.writeFileSync(this.config, text);
    // An application that fails (exit status 3), for the failures plot.
    fs.appendFileSync(path.join(this.dir, 'apps.yaml'),
      '  - name: fail\n    help: "Exits with status 3."\n    pattern: "^[0-9]{1,6}$"\n' +
      '    command: ["/bin/sh", "-c", "exit 3"]\n    args: []\n');
  }
}

let svc;
let browser;
const steps = stepTracker();
const adminName = 'root', adminPass = 'root-password-1';
let adminToken = '';

async function newPage(colorScheme = 'light') {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US', colorScheme });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.requests = [];
  page.on('request', (r) => page.requests.push(new URL(r.url()).pathname));
  return page;
}

async function login(page, name, password) {
  await page.goto(svc.url('/login'));
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForNavigation(), page.click('form[action="/login"] button[type=submit]')]);
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

// What the page shows: each plot's label, the number of bars and line paths, the current figures.
async function shown(page) {
  return page.evaluate(() => {
    const plot = (id) => {
      const svg = document.querySelector(`#plot-${id} svg[role=img]`);
      return svg ? {
        label: svg.getAttribute('aria-label'),
        bars: svg.querySelectorAll('rect.bar').length,
        lines: svg.querySelectorAll('path.line').length,
        rows: document.querySelectorAll(`#plot-${id} tbody tr`).length,
      } : null;
    };
    const text = (id) => (document.getElementById(id) || {}).textContent;
    return {
      done: plot('done'), failed: plot('failed'), queue: plot('queue'), running: plot('running'), workers: plot('workers'),
      now: { queue: text('now-queue'), running: text('now-running'), workers: text('now-workers'), slots: text('now-slots'),
        done: text('now-done'), failed: text('now-failed') },
      problem: document.getElementById('status-problem').hidden ? '' : text('status-problem'),
    };
  });
}

async function submit(jobtype, config) {
  const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype, config, howfig: '' }, { Authorization: `Bearer ${adminToken}` });
  assert.equal(r.status, 201, r.text);
  return r.json.id;
}

async function jobState(id) {
  const r = await httpJson(svc.port, 'GET', `/api/jobs/${id}`, undefined, { Authorization: `Bearer ${adminToken}` });
  return r.json.state;
}

describe('status plots in a real browser', { timeout: 300000 }, () => {
  before(async () => {
    svc = new StatusService();
    await svc.start();
    browser = await launchChromium(chromium);
    const r = await httpJson(svc.port, 'POST', '/api/register', { username: adminName, password: adminPass, email: 'root@example.org' });
    assert.equal(r.status, 201, r.text);
    await svc.admin('approve', adminName);
    await svc.admin('make-admin', adminName);
    adminToken = (await svc.admin('token', adminName)).trim();
  });

  after(async () => {
    if (browser) await browser.close();
    if (svc) await svc.stop(steps.failed);
  });

  const { step } = steps;

  let page;

  step('the /status page is linked in the header and draws five labelled plots', async () => {
    page = await newPage('light');
    await login(page, adminName, adminPass);
    await page.click('header nav a[href="/status"]');
    await page.waitForURL(svc.url('/status'));
    assert.equal(await page.getAttribute('header nav a[href="/status"]', 'aria-current'), 'page');
    await waitFor('the plots', async () => (await page.locator('.plots svg[role=img]').count()) === 5, STEP_MS, 100);
    const s = await shown(page);
    for (const id of ['done', 'failed', 'queue', 'running', 'workers']) {
      assert.ok(s[id], `plot ${id}`);
      assert.ok(s[id].label && s[id].label.length > 20, `plot ${id} has a summary: ${s[id].label}`);
    }
    await waitFor('a worker in the current figures', async () => (await shown(page)).now.workers === '1', STEP_MS, 100);
    assert.equal((await shown(page)).now.slots, '2 (0 busy)');
  });

  step('jobs run while the page is open: done, queue and running change without a reload', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    const before = await shown(page);
    assert.equal(before.done.bars, 0, 'no job has ended yet');
    // Two slots, four jobs of 3 s: two run while two wait.
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await submit('mysleep', '3'));
    await waitFor('queue and running on the page', async () => {
      const s = await shown(page);
      return s.now.running === '2' && Number(s.now.queue) >= 1 && /running jobs.*now 2/i.test(s.running.label);
    }, STEP_MS, 100);
    const busy = await shown(page);
    assert.match(busy.queue.label, /queued now [1-9]/, busy.queue.label);
    assert.ok(busy.queue.lines >= 1 && busy.running.lines >= 1, 'the gauges are drawn as lines');
    await shot(page, 'status-busy');
    for (const id of ids) await waitFor(`job ${id} to end`, async () => (await jobState(id)) === 'done', 60000, 200);
    const bad = await submit('fail', '1');
    await waitFor(`job ${bad} to fail`, async () => (await jobState(bad)) === 'failed', 60000, 200);
    await waitFor('four jobs done and one failure on the plots and in the figures', async () => {
      const s = await shown(page);
      return s.now.done === '4' && s.done.bars >= 1 && /4 jobs in all/.test(s.done.label) &&
        s.now.failed === '1' && s.failed.bars >= 1 && /1 job in all/.test(s.failed.label) &&
        s.now.running === '0' && s.now.queue === '0';
    }, STEP_MS, 100);
    const after = await shown(page);
    await shot(page, 'status-after');
    assert.ok(after.done.rows >= 1, 'the data table has the minutes with samples');
    assert.equal(after.problem, '', 'no problem reported');
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    assert.ok(page.requests.filter((p) => p === '/api/status').length >= 3, 'the page polled /api/status');
    assert.deepEqual(page.errors, []);
  });

  step('the data table of a plot opens and holds the minute of the jobs', async () => {
    await page.click('#plot-done details summary');
    assert.equal(await page.getAttribute('#plot-done details', 'open'), '');
    const cells = await page.locator('#plot-done tbody td').allTextContents();
    assert.equal(cells.reduce((n, c) => n + Number(c), 0), 4, `the minutes hold the four jobs: ${cells}`);
    const heads = await page.locator('#plot-done tbody th[scope=row]').allTextContents();
    assert.ok(heads.every((h) => /^\d\d:\d\d$/.test(h)), `each row is a minute: ${heads}`);
  });

  step('axe-core finds nothing serious on /status and /admin, light and dark; screenshots', async () => {
    const found = [];
    const barFill = {};
    for (const scheme of ['light', 'dark']) {
      const p = await newPage(scheme);
      await login(p, adminName, adminPass);
      for (const where of ['/status', '/admin']) {
        await p.goto(svc.url(where));
        await waitFor('the plots', async () => (await p.locator('#status-panel svg[role=img]').count()) === 5, STEP_MS, 100);
        await waitFor('the figures', async () => (await shown(p)).now.done === '4', STEP_MS, 100);
        const dark = await p.evaluate(() => {
          const c = getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number);
          return c[0] + c[1] + c[2] < 150;
        });
        assert.equal(dark, scheme === 'dark', `${where} is in the ${scheme} theme`);
        for (const v of await axeViolations(p)) found.push(`[${scheme}] ${where}: ${v}`);
        const name = (where === '/status' ? 'status' : 'admin-status') + (scheme === 'dark' ? '-dark' : '');
        const file = await shot(p, name);
        if (where === '/status') fs.copyFileSync(file, path.join(SOURCE_DIR, 'docs', 'screenshots', `${name}.png`));
      }
      barFill[scheme] = await p.evaluate(() => getComputedStyle(document.querySelector('#plot-done rect.bar')).fill);
      await p.context().close();
    }
    assert.notEqual(barFill.light, barFill.dark, 'the plot colours follow the theme');
    assert.deepEqual(found, [], `axe-core found serious or critical violations:\n${found.join('\n')}`);
  });

  step('a user who is not an administrator sees /status but not /admin', async () => {
    const r = await httpJson(svc.port, 'POST', '/api/register', { username: 'erin', password: 'erin-password-1', email: 'erin@example.org' });
    assert.equal(r.status, 201, r.text);
    await svc.admin('approve', 'erin');
    const p = await newPage('light');
    await login(p, 'erin', 'erin-password-1');
    await p.goto(svc.url('/status'));
    await waitFor('the figures', async () => (await p.locator('#status-panel svg[role=img]').count()) === 5, STEP_MS, 100);
    assert.equal(await p.locator('header nav a[href="/admin"]').count(), 0);
    const resp = await p.goto(svc.url('/admin'));
    assert.equal(resp.status(), 403);
    await p.context().close();
  });
});
