// Browser tests of the web pages (issue 4): Debian's chromium driven by playwright-core against
// the real service (service.mjs starts redis-server, the daemon, the gateway and a worker with one
// slot). One story, in order: an admin, a registration approved on the admin page, log in, API
// tokens, submitting mysleep and watching its row go ready → running → done without a reload, the
// job page's live log tail, cancel, archive, delete; then the security cases (a cross-site form
// post, another user's job page, markup from an application) and the live-update figures: the
// time from a status change written to Redis to the open page showing it (p50/p99 over 120
// changes, printed, never asserted) and the page reconnecting by itself after a gateway restart.
//
// Screenshots of every page go to DESCPROD_SCREENSHOT_DIR (default: build/web-screenshots).
//
// Run: node --test tests/web/web.test.mjs (ctest -L web does, with the paths set).
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { chromium } from 'playwright-core';
import { Service, launchChromium, stepTracker, waitFor, httpJson, sleep, SOURCE_DIR } from './service.mjs';

const SHOTS = process.env.DESCPROD_SCREENSHOT_DIR || path.join(SOURCE_DIR, 'build', 'web-screenshots');
const STEP_MS = 20000;  // the longest any single wait in a step may take
// axe-core (npm), evaluated in the page to check accessibility (the page's CSP does not apply to
// the test's own evaluation).
const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let svc;
let browser;
const steps = stepTracker();
const adminName = 'root', adminPass = 'root-password-1';
const userName = 'carol', userPass = 'carol-password-1';
let userToken = '';   // carol's API token, made on the tokens page
let adminToken = '';

async function newPage(viewport = { width: 1400, height: 900 }, options = {}) {
  const context = await browser.newContext({ viewport, locale: 'en-US', ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.dialogs = [];
  page.on('dialog', async (d) => {
    page.dialogs.push({ type: d.type(), message: d.message() });
    if (d.type() === 'confirm') await d.accept(); else await d.dismiss();
  });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  return page;
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function login(page, name, password) {
  await page.goto(svc.url('/login'));
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForNavigation(), page.click('form[action="/login"] button[type=submit]')]);
}

// Submits the create form; returns the new job's id (from the flash message).
async function submitJob(page, jobtype, config) {
  if (new URL(page.url()).pathname !== '/') await page.goto(svc.url('/'));
  await page.selectOption('#jobtype', jobtype);
  await page.fill('input[name=config]', config);
  await page.fill('input[name=howfig]', '');
  await Promise.all([page.waitForNavigation(), page.click('form[action="/jobs"] button[type=submit]')]);
  const flash = await page.textContent('.flash');
  const m = /Submitted job (\d+)/.exec(flash || '');
  assert.ok(m, `no job was submitted: ${flash}`);
  return Number(m[1]);
}

function row(page, id) { return page.locator(`#jobs tr[data-job="${id}"]`); }

async function rowState(page, id) {
  return page.evaluate((jid) => {
    const tr = document.querySelector(`#jobs tr[data-job="${jid}"]`);
    return tr ? tr.querySelector('.c-state .state').textContent : null;
  }, String(id));
}

// Records every state each row of #jobs shows, and marks the document so a reload is noticed.
async function recordStates(page) {
  await page.evaluate(() => {
    window.__noReload = true;
    window.__states = {};
    const note = () => {
      document.querySelectorAll('#jobs tbody tr[data-job]').forEach((tr) => {
        const s = tr.querySelector('.c-state .state');
        if (!s) return;
        const list = (window.__states[tr.dataset.job] = window.__states[tr.dataset.job] || []);
        if (list[list.length - 1] !== s.textContent) list.push(s.textContent);
      });
    };
    note();
    new MutationObserver(note).observe(document.querySelector('#jobs'), { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

// Runs axe-core on the page; returns its serious and critical violations, one line each (rule id,
// impact, what it checks, and every element it found, by CSS selector).
async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

// The relative luminance of a CSS colour "rgb(r, g, b)".
function luminance(css) {
  const [r, g, b] = css.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number).map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
async function bodyLuminance(page) {
  return luminance(await page.evaluate(() => getComputedStyle(document.body).backgroundColor));
}

// "YYYY-MM-DD HH:MM:SS" of a Date in a time zone, and the zone's short name there (Node's Intl).
function wallClock(date, timeZone) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-US', {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    hourCycle: 'h23', timeZoneName: 'short',
  }).formatToParts(date).map((p) => [p.type, p.value]));
  return { text: `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`, zone: parts.timeZoneName };
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

describe('web pages in a real browser', { timeout: 600000 }, () => {
  before(async () => {
    svc = new Service();
    await svc.start();
    browser = await launchChromium(chromium);
    // The administrator: registered like anyone, approved and promoted with descprod-admin.
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

  step('registration is pending until an admin approves it on the admin page; then login works', async () => {
    const page = await newPage();
    await page.goto(svc.url('/'));
    assert.equal(new URL(page.url()).pathname, '/login', 'the home page asks for a login');
    await shot(page, 'login');
    await page.goto(svc.url('/register'));
    await page.fill('input[name=username]', userName);
    await page.fill('input[name=email]', 'carol@example.org');
    await page.fill('input[name=password]', userPass);
    await shot(page, 'register');
    await Promise.all([page.waitForNavigation(), page.click('form[action="/register"] button[type=submit]')]);
    assert.match(await page.textContent('.flash'), /Registered carol/);

    await login(page, userName, userPass);
    assert.equal(new URL(page.url()).pathname, '/login');
    assert.match(await page.textContent('.flash'), /pending/);

    const admin = await newPage();
    await login(admin, adminName, adminPass);
    await admin.goto(svc.url('/admin'));
    const pending = admin.locator('#pending tr[data-user="carol"]');
    await pending.waitFor();
    await shot(admin, 'admin');
    await Promise.all([admin.waitForNavigation(), pending.locator('button:has-text("Approve")').click()]);
    assert.match(await admin.textContent('.flash'), /approve carol/);
    assert.equal(await admin.locator('#pending').count(), 0);
    assert.equal(await admin.textContent('#users tr[data-user="carol"] .ustatus'), 'active');
    await admin.context().close();

    await login(page, userName, userPass);
    assert.equal(new URL(page.url()).pathname, '/');
    assert.equal(await page.textContent('nav .who'), 'carol');
    await page.context().close();
  });

  let page;  // carol's main page from here on
  let a, b;  // two mysleep jobs

  step('API tokens are shown once, listed and revoked on the tokens page', async () => {
    page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/tokens'));
    await page.fill('input[name=label]', 'laptop');
    await page.click('form[action="/tokens"] button[type=submit]');
    userToken = (await page.textContent('#new-token')).trim();
    assert.match(userToken, /^dp_[0-9a-f]{64}$/);
    await page.fill('input[name=label]', 'temporary');
    await page.click('form[action="/tokens"] button[type=submit]');
    const temp = (await page.textContent('#new-token')).trim();
    await shot(page, 'tokens');
    assert.equal((await httpJson(svc.port, 'GET', '/api/jobs', undefined, { Authorization: `Bearer ${temp}` })).status, 200);
    await page.goto(svc.url('/tokens'));
    assert.equal(await page.locator('#new-token').count(), 0, 'a token is shown only once');
    const tempRow = page.locator('#tokens tr', { hasText: 'temporary' });
    await Promise.all([page.waitForNavigation(), tempRow.locator('button:has-text("Revoke")').click()]);
    assert.ok(page.dialogs.some((d) => d.type === 'confirm'), 'revoking asks for a confirmation');
    assert.match(await page.textContent('.flash'), /Revoked/);
    assert.equal(await page.locator('#tokens tr', { hasText: 'temporary' }).count(), 0);
    assert.equal(await page.locator('#tokens tr', { hasText: 'laptop' }).count(), 1);
    assert.equal((await httpJson(svc.port, 'GET', '/api/jobs', undefined, { Authorization: `Bearer ${temp}` })).status, 401);
    assert.equal((await httpJson(svc.port, 'GET', '/api/jobs', undefined, { Authorization: `Bearer ${userToken}` })).status, 200);
  });

  step('a submitted mysleep row goes ready → running → done without a reload', async () => {
    // One worker slot: b waits (ready) while a runs, so the page sees every state of b.
    a = await submitJob(page, 'mysleep', '2');
    b = await submitJob(page, 'mysleep', '1');
    await recordStates(page);
    await waitFor(`job ${b} done on the page`, async () => (await rowState(page, b)) === 'done', 30000);
    const seen = await page.evaluate((id) => window.__states[id], String(b));
    const order = ['ready', 'running', 'done'].map((s) => seen.indexOf(s));
    assert.ok(order.every((i) => i >= 0) && order[0] < order[1] && order[1] < order[2], `states seen: ${seen.join(' → ')}`);
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    assert.equal(await rowState(page, a), 'done');
    // The other fields arrive with the row's refetch, just after the state.
    await waitFor('the return status', async () => (await row(page, b).locator('.c-rc').textContent()).trim() === '0', STEP_MS);
    assert.match(await row(page, b).locator('.c-progress .msg').textContent(), /Done\. I'm awake now\./);
    assert.match(await row(page, b).locator('.c-host').textContent(), /\S/);
    assert.match(await row(page, b).locator('.c-rundir').textContent(), /job0*\d+/);
  });

  step('the job page shows the live log tail and the children roll-up', async () => {
    const c = await submitJob(page, 'mysleep', '3');
    for (let i = 0; i < 2; i++) {
      const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'mysleep', config: '1', parent: c }, { Authorization: `Bearer ${userToken}` });
      assert.equal(r.status, 201, r.text);
    }
    await Promise.all([page.waitForNavigation(), page.click(`#jobs tr[data-job="${c}"] .c-id a`)]);
    assert.equal(new URL(page.url()).pathname, `/jobs/${c}`);
    await page.evaluate(() => { window.__noReload = true; });
    await waitFor('the log tail to show the sleep line', async () => /I'm sleeping for 3 seconds\./.test(await page.textContent('#log')), STEP_MS);
    await waitFor('the log tail to show the wake-up line', async () => /I'm awake now\./.test(await page.textContent('#log')), STEP_MS);
    await waitFor('the state done', async () => (await page.textContent('#jobstatus .state')) === 'done', STEP_MS);
    await waitFor('the children to finish', async () => /2 children, 2 done/.test(await page.textContent('#rollup')), 30000);
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the job page was not reloaded');
    assert.ok((await page.locator('#timeline li').count()) >= 4, 'the event timeline lists the transitions');
    assert.match(await page.textContent('#fields'), /rundir/);
    await shot(page, 'job');
    // The whole log: its download link gives every line; the search lists the matching lines with
    // their numbers and the match marked.
    const href = await page.getAttribute('#logsection a[download]', 'href');
    assert.equal(href, `/api/jobs/${c}/log?lines=all&format=text`);
    const whole = await page.evaluate((u) => fetch(u, { credentials: 'same-origin' }).then((r) => r.text()), href);
    assert.match(whole, /I'm sleeping for 3 seconds\.\n(.*\n)*I'm awake now\.\n$/);
    await page.fill('#logq', 'AWAKE');
    await Promise.all([page.waitForNavigation(), page.click('#logsection form.logsearch button[type="submit"]')]);
    assert.equal(new URL(page.url()).search, '?logq=AWAKE');
    assert.match(await page.textContent('#logsummary'), /^1 line of \d+ contains “AWAKE”\.$/);
    assert.equal(await page.textContent('#logmatches mark'), 'awake');
    assert.equal(await page.inputValue('#logq'), 'AWAKE');
    await shot(page, 'job-log-search');
  });

  step('markup written by an application shows as text and runs nothing', async () => {
    await page.goto(svc.url('/'));
    const x = await submitJob(page, 'xss', 'a');
    await waitFor(`xss job ${x} done`, async () => (await rowState(page, x)) === 'done', 30000);
    assert.equal(await row(page, x).locator('.c-progress .msg').textContent(), 'Done. <script>alert(1)</script>');
    await page.goto(svc.url(`/jobs/${x}`));
    await waitFor('the log line', async () => (await page.textContent('#log')).includes('<script>alert(2)</script> in the log'), STEP_MS);
    assert.equal(await page.locator('main script').count(), 0, 'no script element came from the data');
    // A config with markup is refused by check_config; the error shows it as text.
    await page.goto(svc.url('/'));
    await page.fill('input[name=config]', '<script>alert(3)</script>');
    await Promise.all([page.waitForNavigation(), page.click('form[action="/jobs"] button[type=submit]')]);
    assert.match(await page.textContent('.flash'), /<script>alert\(3\)<\/script>/);
    assert.deepEqual(page.dialogs.filter((d) => d.type === 'alert'), [], 'no alert dialog fired');
    assert.deepEqual(page.errors, []);
  });

  let long, held, heldAttempt;

  step('status changes written to Redis reach the open page (latency figure)', async () => {
    await page.goto(svc.url('/'));
    long = await submitJob(page, 'mysleep', '120');
    await waitFor(`job ${long} running`, async () => (await rowState(page, long)) === 'running', 30000);
    // With the only slot busy, a new job stays ready; claim it so no worker ever takes it.
    const auth = { Authorization: `Bearer ${userToken}` };
    const created = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'mysleep', config: '5' }, auth);
    held = created.json.id;
    const claim = await httpJson(svc.port, 'POST', `/api/jobs/${held}/claim`, { host: 'latency.test' }, auth);
    assert.equal(claim.status, 200, claim.text);
    heldAttempt = claim.json.attempt;
    await waitFor(`job ${held} on the page`, async () => (await rowState(page, held)) === 'dispatched', STEP_MS);
    await page.evaluate((id) => {
      window.__seen = {};
      const tr = () => document.querySelector(`#jobs tr[data-job="${id}"]`);
      new MutationObserver(() => {
        const r = tr();
        const m = r && r.querySelector('.c-progress .msg');
        if (m && !(m.textContent in window.__seen)) window.__seen[m.textContent] = performance.timeOrigin + performance.now();
      }).observe(document.querySelector('#jobs'), { subtree: true, childList: true, characterData: true });
    }, String(held));
    // The same writes the store's scripts make for a progress event: the job hash and both streams.
    const script = `
      redis.call('HSET', KEYS[1], 'state', 'running', 'progress', ARGV[3], 'message', ARGV[4], 'update_time', ARGV[5])
      redis.call('XADD', KEYS[1] .. ':events', 'MAXLEN', '~', 1000, '*', 'type', 'progress', 'state', 'running', 'progress', ARGV[3], 'attempt', ARGV[6], 'time', ARGV[5])
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'id', ARGV[1], 'owner', ARGV[2], 'type', 'progress', 'state', 'running', 'progress', ARGV[3], 'attempt', ARGV[6], 'time', ARGV[5])
      return 1`;
    const write = (text) => svc.redis.cmd('EVAL', script, '2', `descprod:job:${held}`, 'descprod:events', String(held), userName,
      `Running. ${text}`, text, (Date.now() / 1000).toFixed(6), String(heldAttempt));
    const lat = [];
    const N = 120;
    for (let i = 1; i <= N; i++) {
      const text = `status change ${i}`;
      const t0 = performance.timeOrigin + performance.now();
      await write(text);
      const shown = await page.waitForFunction((t) => window.__seen[t], `Running. ${text}`, { timeout: 5000, polling: 5 });
      lat.push((await shown.jsonValue()) - t0);
    }
    lat.sort((x, y) => x - y);
    const p50 = percentile(lat, 50), p99 = percentile(lat, 99);
    const line = `status change (Redis write) → page shows it: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${lat[lat.length - 1].toFixed(1)} ms over ${N} changes`;
    console.log(line);
    fs.mkdirSync(SHOTS, { recursive: true });
    fs.writeFileSync(path.join(SHOTS, 'latency.txt'), line + '\n');
    await shot(page, 'home');

    // The page reconnects by itself after a gateway restart and goes on showing changes.
    await page.evaluate(() => { window.__noReload = true; });
    await svc.restartGateway();
    await waitFor('the live indicator to come back', async () => (await page.getAttribute('#live', 'data-status')) === 'on', 30000, 50);
    await write('after the restart');
    await page.waitForFunction((t) => window.__seen[t], 'Running. after the restart', { timeout: STEP_MS });
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  });

  step('cancel stops a running job; archive hides a job; delete asks first', async () => {
    await page.goto(svc.url('/'));
    assert.equal(await rowState(page, long), 'running');
    await Promise.all([page.waitForNavigation(), row(page, long).locator('button:has-text("Cancel")').click()]);
    assert.match(await page.textContent('.flash'), new RegExp(`job ${long}`));
    await waitFor(`job ${long} cancelled`, async () => (await rowState(page, long)) === 'cancelled', 30000);
    // The claimed job finishes through its runner's report.
    const fin = await httpJson(svc.port, 'POST', `/api/jobs/${held}/finished`, { attempt: heldAttempt, rc: 0, message: 'held job done' },
      { Authorization: `Bearer ${userToken}` });
    assert.equal(fin.status, 200, fin.text);
    await waitFor(`job ${held} done`, async () => (await rowState(page, held)) === 'done', STEP_MS);

    await Promise.all([page.waitForNavigation(), row(page, a).locator('button:has-text("Archive")').click()]);
    assert.match(await page.textContent('.flash'), new RegExp(`Archived job ${a}`));
    assert.equal(await row(page, a).count(), 0, 'the active view hides an archived job');
    await Promise.all([page.waitForNavigation(), page.click('.filters a:has-text("All")')]);
    await row(page, a).locator('button:has-text("Unarchive")').waitFor();

    const before = page.dialogs.length;
    await Promise.all([page.waitForNavigation(), row(page, b).locator('button:has-text("Delete")').click()]);
    assert.ok(page.dialogs.slice(before).some((d) => d.type === 'confirm' && /Delete job/.test(d.message)));
    assert.match(await page.textContent('.flash'), new RegExp(`Deleted job ${b}`));
    assert.equal(await row(page, b).count(), 0);
    assert.equal((await httpJson(svc.port, 'GET', `/api/jobs/${b}`, undefined, { Authorization: `Bearer ${userToken}` })).status, 404);
  });

  step('a cross-site form post is refused and creates nothing', async () => {
    const count = async () => Number(await svc.redis.cmd('ZCARD', `descprod:user:${userName}:jobs`));
    const before = await count();
    const target = svc.url('');
    const evil = `<!doctype html><html><body>
      <form id="f1" method="post" action="${target}/jobs" target="w1">
        <input name="jobtype" value="mysleep"><input name="config" value="7"><input name="csrf" value="guess"></form>
      <form id="f2" method="post" action="${target}/api/jobs" enctype="text/plain" target="w2">
        <input name='{"jobtype":"mysleep","config":"8","x":"' value='"}'></form>
      <iframe name="w1"></iframe><iframe name="w2"></iframe>
      <script>document.getElementById('f1').submit(); document.getElementById('f2').submit();</script>
      </body></html>`;
    const posts = [];
    const server = http.createServer((req, res) => { res.setHeader('Content-Type', 'text/html'); res.end(evil); });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const evilUrl = `http://127.0.0.1:${server.address().port}/`;
    const p = await newPage();
    try {
      await login(p, userName, userPass);  // the victim is logged in
      p.on('response', (r) => { if (r.request().method() === 'POST') posts.push({ url: r.url(), status: r.status() }); });
      await p.goto(evilUrl);
      await waitFor('both cross-site posts to be answered', () => posts.length >= 2, STEP_MS);
    } finally {
      server.close();
      await p.context().close();
    }
    for (const r of posts) assert.equal(r.status, 403, `${r.url} answered ${r.status}`);
    assert.equal(await count(), before, 'no job was created');
  });

  step("another user's job page answers 404; the admin sees it", async () => {
    const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'mysleep', config: '1' }, { Authorization: `Bearer ${adminToken}` });
    assert.equal(r.status, 201, r.text);
    const res = await page.goto(svc.url(`/jobs/${r.json.id}`));
    assert.equal(res.status(), 404);
    assert.match(await page.textContent('main'), /not found/);
    const own = await page.goto(svc.url(`/jobs/${a}`));
    assert.equal(own.status(), 200);
    const rowRes = await page.context().request.get(svc.url(`/jobs/${r.json.id}/row`));
    assert.equal(rowRes.status(), 404);
    const apiRes = await page.context().request.get(svc.url(`/api/jobs/${r.json.id}`));
    assert.equal(apiRes.status(), 404);
  });

  step('admin page, help page, a phone-sized home page; logout ends the session', async () => {
    const admin = await newPage();
    await login(admin, adminName, adminPass);
    await admin.goto(svc.url('/admin'));
    await admin.locator('#workers').waitFor();
    assert.match(await admin.textContent('#workers'), /w0/);
    assert.match(await admin.textContent('#queue-depth'), /^\d+$/);
    await admin.goto(svc.url('/help'));
    assert.match(await admin.textContent('main'), /current-status\.txt/);
    await shot(admin, 'help');
    await admin.context().close();

    const phone = await newPage({ width: 390, height: 844 });
    await login(phone, userName, userPass);
    await shot(phone, 'home-phone');
    await phone.context().close();

    const sessions = async () => (await svc.redis.cmd('KEYS', 'descprod:session:*')).length;
    const n = await sessions();
    await page.goto(svc.url('/'));
    await Promise.all([page.waitForNavigation(), page.click('nav form[action="/logout"] button')]);
    assert.equal(new URL(page.url()).pathname, '/login');
    assert.equal(await sessions(), n - 1, 'logout deleted the session');
    await page.goto(svc.url('/'));
    assert.equal(new URL(page.url()).pathname, '/login');
  });
  // ---- comfort and accessibility (issue 17, items 9 and 10) -----------------------------------

  step('dark mode follows the system; the header toggle overrides it, is remembered, and never flashes', async () => {
    const page = await newPage(undefined, { colorScheme: 'light' });
    // Records the theme the document has when <body> starts: a stored choice must apply before
    // anything of the body is painted (theme.js in <head>, not the deferred app.js).
    await page.context().addInitScript(() => {
      new MutationObserver((_, o) => {
        if (!document.body) return;
        window.__themeAtBody = document.documentElement.dataset.theme || 'system';
        o.disconnect();
      }).observe(document, { childList: true, subtree: true });
    });
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    const toggle = page.locator('#theme-toggle');
    await toggle.waitFor();
    assert.ok(await bodyLuminance(page) > 0.8, 'light system: a light page');
    assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
    // The system turns dark: the page follows at once, without a reload.
    await page.emulateMedia({ colorScheme: 'dark' });
    await waitFor('the dark background', async () => (await bodyLuminance(page)) < 0.05, STEP_MS);
    // The toggle follows too (the media query's change event may come just after the repaint).
    await waitFor('the toggle pressed', async () => (await toggle.getAttribute('aria-pressed')) === 'true', STEP_MS);
    assert.ok(luminance(await page.evaluate(() => getComputedStyle(document.body).color)) > 0.6, 'light text on dark');
    await shot(page, 'home-dark');
    // The toggle overrides the system (light on a dark system), and the choice survives a reload.
    await toggle.click();
    assert.ok(await bodyLuminance(page) > 0.8, 'the toggle made the page light');
    assert.equal(await page.evaluate(() => localStorage.getItem('descprod-theme')), 'light');
    await page.reload();
    assert.ok(await bodyLuminance(page) > 0.8, 'still light after a reload');
    assert.equal(await page.evaluate(() => window.__themeAtBody), 'light', 'the stored theme applied before <body>');
    assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
    // Back to the system's own theme: the choice is forgotten and the page follows the system again.
    await toggle.click();
    assert.equal(await page.evaluate(() => localStorage.getItem('descprod-theme')), null);
    assert.ok(await bodyLuminance(page) < 0.05);
    await page.emulateMedia({ colorScheme: 'light' });
    await waitFor('the light background', async () => (await bodyLuminance(page)) > 0.8, STEP_MS);
    // Dark chosen on a light system holds on every page, public ones included, from the first paint.
    await toggle.click();
    assert.equal(await page.evaluate(() => localStorage.getItem('descprod-theme')), 'dark');
    for (const p of ['/jobs/' + a, '/help']) {
      await page.goto(svc.url(p));
      assert.ok(await bodyLuminance(page) < 0.05, `${p} is dark`);
      assert.equal(await page.evaluate(() => window.__themeAtBody), 'dark', `${p}: dark before <body>`);
    }
    await page.context().clearCookies();
    await page.goto(svc.url('/login'));
    assert.ok(await bodyLuminance(page) < 0.05, 'the login page is dark too');
    assert.equal(await page.locator('#theme-toggle').getAttribute('aria-pressed'), 'true');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  step("times show in the viewer's time zone, with UTC in the title", async () => {
    const zone = 'America/Los_Angeles';
    const page = await newPage(undefined, { timezoneId: zone });
    await login(page, userName, userPass);
    // A job whose events arrive while its page is open: its timeline entries are made by the script.
    const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'mysleep', config: '1' }, { Authorization: `Bearer ${userToken}` });
    assert.equal(r.status, 201, r.text);
    await page.goto(svc.url(`/jobs/${r.json.id}`));
    await waitFor('the job done', async () => (await page.textContent('#jobstatus .state')) === 'done', 30000);
    await waitFor('the detail refreshed', async () => (await page.locator('#fields tr[data-field="stop_time"] time').count()) === 1, STEP_MS);
    const check = async (where) => {
      const times = await page.evaluate((sel) => Array.from(document.querySelectorAll(sel),
        (t) => ({ datetime: t.getAttribute('datetime'), text: t.textContent, title: t.title })), `${where} time`);
      assert.ok(times.length > 0, `${where} shows times`);
      for (const t of times) {
        const d = new Date(t.datetime);
        assert.ok(!Number.isNaN(d.getTime()), `datetime ${t.datetime}`);
        const utc = d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
        const local = wallClock(d, zone);
        assert.equal(t.title, utc, `${where}: the title holds the UTC time`);
        assert.equal(t.text, `${local.text} ${local.zone}`, `${where}: the text is the Los Angeles time`);
        assert.notEqual(t.text.slice(0, 19), utc.slice(0, 19), 'local time differs from UTC');
      }
      return times.length;
    };
    await check('#fields');      // replaced by the live refresh after the job ended
    const events = await check('#timeline');   // partly added by the script from the live events
    assert.ok(events >= 3, `${events} timeline entries`);
    // The job table (rendered by the server, and rows fetched live).
    await page.goto(svc.url('/'));
    await check('#jobs');
    // Hovering shows the UTC time (the title attribute is the browser's tooltip).
    const first = page.locator('#jobs time').first();
    assert.match(await first.getAttribute('title'), / UTC$/);
    assert.match(await first.textContent(), / P[DS]T$/);
    await page.context().close();
  });

  step('on a phone every button (and link used as one) is at least 40 px high', async () => {
    const small = [];
    const measure = async (page, what) => {
      const boxes = await page.evaluate(() => Array.from(document.querySelectorAll('button, a.button, .pager a, .filters a'))
        .filter((e) => e.offsetParent !== null || getComputedStyle(e).position === 'fixed')
        .map((e) => ({ text: (e.getAttribute('aria-label') || e.textContent).trim(), h: e.getBoundingClientRect().height })));
      assert.ok(boxes.length > 0, `${what} has buttons`);
      for (const b of boxes) if (b.h < 40) small.push(`${what}: "${b.text}" ${b.h.toFixed(1)} px`);
      return boxes.length;
    };
    const phone = await newPage({ width: 390, height: 844 });
    await login(phone, userName, userPass);
    let n = await measure(phone, '/');
    for (const p of [`/jobs/${a}`, '/tokens', '/help', '/?view=all&page=2']) {
      await phone.goto(svc.url(p));
      n += await measure(phone, p);
    }
    await phone.context().close();
    const admin = await newPage({ width: 390, height: 844 });
    await login(admin, adminName, adminPass);
    await admin.goto(svc.url('/admin'));
    n += await measure(admin, '/admin');
    await admin.context().close();
    assert.deepEqual(small, [], `buttons under 40 px on a phone (of ${n})`);
    // The desktop layout keeps its compact row buttons.
    const desk = await newPage();
    await login(desk, userName, userPass);
    const h = await desk.evaluate(() => document.querySelector('#jobs td.c-actions a.button').getBoundingClientRect().height);
    assert.ok(h < 40, `desktop row buttons stay compact (${h} px)`);
    await desk.context().close();
  });

  step("the submitted-job message links to the job's page and gets the focus", async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    const id = await submitJob(page, 'quick', '1');
    const link = page.locator('.flash a');
    assert.equal(await link.textContent(), `Submitted job ${id}`);
    assert.equal(await link.getAttribute('href'), `/jobs/${id}`);
    assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'flash',
      'the message has the focus after the post');
    assert.equal(await page.getAttribute('.flash', 'role'), 'status', 'the message is a live status');
    await Promise.all([page.waitForNavigation(), link.click()]);
    assert.equal(new URL(page.url()).pathname, `/jobs/${id}`);
    assert.match(await page.textContent('h1'), new RegExp(`^Job ${id}\\b`));
    await page.context().close();
  });

  step('skip link, one h1, column scopes, live regions; focus kept after actions and live updates', async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    const pages = ['/', `/jobs/${a}`, '/tokens', '/help'];
    for (const p of pages) {
      await page.goto(svc.url(p));
      assert.equal(await page.locator('h1').count(), 1, `${p} has one h1`);
      const th = await page.evaluate(() => Array.from(document.querySelectorAll('thead th'), (t) => t.getAttribute('scope')));
      assert.ok(th.every((s) => s === 'col'), `${p}: every column header has scope=col (${th.join(',')})`);
      // The first Tab reaches the skip link; Enter moves the focus to the main content.
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
      assert.ok(await page.evaluate(() => document.activeElement.getBoundingClientRect().top >= 0), 'the skip link shows when focused');
      await page.keyboard.press('Enter');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'main', `${p}: the skip link moves the focus to <main>`);
    }
    await page.goto(svc.url('/'));
    assert.equal(await page.getAttribute('#jobcount', 'aria-live'), 'polite');
    assert.equal(await page.getAttribute('#live', 'role'), 'status');
    // Every form control has a name (its label).
    const unnamed = await page.evaluate(() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, button'))
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map((e) => e.outerHTML));
    assert.deepEqual(unnamed, []);
    // After an action the focus returns to the row it was made on (keyboard: focus + Enter).
    await page.goto(svc.url('/?view=all'));
    await page.focus(`#jobs tr[data-job="${a}"] button:has-text("Unarchive")`);
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    assert.match(await page.textContent('.flash'), new RegExp(`Unarchived job ${a}`));
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), `Archive job ${a}`,
      'the focus is on the row the action was made on');
    // A live update replaces a row: the focus stays on the same control of the new row.
    const id = await submitJob(page, 'mysleep', '2');
    await page.focus(`#jobs tr[data-job="${id}"] a.button`);
    await page.evaluate((j) => { document.querySelector(`#jobs tr[data-job="${j}"]`).__old = true; }, String(id));
    await waitFor(`job ${id} done`, async () => (await rowState(page, id)) === 'done', 30000);
    await waitFor('the row refetched', async () => page.evaluate((j) => !document.querySelector(`#jobs tr[data-job="${j}"]`).__old, String(id)), STEP_MS);
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), `Copy job ${id}`,
      'the focus survived the live update');
    // The job page announces its job's new state in a live region.
    const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'mysleep', config: '3' }, { Authorization: `Bearer ${userToken}` });
    await page.goto(svc.url(`/jobs/${r.json.id}`));
    assert.equal(await page.getAttribute('#announce', 'aria-live'), 'polite');
    assert.notEqual(await page.getAttribute('#jobdetail', 'data-state'), 'done', 'the job was still going when its page opened');
    await waitFor('the announcement', async () => (await page.textContent('#announce')) === `Job ${r.json.id} is done.`, 30000);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  // ---- held jobs and dependencies ----------------------------------------------------------------

  // Submits the create form with Hold and After as given; returns the new job's id.
  async function submitWith(page, jobtype, config, { hold = false, after = '' } = {}) {
    await page.goto(svc.url('/'));
    await page.selectOption('#jobtype', jobtype);
    await page.fill('input[name=config]', config);
    await page.fill('input[name=howfig]', '');
    await page.fill('input[name=after]', after);
    await page.setChecked('input[name=hold]', hold);
    await Promise.all([page.waitForNavigation(), page.click('form[action="/jobs"] button[type=submit]')]);
    const flash = await page.textContent('.flash');
    const m = /Submitted job (\d+)/.exec(flash || '');
    assert.ok(m, `no job was submitted: ${flash}`);
    return Number(m[1]);
  }
  const jobState = (page) => page.textContent('#jobstatus .state');
  let graphJob;  // a job with dependencies and dependents (its page is checked by axe-core below)

  step('a job submitted with Hold waits for Release on its page, then runs to done', async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    // The form's Hold box, labelled.
    assert.equal(await page.getByLabel('Hold until I release it').count(), 1);
    const id = await submitWith(page, 'mysleep', '1', { hold: true });
    assert.equal(await page.isChecked('input[name=hold]'), false, 'the next form starts without Hold');
    assert.equal(await rowState(page, id), 'held');
    await row(page, id).locator(`button[aria-label="Release job ${id}"]`).waitFor();
    await Promise.all([page.waitForNavigation(), page.click(`#jobs tr[data-job="${id}"] .c-id a`)]);
    assert.equal(await jobState(page), 'held');
    assert.match(await page.textContent('#jobstatus'), /Held\./);
    const release = page.locator('#jobdetail .actions button', { hasText: 'Release' });
    assert.equal(await release.count(), 1);
    assert.equal(await page.locator('#jobdetail .actions button', { hasText: 'Cancel' }).count(), 1, 'a held job can be cancelled');
    // Nothing runs it while it is held (the worker is free).
    await sleep(1500);
    assert.equal((await httpJson(svc.port, 'GET', `/api/jobs/${id}`, undefined, { Authorization: `Bearer ${userToken}` })).json.state, 'held');
    await Promise.all([page.waitForNavigation(), release.click()]);
    assert.equal(await page.textContent('.flash'), `Released job ${id} to the workers.`);
    await waitFor(`job ${id} done`, async () => (await jobState(page)) === 'done', 30000);
    assert.equal(await page.locator('#jobdetail .actions button', { hasText: 'Release' }).count(), 0, 'no Release once it ran');
    assert.equal(await page.locator('#dependencies').count(), 0, 'no graph for a job without dependencies');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  step('a job submitted with After waits for it; its page draws the graph, which follows the jobs live', async () => {
    const auth = { Authorization: `Bearer ${userToken}` };
    const page = await newPage();
    await login(page, userName, userPass);
    // A malformed After list gets the form back with the reason, as it was typed.
    await page.goto(svc.url('/'));
    await page.fill('input[name=config]', '1');
    await page.fill('input[name=after]', '12, twelve');
    await Promise.all([page.waitForNavigation(), page.click('form[action="/jobs"] button[type=submit]')]);
    assert.match(await page.textContent('.flash.error'), /After: “twelve” is not a job ID/);
    assert.equal(await page.inputValue('input[name=after]'), '12, twelve');
    await page.fill('input[name=after]', '999999');
    await page.check('input[name=hold]');
    await Promise.all([page.waitForNavigation(), page.click('form[action="/jobs"] button[type=submit]')]);
    assert.match(await page.textContent('.flash.error'), /^job 999999 named in after\/after_any is not one of your jobs/);
    assert.equal(await page.inputValue('input[name=after]'), '999999');
    assert.equal(await page.isChecked('input[name=hold]'), true, 'the form comes back as it was sent');

    const held = await submitWith(page, 'mysleep', '1', { hold: true });
    const done = (await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '1' }, auth)).json.id;
    await waitFor(`job ${done} done`, async () => (await httpJson(svc.port, 'GET', `/api/jobs/${done}`, undefined, auth)).json.state === 'done', 30000);
    graphJob = await submitWith(page, 'mysleep', '1', { after: `${held}, ${done}` });
    assert.equal(await rowState(page, graphJob), 'waiting');
    const deps = [];
    for (const [kind, config] of [['after', '2'], ['after_any', '3']]) {
      const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config, [kind]: [graphJob] }, auth);
      assert.equal(r.status, 201, r.text);
      deps.push(r.json.id);
    }

    await page.goto(svc.url(`/jobs/${graphJob}`));
    assert.equal(await jobState(page), 'waiting');
    const section = page.getByRole('region', { name: 'Dependencies' });
    assert.equal(await section.count(), 1);
    assert.equal(await page.textContent('#deps-summary'), `Job ${graphJob} depends on 2 jobs; 2 jobs depend on it.`);
    // Dependencies on the left, the job in the middle, dependents on the right: links with badges and kinds.
    const node = (id) => page.locator(`#depgraph li[data-node="${id}"]`);
    const before = page.getByRole('list', { name: /Depends on/ });
    const after = page.getByRole('list', { name: /Depended on by/ });
    assert.equal(await before.getByRole('listitem').count(), 2);
    assert.equal(await after.getByRole('listitem').count(), 2);
    assert.equal(await before.getByRole('link', { name: `Job ${held}` }).getAttribute('href'), `/jobs/${held}`);
    assert.equal(await node(held).locator('.state').textContent(), 'held');
    assert.equal(await node(done).locator('.state').textContent(), 'done');
    assert.equal(await node(held).locator('.dg-kind').textContent(), 'after');
    assert.equal(await after.getByRole('link', { name: `Job ${deps[0]}` }).getAttribute('href'), `/jobs/${deps[0]}`);
    assert.equal(await node(deps[0]).locator('.state').textContent(), 'waiting');
    assert.equal(await node(deps[1]).locator('.dg-kind').textContent(), 'after_any');
    const box = async (sel) => page.locator(sel).first().boundingBox();
    const [l, m, r] = [await box(`#depgraph li[data-node="${held}"] .dg-node`), await box('#depgraph .dg-self .dg-node'),
      await box(`#depgraph li[data-node="${deps[0]}"] .dg-node`)];
    assert.ok(l.x + l.width < m.x && m.x + m.width < r.x, `left | middle | right: ${JSON.stringify([l, m, r])}`);
    assert.ok(Math.abs((l.y + l.height / 2) - (m.y + m.height / 2)) < 3, 'the first rows line up with the job');
    // The lines: a branch to each node, dashed for after_any.
    const branch = (id) => page.evaluate((n) => {
      const cs = getComputedStyle(document.querySelector(`#depgraph li[data-node="${n}"]`), '::before');
      return `${cs.borderTopWidth} ${cs.borderTopStyle}`;
    }, String(id));
    assert.equal(await branch(deps[0]), '2px solid');
    assert.equal(await branch(deps[1]), '2px dashed');
    await shot(page, 'job-graph');

    // The held job's page (by keyboard: its link, Enter) lists the job that waits for it; released,
    // everything runs, and the graph's badges follow without a reload.
    await page.locator(`#depgraph a[href="/jobs/${held}"]`).focus();
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    assert.equal(new URL(page.url()).pathname, `/jobs/${held}`);
    assert.equal(await page.textContent('#deps-summary'), `1 job depends on job ${held}.`);
    assert.equal(await node(graphJob).locator('.state').textContent(), 'waiting');
    await page.evaluate(() => { window.__noReload = true; });
    await Promise.all([page.waitForNavigation(), page.click('#jobdetail .actions button:has-text("Release")')]);
    await page.evaluate(() => { window.__noReload = true; });
    await waitFor(`job ${graphJob} done in the graph`, async () => (await node(graphJob).locator('.state').textContent()) === 'done', 30000);
    assert.equal(await jobState(page), 'done');
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    for (const id of deps)
      await waitFor(`job ${id} done`, async () => (await httpJson(svc.port, 'GET', `/api/jobs/${id}`, undefined, auth)).json.state === 'done', 30000);
    await page.goto(svc.url(`/jobs/${graphJob}`));
    assert.equal(await node(held).locator('.state').textContent(), 'done');
    assert.equal(await node(deps[1]).locator('.state').textContent(), 'done');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  step("jobs submitted held or waiting through the API appear in the open table at once", async () => {
    const auth = { Authorization: `Bearer ${userToken}` };
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    const create = async (job) => {
      const r = await httpJson(svc.port, 'POST', '/api/jobs', job, auth);
      assert.equal(r.status, 201, r.text);
      return r.json.id;
    };
    const h1 = await create({ jobtype: 'quick', config: '4', hold: true });
    const h2 = await create({ jobtype: 'quick', config: '5', hold: true });
    const w = await create({ jobtype: 'quick', config: '6', after: [h1] });
    for (const [id, st] of [[h1, 'held'], [h2, 'held'], [w, 'waiting']])
      await waitFor(`job ${id} ${st} on the page`, async () => (await rowState(page, id)) === st, STEP_MS);
    const { total } = await apiStates(1);
    const counted = () => page.textContent('#jobcount');
    assert.match(await counted(), new RegExp(` of ${total}$`), 'each new job counted once');
    // Released (here through the API), h1 runs, then w: rows change, nothing is counted again.
    assert.equal((await httpJson(svc.port, 'POST', `/api/jobs/${h1}/release`, {}, auth)).status, 200);
    await waitFor(`job ${w} done`, async () => (await rowState(page, w)) === 'done', 30000);
    assert.equal(await rowState(page, h1), 'done');
    assert.match(await counted(), new RegExp(` of ${total}$`), 'a released job is not a new one');
    // The selection form releases the ticked held job.
    await row(page, h2).getByLabel(`Select job ${h2}`).check();
    await Promise.all([page.waitForNavigation(), page.click('form.bulk button[value=release]')]);
    assert.equal(await page.textContent('.flash'), 'Released 1 job.');
    await waitFor(`job ${h2} done`, async () => (await rowState(page, h2)) === 'done', 30000);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  let arrayFirst;  // the first job of an array (its page is checked by axe-core below)
  step("an array's first job rolls up the array and links to the table of its jobs; a job shows its array and sites", async () => {
    const auth = { Authorization: `Bearer ${userToken}` };
    // Held, so the page sees them all before any runs; released together by the array's ID.
    const made = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'mysleep', config: '{index}', array: 3, hold: true }, auth);
    assert.equal(made.status, 201, made.text);
    const ids = made.json.ids;
    assert.equal(ids.length, 3);
    arrayFirst = made.json.array;
    assert.equal(arrayFirst, ids[0]);
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url(`/jobs/${arrayFirst}`));
    // The first job's page: the roll-up (total, counts per state), live until all three are done.
    const section = page.getByRole('region', { name: 'Array', exact: true });
    assert.equal(await section.count(), 1);
    assert.equal(await page.getAttribute('#array-rollup', 'data-total'), '3');
    assert.equal(await page.textContent('#array-rollup'), '3 jobs, 3 held');
    assert.equal(await page.textContent('#array-member'), `Array ${arrayFirst} (this is its first job), index 0 · the array's jobs`);
    await page.evaluate(() => { window.__noReload = true; });
    const released = await httpJson(svc.port, 'POST', '/api/jobs/actions', { action: 'release', query: `array=${arrayFirst}` }, auth);
    assert.equal(released.status, 200, released.text);
    await waitFor('the roll-up to show the array done', async () => (await page.textContent('#array-rollup')) === '3 jobs, 3 done', 30000);
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    await shot(page, 'job-array');

    // Its link: the jobs table filtered to the array, exactly its three jobs.
    await Promise.all([page.waitForNavigation(), section.getByRole('link', { name: "Show the array's jobs in the jobs table" }).click()]);
    const url = new URL(page.url());
    assert.equal(url.pathname, '/');
    assert.equal(url.searchParams.get('array'), String(arrayFirst));
    const shown = () => page.$$eval('#jobs tbody tr[data-job]', (trs) => trs.map((tr) => Number(tr.dataset.job)));
    assert.deepEqual(await shown(), [...ids].sort((x, y) => y - x));
    assert.equal(await page.textContent('#jobcount'), `Jobs 1–3 of 3 in array ${arrayFirst}`);
    for (const id of ids) assert.equal(await rowState(page, id), 'done');
    // A job made now is none of the array's: it neither enters the table nor is counted.
    const other = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '9' }, auth);
    assert.equal(other.status, 201, other.text);
    await sleep(1500);
    assert.deepEqual(await shown(), [...ids].sort((x, y) => y - x));
    assert.equal(await page.textContent('#jobcount'), `Jobs 1–3 of 3 in array ${arrayFirst}`);
    assert.equal(await page.isHidden('#newjobs'), true);
    // The filter stays with the state menu; Clear drops it.
    await page.selectOption('#state-filter', 'done');
    await page.waitForURL((u) => u.searchParams.get('state') === 'done');
    assert.equal(new URL(page.url()).searchParams.get('array'), String(arrayFirst));
    assert.deepEqual(await shown(), [...ids].sort((x, y) => y - x));
    await Promise.all([page.waitForNavigation(), page.click('#arrayfilter a:has-text("every job")')]);
    assert.equal(new URL(page.url()).searchParams.get('array'), null, 'every job again');
    assert.equal(new URL(page.url()).searchParams.get('state'), 'done', 'the other filters stay');
    await page.goto(svc.url(`/?state=done&array=${arrayFirst}`));
    await Promise.all([page.waitForNavigation(), page.click('a.clear')]);
    assert.equal(new URL(page.url()).search, '', 'Clear drops the array too');
    await page.goto(svc.url(`/?array=${arrayFirst}`));

    // Another job of the array names it and its index, with links to the first job and the table.
    await Promise.all([page.waitForNavigation(), page.click(`#jobs tr[data-job="${ids[2]}"] .c-id a`)]);
    assert.equal(await page.textContent('#array-member'), `Array ${arrayFirst}, index 2 · the array's jobs`);
    assert.equal(await page.getAttribute(`#array-member a[href="/jobs/${arrayFirst}"]`, 'href'), `/jobs/${arrayFirst}`);
    assert.equal(await page.getAttribute('#array-member a:last-child', 'href'), `/?view=all&array=${arrayFirst}`);
    assert.equal(await page.locator('#array').count(), 0, 'the roll-up is on the first job only');

    // A job that asked for sites says which (held: the suite's worker has no site).
    const sited = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '8', hold: true, sites: ['beta', 'alpha'] }, auth);
    assert.equal(sited.status, 201, sited.text);
    await page.goto(svc.url(`/jobs/${sited.json.id}`));
    assert.equal(await page.textContent('#sites'), 'Sites: alpha, beta');
    assert.equal(await page.locator('#array-member').count(), 0);
    assert.equal((await httpJson(svc.port, 'POST', `/api/jobs/${sited.json.id}/cancel`, {}, auth)).status, 200);
    assert.deepEqual(page.errors, []);
    await page.context().close();

    // The admin page's workers have a Site column (empty: the suite's worker has none).
    const admin = await newPage();
    await login(admin, adminName, adminPass);
    await admin.goto(svc.url('/admin'));
    const headers = await admin.$$eval('#workers thead th', (ths) => ths.map((th) => th.textContent));
    assert.deepEqual(headers.slice(0, 4), ['Worker', 'Host', 'Site', 'Owner']);
    assert.equal(await admin.textContent('#workers tbody tr td[data-label="Site"]'), '');
    await admin.context().close();
  });

  step('axe-core: no serious or critical violation on any page, light and dark', async () => {
    // A pending registration, so the admin page shows that table too.
    const reg = await httpJson(svc.port, 'POST', '/api/register', { username: 'dave', password: 'dave-password-1', email: 'dave@example.org' });
    assert.equal(reg.status, 201, reg.text);
    const found = [];
    let checked = 0;
    const check = async (page, what, scheme) => {
      assert.equal(await bodyLuminance(page) < 0.05, scheme === 'dark', `${what} is in the ${scheme} theme`);
      for (const v of await axeViolations(page)) found.push(`[${scheme}] ${what}: ${v}`);
      checked++;
    };
    for (const scheme of ['light', 'dark']) {
      const anon = await newPage(undefined, { colorScheme: scheme });
      await anon.goto(svc.url('/login'));
      await check(anon, '/login', scheme);
      await anon.goto(svc.url('/register'));
      await check(anon, '/register', scheme);
      await anon.context().close();

      const page = await newPage(undefined, { colorScheme: scheme });
      await login(page, userName, userPass);
      await submitJob(page, 'quick', '1');          // the home page with its message
      await check(page, '/ (after a submit)', scheme);
      await page.goto(svc.url(`/jobs/${a}`));
      await check(page, `/jobs/${a}`, scheme);
      await page.goto(svc.url(`/jobs/${graphJob}`));
      await page.locator('#depgraph').waitFor();
      await check(page, `/jobs/${graphJob} (a dependency graph)`, scheme);
      await page.goto(svc.url(`/jobs/${arrayFirst}`));
      await page.locator('#array-rollup').waitFor();
      await check(page, `/jobs/${arrayFirst} (an array's first job)`, scheme);
      await page.goto(svc.url(`/jobs/${a}?logq=e`));
      await page.locator('#logsummary').waitFor();
      await check(page, `/jobs/${a}?logq=e (a log search)`, scheme);
      await page.goto(svc.url('/tokens'));
      await page.fill('input[name=label]', `axe-${scheme}`);
      await Promise.all([page.waitForNavigation(), page.click('form[action="/tokens"] button[type=submit]')]);
      await page.locator('#new-token').waitFor();
      await check(page, '/tokens (a new token)', scheme);
      await page.goto(svc.url('/help'));
      await check(page, '/help', scheme);
      await page.goto(svc.url('/jobs/999999999'));
      await check(page, '/jobs/999999999 (404)', scheme);
      await page.context().close();

      const admin = await newPage(undefined, { colorScheme: scheme });
      await login(admin, adminName, adminPass);
      await admin.goto(svc.url('/admin'));
      await admin.locator('#pending').waitFor();
      await check(admin, '/admin', scheme);
      await admin.context().close();
    }
    process.stdout.write(`# axe-core ${JSON.parse(fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/package.json'), 'utf8')).version}: ${checked} page checks, ${found.length} serious or critical violations\n`);
    assert.deepEqual(found, [], `axe-core found serious or critical violations:\n${found.join('\n')}`);
  });

  // ---- the page under bursts (issue 17) -------------------------------------------------------

  // carol's jobs as the API sees them: id → state, and how many there are (active view).
  async function apiStates(n) {
    const r = await httpJson(svc.port, 'GET', `/api/jobs?limit=${n}&archived=0`, undefined, { Authorization: `Bearer ${userToken}` });
    assert.equal(r.status, 200, r.text);
    return { states: new Map(r.json.jobs.map((j) => [String(j.id), j.state])), total: r.json.total };
  }
  async function bulk(n, jobtype = 'quick') {
    const jobs = Array.from({ length: n }, (_, i) => ({ jobtype, config: String(i) }));
    const r = await httpJson(svc.port, 'POST', '/api/jobs/bulk', { jobs }, { Authorization: `Bearer ${userToken}` });
    assert.equal(r.status, 201, r.text);
  }
  // No job of carol's waits or runs (the state filter looks at her newest 200,000 jobs: all of them).
  async function allEnded() {
    for (const state of ['ready', 'dispatched', 'running']) {
      const r = await httpJson(svc.port, 'GET', `/api/jobs?limit=1&state=${state}`, undefined, { Authorization: `Bearer ${userToken}` });
      assert.equal(r.status, 200, r.text);
      if (r.json.total !== 0) return false;
    }
    return true;
  }
  // Submits one quick job per config (one request each) and waits until they have ended; their IDs.
  async function quickJobs(configs) {
    const ids = [];
    for (const config of configs) {
      const r = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config }, { Authorization: `Bearer ${userToken}` });
      assert.equal(r.status, 201, r.text);
      ids.push(String(r.json.id));
    }
    await waitFor('the quick jobs to end', allEnded, 60000, 250);
    return ids;
  }
  // Every row the page shows, in order: [id, state].
  async function pageRows(page) {
    return page.evaluate(() => Array.from(document.querySelectorAll('#jobs tbody tr[data-job]'),
      (tr) => [tr.dataset.job, tr.querySelector('.c-state .state').textContent]));
  }
  // Waits (bounded) until the page shows exactly the API's newest rows with their states; then
  // asserts it, so a failure prints what differs.
  async function expectPageMatchesApi(page, perPage = 50) {
    let last = null;
    const same = async () => {
      const { states, total } = await apiStates(perPage);
      const rows = await pageRows(page);
      last = { rows, states, total };
      return rows.length === Math.min(perPage, total) &&
        rows.every(([id, st], i) => states.get(id) === st && Array.from(states.keys())[i] === id);
    };
    try { await waitFor('the page to converge to the API', same, 20000, 250); } catch (e) { /* asserted below */ }
    const { rows, states, total } = last;
    const wrong = rows.filter(([id, st]) => states.get(id) !== st).map(([id, st]) => `${id}: page ${st}, API ${states.get(id)}`);
    assert.deepEqual(wrong, [], `rows whose state differs from the API's (${wrong.length})`);
    assert.deepEqual(rows.map((r) => r[0]), Array.from(states.keys()), 'the page shows the newest jobs, newest first');
    assert.equal(await page.textContent('#jobcount'), `Jobs 1–${Math.min(perPage, total)} of ${total}`);
  }
  // Counts the page's requests for rows and its failed requests; records the longest task.
  function watchRequests(page) {
    const seen = { rows: 0, failed: [] };
    page.on('request', (r) => { if (/\/jobs\/(rows\?|\d+\/row)/.test(r.url())) seen.rows++; });
    page.on('requestfailed', (r) => seen.failed.push(`${r.url()} ${r.failure() && r.failure().errorText}`));
    return seen;
  }
  async function watchLongTasks(page) {
    await page.evaluate(() => {
      window.__longest = 0;
      new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
        .observe({ type: 'longtask', buffered: false });
    });
  }

  step('after a burst of 300 jobs every row converges to the state the API reports', async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    const seen = watchRequests(page);
    await bulk(300);
    await waitFor('the burst to end', allEnded, 120000, 250);
    await expectPageMatchesApi(page);
    assert.deepEqual(seen.failed, [], 'no request of the page failed');
    assert.deepEqual(page.errors, []);
    process.stdout.write(`# 300-job burst: ${seen.rows} row requests\n`);
    await page.context().close();
  });

  step('2,000 jobs submitted while the page is open: page size kept, batched fetches, count right', async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    await watchLongTasks(page);
    const seen = watchRequests(page);
    const t0 = performance.now();
    await bulk(1000);
    await bulk(1000);
    await waitFor('the burst to end', allEnded, 300000, 500);
    const ran = performance.now() - t0;
    await expectPageMatchesApi(page);
    assert.deepEqual(seen.failed, [], 'no request of the page failed (e.g. ERR_INSUFFICIENT_RESOURCES)');
    // One request per batch of rows, not one per job: 2,000 jobs make 6,000 events.
    assert.ok(seen.rows < 400, `the page made ${seen.rows} row requests for 2,000 new jobs`);
    assert.deepEqual(page.errors, []);
    const longest = await page.evaluate(() => window.__longest);
    process.stdout.write(`# 2,000-job burst: ran in ${(ran / 1000).toFixed(1)} s, ${seen.rows} row requests, ` +
      `longest main-thread task ${longest.toFixed(0)} ms\n`);

    // A later page counts new jobs instead of showing them, and offers the first page.
    await page.goto(svc.url('/?page=2'));
    assert.match(await page.textContent('#jobcount'), /^Jobs 51–100 of \d+$/);
    await bulk(3);
    await page.locator('#newjobs a', { hasText: '3 new jobs — show' }).waitFor();
    assert.equal((await pageRows(page)).length, 50);
    await waitFor('the burst to end', allEnded, 60000, 250);
    await page.context().close();
  });

  step('pager, count line, state menu, cancel and token forms behave', async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    // The pager's links are readable (WCAG AA: contrast at least 4.5:1 against the card).
    const ratio = await page.evaluate(() => {
      const a = document.querySelector('.pager a');
      const rgb = (c) => c.match(/\d+/g).slice(0, 3).map(Number);
      const lum = (c) => {
        const [r, g, b] = rgb(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const fg = lum(getComputedStyle(a).color), bg = lum(getComputedStyle(a.closest('.card')).backgroundColor);
      return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    });
    assert.ok(ratio >= 4.5, `pager link contrast ${ratio.toFixed(2)}:1`);
    // A page past the end says so and links to the last page.
    const { total } = await apiStates(1);
    await page.goto(svc.url('/?page=999'));
    const lastPage = Math.ceil(total / 50);
    assert.equal(await page.textContent('#jobcount'), `Page 999 is past the end: ${total} jobs. Go to the last page`);
    await Promise.all([page.waitForNavigation(), page.click('#jobcount a')]);
    assert.equal(new URL(page.url()).search, `?page=${lastPage}`);
    assert.match(await page.textContent('#jobcount'), new RegExp(`^Jobs ${(lastPage - 1) * 50 + 1}–${total} of ${total}$`));
    // The state menu has a label; arrows step through it without loading a page, Enter applies.
    await page.goto(svc.url('/'));
    assert.equal(await page.locator('label[for="state-filter"]').count(), 1);
    await page.focus('#state-filter');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await sleep(500);
    assert.equal(new URL(page.url()).search, '', 'arrow keys did not submit the filter');
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    assert.equal(new URL(page.url()).searchParams.get('state'), 'held', 'the second state (waiting, held, ready, ...)');
    // Cancel asks first, as Delete does; dismissing it cancels nothing.
    const sleeper = await submitJob(page, 'mysleep', '600');
    await waitFor(`job ${sleeper} listed`, async () => (await row(page, sleeper).count()) === 1, STEP_MS);
    page.removeAllListeners('dialog');
    let asked = '';
    page.once('dialog', async (d) => { asked = d.message(); await d.dismiss(); });
    await row(page, sleeper).locator('button:has-text("Cancel")').click();
    await sleep(300);
    assert.match(asked, new RegExp(`Cancel job ${sleeper}\\?`));
    const events = await httpJson(svc.port, 'GET', `/api/jobs/${sleeper}/events`, undefined, { Authorization: `Bearer ${userToken}` });
    assert.equal(events.status, 200, events.text);
    assert.ok(!events.text.includes('cancel'), `a dismissed confirmation cancelled nothing: ${events.text}`);
    page.once('dialog', (d) => d.accept());
    await Promise.all([page.waitForNavigation(), row(page, sleeper).locator('button:has-text("Cancel")').click()]);
    await waitFor(`job ${sleeper} cancelled`, async () => (await rowState(page, sleeper)) === 'cancelled', 30000);
    // The same token form posted twice (a reload, a double click) creates one token.
    await page.goto(svc.url('/tokens'));
    const fields = await page.evaluate(() => Object.fromEntries(new FormData(document.querySelector('form[action="/tokens"]'))));
    const count = async () => (await httpJson(svc.port, 'GET', '/api/tokens', undefined, { Authorization: `Bearer ${userToken}` })).json.tokens.length;
    const before = await count();
    fields.label = 'twice';
    const post = () => page.context().request.post(svc.url('/tokens'), { form: fields, headers: { Origin: svc.url('').replace(/\/$/, '') }, maxRedirects: 0 });
    const first = await post();
    assert.equal(first.status(), 200);
    assert.match(await first.text(), /class="newtoken"/);
    const second = await post();
    assert.equal(second.status(), 303);
    assert.equal(await count(), before + 1, 'the second post created no token');
    await page.goto(svc.url('/tokens'));
    assert.match(await page.textContent('.flash'), /already used/);
    // A deleted parent: its children show its ID without a link to a 404.
    const auth = { Authorization: `Bearer ${userToken}` };
    const parent = (await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '1' }, auth)).json.id;
    const child = (await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '2', parent }, auth)).json.id;
    await waitFor('both jobs to end', allEnded, 60000, 100);
    assert.equal((await httpJson(svc.port, 'DELETE', `/api/jobs/${parent}`, undefined, auth)).status, 204);
    await page.goto(svc.url('/'));
    const cell = row(page, child).locator('.c-parent');
    assert.equal(await cell.textContent(), `${parent} (deleted)`);
    assert.equal(await cell.locator('a').count(), 0);
    await page.goto(svc.url(`/jobs/${child}`));
    assert.equal(await page.locator('#fields tr[data-field="parent"] a').count(), 0);
    assert.match(await page.textContent('#fields tr[data-field="parent"] td'), /\(deleted\)/);
    await page.context().close();
  });

  step('find jobs: search, type and sortable headers live in the URL; new jobs under a search are offered', async () => {
    const auth = { Authorization: `Bearer ${userToken}` };
    const ids = await quickJobs(['424241', '424242', '424243']);
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/?view=all'));
    // Search: Enter in the labelled search box; the view goes into the URL.
    await page.getByLabel('Search').fill('42424');
    await Promise.all([page.waitForNavigation(), page.getByLabel('Search').press('Enter')]);
    let url = new URL(page.url());
    assert.equal(url.searchParams.get('q'), '42424');
    assert.equal(url.searchParams.get('view'), 'all');
    assert.deepEqual((await pageRows(page)).map((r) => r[0]), ids.slice().reverse(), 'the matching jobs, newest first');
    assert.equal(await page.textContent('#jobcount'), 'Jobs 1–3 of 3 matching “42424”');
    // A type filter from the URL shows in its menu; a type without such jobs finds none.
    await page.goto(svc.url('/?view=all&q=42424&jobtype=quick'));
    assert.equal(await page.inputValue('#type-filter'), 'quick');
    assert.equal((await pageRows(page)).length, 3);
    await page.goto(svc.url('/?view=all&q=42424&jobtype=mysleep'));
    assert.equal((await pageRows(page)).length, 0);
    assert.match(await page.textContent('#jobcount'), /^No jobs of type mysleep matching “42424”$/);
    // Sortable headers: Duration sorts longest first, again shortest first; aria-sort says which.
    await page.goto(svc.url('/?view=all&q=42424'));
    await Promise.all([page.waitForNavigation(), page.click('th a.sort:has-text("Duration")')]);
    assert.equal(new URL(page.url()).searchParams.get('sort'), '-duration');
    assert.equal(await page.getAttribute('th[aria-sort]', 'aria-sort'), 'descending');
    assert.match(await page.textContent('th[aria-sort]'), /Duration/);
    await Promise.all([page.waitForNavigation(), page.click('th a.sort:has-text("Duration")')]);
    url = new URL(page.url());
    assert.equal(url.searchParams.get('sort'), 'duration');
    assert.equal(url.searchParams.get('q'), '42424', 'sorting keeps the search');
    assert.equal(await page.getAttribute('th[aria-sort]', 'aria-sort'), 'ascending');
    const api = await httpJson(svc.port, 'GET', '/api/jobs?q=42424&sort=duration', undefined, auth);
    assert.equal(api.status, 200, api.text);
    assert.deepEqual((await pageRows(page)).map((r) => r[0]), api.json.jobs.map((j) => String(j.id)), 'the order the API gives');
    // The view survives a reload (it is all in the URL).
    await page.reload();
    assert.equal(await page.inputValue('#q-filter'), '42424');
    assert.equal(await page.getAttribute('th[aria-sort]', 'aria-sort'), 'ascending');
    await shot(page, 'home-find');
    // A new job under a search is not put into the table (the server decides what matches); the
    // page offers to reload the view instead.
    const extra = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '424244' }, auth);
    assert.equal(extra.status, 201, extra.text);
    await page.locator('#newjobs a', { hasText: '1 new job — show' }).waitFor({ timeout: STEP_MS });
    assert.equal((await pageRows(page)).length, 3);
    await waitFor('the new job to end', allEnded, 60000, 250);
    await Promise.all([page.waitForNavigation(), page.click('#newjobs a')]);
    assert.equal((await pageRows(page)).length, 4);
    assert.equal(new URL(page.url()).searchParams.get('q'), '42424');
    // Clear drops the filters and keeps the sort.
    await Promise.all([page.waitForNavigation(), page.click('a.clear')]);
    url = new URL(page.url());
    assert.equal(url.searchParams.get('q'), null);
    assert.equal(url.searchParams.get('sort'), 'duration');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  step('act on many jobs: ticked rows, every row of the page, every match of the view; resubmit one', async () => {
    const auth = { Authorization: `Bearer ${userToken}` };
    const ids = await quickJobs(['515151', '515152', '515153', '515154']);
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/?q=51515'));
    assert.equal((await pageRows(page)).length, 4);
    // Tick two rows and archive them: they leave the active view.
    await row(page, ids[0]).getByLabel(`Select job ${ids[0]}`).check();
    await row(page, ids[1]).getByLabel(`Select job ${ids[1]}`).check();
    await Promise.all([page.waitForNavigation(), page.click('form.bulk button[value=archive]')]);
    assert.equal(await page.textContent('.flash'), 'Archived 2 jobs.');
    assert.deepEqual((await pageRows(page)).map((r) => r[0]), [ids[3], ids[2]]);
    assert.equal(new URL(page.url()).searchParams.get('q'), '51515', 'back to the same view');
    // "Select every job on this page", then Resubmit: two new jobs like them.
    await page.getByLabel('Select every job on this page').check();
    assert.deepEqual(await page.$$eval('#jobs tbody input[name=ids]', (b) => b.map((x) => x.checked)), [true, true]);
    await Promise.all([page.waitForNavigation(), page.click('form.bulk button[value=resubmit]')]);
    assert.equal(await page.textContent('.flash'), 'Resubmitted 2 jobs.');
    const after = await httpJson(svc.port, 'GET', '/api/jobs?q=51515&archived=0', undefined, auth);
    assert.equal(after.json.total, 4);
    assert.deepEqual(after.json.jobs.map((j) => j.config).sort(), ['515153', '515153', '515154', '515154']);
    await waitFor('the resubmitted jobs to end', allEnded, 60000, 250);
    // Every job the view matches (not only this page): delete asks first, then deletes all four.
    await page.reload();
    const asked = page.dialogs.length;
    await page.check('#scope-matching');
    await Promise.all([page.waitForNavigation(), page.click('form.bulk button[value=delete]')]);
    assert.equal(page.dialogs[asked] && page.dialogs[asked].message, 'Delete the selected jobs? This cannot be undone.');
    assert.equal(await page.textContent('.flash'), 'Deleted 4 jobs.');
    assert.equal((await pageRows(page)).length, 0);
    // The archived two were outside the view and are still there; one resubmitted from its row.
    await page.goto(svc.url('/?view=all&q=51515'));
    assert.deepEqual((await pageRows(page)).map((r) => r[0]), [ids[1], ids[0]]);
    await Promise.all([page.waitForNavigation(), page.click(`#jobs tr[data-job="${ids[0]}"] button[aria-label="Resubmit job ${ids[0]}"]`)]);
    assert.match(await page.textContent('.flash'), new RegExp(`^Resubmitted job ${ids[0]} as job \\d+\\.$`));
    // Nothing ticked: the page says so and nothing happens.
    await Promise.all([page.waitForNavigation(), page.click('form.bulk button[value=archive]')]);
    assert.equal(await page.textContent('.flash'), 'No jobs were selected.');
    await shot(page, 'home-bulk');
    await waitFor('the last job to end', allEnded, 60000, 250);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  step("an admin's jobs page shows their own jobs live, not other users'; owner=* shows everyone's with an Owner column", async () => {
    const admin = await newPage();
    await login(admin, adminName, adminPass);
    await admin.goto(svc.url('/'));
    const before = (await pageRows(admin)).length;
    assert.equal(await admin.isVisible('#jobs th:has-text("Owner")'), false, 'no Owner column for one\'s own jobs');
    // carol's new job reaches the admin's event stream but not the admin's own table or count.
    const [id] = await quickJobs(['616161']);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await admin.locator(`#jobs tr[data-job="${id}"]`).count(), 0, "another user's job did not enter the admin's own table");
    assert.equal((await pageRows(admin)).length, before);
    // Everyone's jobs: the Owner column names carol; the filter is in the URL.
    await admin.goto(svc.url('/?view=all&owner=*&q=616161'));
    assert.equal(await admin.inputValue('#owner-filter'), '*');
    assert.equal(await admin.isVisible('#jobs th:has-text("Owner")'), true);
    assert.equal(await admin.textContent(`#jobs tr[data-job="${id}"] .c-owner`), userName);
    // A regular user's owner= is ignored: carol sees her own jobs, and has no Owner field.
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/?owner=root&q=616161'));
    assert.equal(await page.locator('#owner-filter').count(), 0);
    assert.deepEqual((await pageRows(page)).map((r) => r[0]), [id]);
    assert.deepEqual(admin.errors, []);
    await admin.context().close();
    await page.context().close();
  });

  step('eight tabs of one browser all load and stay live on one event stream; another tab takes it over', async () => {
    // A browser opens at most 6 connections to one host; with a stream in every tab the 7th tab
    // never loaded. The tabs now share one stream (Web Lock + BroadcastChannel).
    const streams = async () => {
      const r = await httpJson(svc.port, 'GET', '/metrics');
      return Number(/^descprod_gateway_event_streams (\d+)$/m.exec(r.text)[1]);
    };
    const before = await streams();
    const first = await newPage();
    await login(first, userName, userPass);
    const tabs = [first];
    for (let i = 1; i < 8; i++) {
      const t = await first.context().newPage();
      t.setDefaultTimeout(STEP_MS);
      t.errors = [];
      t.on('pageerror', (e) => t.errors.push(e.message));
      await t.goto(svc.url('/'));
      tabs.push(t);
    }
    await waitFor('one stream for the eight tabs', async () => (await streams()) === before + 1, STEP_MS);
    const auth = { Authorization: `Bearer ${userToken}` };
    const everyTabShows = async (id, open) => {
      for (const t of open)
        await waitFor(`job ${id} done in every tab`, async () => (await rowState(t, id)) === 'done', STEP_MS);
    };
    const a = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '1' }, auth);
    assert.equal(a.status, 201, a.text);
    await everyTabShows(a.json.id, tabs);
    // The tab holding the stream goes: another takes it over from the last event it saw.
    const roles = await Promise.all(tabs.map((t) => t.getAttribute('body', 'data-events')));
    assert.equal(roles.filter((r) => r === 'stream').length, 1, roles.join(','));
    assert.equal(roles.filter((r) => r === 'relayed').length, 7, roles.join(','));
    const holder = roles.indexOf('stream');
    await tabs[holder].close();
    const rest = tabs.filter((_, i) => i !== holder);
    await waitFor('another tab holds the stream', async () =>
      (await Promise.all(rest.map((t) => t.getAttribute('body', 'data-events')))).includes('stream'), STEP_MS);
    const b = await httpJson(svc.port, 'POST', '/api/jobs', { jobtype: 'quick', config: '2' }, auth);
    assert.equal(b.status, 201, b.text);
    await everyTabShows(b.json.id, rest);
    await waitFor('still one stream', async () => (await streams()) === before + 1, STEP_MS);
    for (const t of rest) assert.deepEqual(t.errors, []);
    await first.context().close();
    await waitFor('the stream closed with the tabs', async () => (await streams()) === before, STEP_MS);
  });

  step('the header shows each site\'s status as the daemon last polled it (GET /api/sites)', async () => {
    // The records as the daemon writes them (tests/e2e/site_status_test.cpp polls real answers).
    const now = Date.now() / 1000;
    const rec = (name, status, description, error) => JSON.stringify({ name, url: `http://127.0.0.1:9/${name}`, status,
      full_name: name.toUpperCase(), description, notes: '', updated_at: '2026-12-07T10:00:00-08:00',
      checked: now, good_at: now - 30, error });
    await svc.redis.cmd('HSET', 'descprod:sites:status', 'alpha', rec('alpha', 'active', 'System available.', ''),
      'beta', rec('beta', 'down', '<b>Scheduled</b> maintenance.', 'HTTP status 503'));
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    const badges = page.locator('#site-status .site-badge');
    await waitFor('two site badges', async () => (await badges.count()) === 2, STEP_MS);
    assert.equal(await badges.nth(0).textContent(), 'alpha: active');
    assert.equal(await badges.nth(0).getAttribute('data-status'), 'active');
    assert.equal(await badges.nth(1).textContent(), 'beta: down');
    assert.equal(await badges.nth(1).getAttribute('data-status'), 'down');
    const title = await badges.nth(1).getAttribute('title');
    assert.match(title, /<b>Scheduled<\/b> maintenance\./, 'the description, as text');
    assert.match(title, /reported 3\d s ago/);
    assert.match(title, /last check failed: HTTP status 503/);
    assert.equal(await page.locator('#site-status b').count(), 0, 'no markup from a site is rendered');
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.locator('header').screenshot({ path: path.join(SHOTS, 'header-sites.png') });
    await page.context().close();
    const admin = await newPage();
    await login(admin, adminName, adminPass);
    await admin.goto(svc.url('/admin'));
    await waitFor('the admin page\'s site badges', async () => (await admin.locator('#site-status .site-badge').count()) === 2, STEP_MS);
    await admin.context().close();
    await svc.redis.cmd('DEL', 'descprod:sites:status');
  });

  step('a Redis outage shows on the open page, and the page is live again after it', async () => {
    const page = await newPage();
    await login(page, userName, userPass);
    await page.goto(svc.url('/'));
    await waitFor('the live badge', async () => (await page.getAttribute('#live', 'data-status')) === 'on', STEP_MS);
    await svc.restartRedis(async () => {
      await waitFor('the outage badge', async () => (await page.getAttribute('#live', 'data-status')) === 'outage', STEP_MS, 50);
      assert.equal(await page.textContent('#live'), 'service outage');
      await shot(page, 'home-outage');
    });
    await waitFor('the live badge again', async () => (await page.getAttribute('#live', 'data-status')) === 'on', 60000, 100);
    assert.equal(await page.textContent('#live'), 'live');
    await page.context().close();
  });
});
