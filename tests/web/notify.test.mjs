// Browser tests of notifications (docs/web.md#notifications): Debian's chromium driven by
// playwright-core against the real service (service.mjs), with an application that fails added.
// The notifications permission is granted to the browser context, and an init script wraps
// window.Notification so that every notification the page makes is recorded (title, body, tag)
// and can be clicked. Checked: the permission is asked only on the button's click; a failing and
// a succeeding job of one's own each give one notification with the job's type, state and link;
// another user's job gives none; a burst of 40 gives a bounded number, whose single ones and
// summaries add up to 40; a second tab stays silent; the e-mail preference form; axe-core.
//
// Run: node --test tests/web/notify.test.mjs (ctest -L web does, with the paths set).
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { Service, launchChromium, stepTracker, waitFor, httpJson, sleep } from './service.mjs';

const STEP_MS = 20000;
const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

// The suite's service plus an application that fails (exit 3).
class NotifyService extends Service {
  writeConfig() {
    super.writeConfig();
    fs.appendFileSync(path.join(this.dir, 'apps.yaml'), `  - name: fail
    help: "Exits 3 (the notification tests)."
    command: ["/bin/sh", "-c", "echo 'it broke' > current-status.txt; exit 3"]
    args: []
`);
  }
}

let svc, browser, context;
const steps = stepTracker();
const user = 'dave', pass = 'dave-password-1';
let token = '', otherToken = '';

function recorder() {
  window.__notes = [];
  window.__asked = 0;
  const Real = window.Notification;
  class Recorded {
    constructor(title, options) {
      this.title = title;
      window.__notes.push({ title, body: (options && options.body) || '', tag: (options && options.tag) || '' });
      (window.__instances = window.__instances || []).push(this);
    }
    close() {}
    static get permission() { return Real ? Real.permission : 'default'; }
    static requestPermission() {
      window.__asked++;
      return Real ? Real.requestPermission() : Promise.resolve('denied');
    }
  }
  window.Notification = Recorded;
}

async function api(method, p, body, t = token) {
  return httpJson(svc.port, method, p, body, { Authorization: `Bearer ${t}` });
}
async function submit(jobtype, config, t = token) {
  const r = await api('POST', '/api/jobs', { jobtype, config, howfig: '' }, t);
  assert.equal(r.status, 201, r.text);
  return JSON.parse(r.text).id;
}
async function ended(id, t = token) {
  return waitFor(`job ${id} to end`, async () => {
    const r = await api('GET', `/api/jobs/${id}`, undefined, t);
    const s = JSON.parse(r.text).state;
    return ['done', 'failed', 'timeout', 'killed', 'cancelled', 'lost'].includes(s) ? s : null;
  }, 60000, 100);
}
async function notes(page) { return page.evaluate(() => window.__notes.slice()); }
async function live(page) {
  await waitFor('the live badge', async () => (await page.getAttribute('#live', 'data-status')) === 'on', STEP_MS, 50);
}

describe('notifications in a real browser', { timeout: 300000 }, () => {
  before(async () => {
    svc = new NotifyService();
    await svc.start();
    browser = await launchChromium(chromium);
    for (const [name, email] of [[user, 'dave@example.org'], ['erin', 'erin@example.org']]) {
      const r = await httpJson(svc.port, 'POST', '/api/register', { username: name, password: pass, email });
      assert.equal(r.status, 201, r.text);
      await svc.admin('approve', name);
    }
    token = (await svc.admin('token', user)).trim();
    otherToken = (await svc.admin('token', 'erin')).trim();
    context = await browser.newContext({ viewport: { width: 1400, height: 900 }, locale: 'en-US', permissions: ['notifications'] });
    await context.addInitScript(recorder);
  });

  after(async () => {
    if (browser) await browser.close();
    if (svc) await svc.stop(steps.failed);
  });

  const { step } = steps;

  let page;
  step('opting in asks for the permission only on the click', async () => {
    page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    await page.goto(svc.url('/login'));
    await page.fill('input[name=username]', user);
    await page.fill('input[name=password]', pass);
    await Promise.all([page.waitForNavigation(), page.click('form[action="/login"] button[type=submit]')]);
    const toggle = page.locator('#notify-toggle');
    await toggle.waitFor({ state: 'visible' });
    assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
    assert.equal(await page.evaluate(() => window.__asked), 0, 'asked for permission before the click');
    await toggle.click();
    await waitFor('the toggle to say on', async () => (await toggle.getAttribute('aria-pressed')) === 'true', STEP_MS, 20);
    assert.equal(await page.evaluate(() => window.__asked), 1);
    assert.equal(await page.evaluate(() => localStorage.getItem('descprod-notify')), '1');
  });

  step('one notification per own job that ends, none for another user\'s; a click opens the job', async () => {
    await live(page);
    const bad = await submit('fail', 'x');
    const good = await submit('quick', '1');
    assert.equal(await ended(bad), 'failed');
    assert.equal(await ended(good), 'done');
    const got = await waitFor('two notifications', async () => { const n = await notes(page); return n.length >= 2 ? n : null; });
    const byTag = Object.fromEntries(got.map((n) => [n.tag, n]));
    assert.equal(byTag[`descprod-job-${bad}`].title, `Job ${bad} fail: failed`);
    assert.match(byTag[`descprod-job-${bad}`].body, /it broke/);
    assert.equal(byTag[`descprod-job-${good}`].title, `Job ${good} quick: done`);
    // Another user's job ends: nothing.
    const theirs = await submit('fail', 'x', otherToken);
    await ended(theirs, otherToken);
    await sleep(1500);
    assert.equal((await notes(page)).length, 2, JSON.stringify(await notes(page)));
    // A click on a notification opens its job.
    await Promise.all([page.waitForNavigation(), page.evaluate((tag) => {
      const n = window.__instances.find((x) => window.__notes[window.__instances.indexOf(x)].tag === tag);
      n.onclick();
    }, `descprod-job-${bad}`)]);
    assert.equal(new URL(page.url()).pathname, `/jobs/${bad}`);
  });

  step('a burst of 40 jobs ending gives a bounded number of notifications that count every job', async () => {
    await page.goto(svc.url('/'));
    await live(page);
    const jobs = Array.from({ length: 40 }, () => ({ jobtype: 'quick', config: '1' }));
    const r = await api('POST', '/api/jobs/bulk', { jobs });
    assert.equal(r.status, 201, r.text);
    const ids = JSON.parse(r.text).ids;
    for (const id of ids) await ended(id);
    // Wait for the last summary (a window is 5 s).
    await sleep(6000);
    const got = await notes(page);
    const singles = got.filter((n) => n.tag.startsWith('descprod-job-'));
    const summaries = got.filter((n) => n.tag === 'descprod-more');
    let counted = singles.length;
    for (const s of summaries) counted += Number(/^(\d+) more jobs? ended$/.exec(s.title)[1]);
    process.stdout.write(`# burst of 40: ${singles.length} single notifications, ${summaries.length} summaries\n`);
    assert.equal(counted, 40, JSON.stringify(got));
    assert.ok(singles.length <= 3, `${singles.length} single notifications`);
    assert.ok(summaries.length >= 1 && got.length <= 12, JSON.stringify(got));
  });

  step('a second tab of the same browser stays silent', async () => {
    await page.goto(svc.url('/'));
    await live(page);
    const second = await context.newPage();
    await second.goto(svc.url('/'));
    await live(second);
    await sleep(2500);  // past the leader's renewal
    const id = await submit('quick', '1');
    await ended(id);
    await sleep(1500);
    const a = await notes(page), b = await notes(second);
    assert.equal(a.length + b.length, 1, `first tab ${JSON.stringify(a)}, second ${JSON.stringify(b)}`);
    await second.close();
  });

  step('the e-mail preference form on the tokens page; axe-core clean', async () => {
    await page.goto(svc.url('/tokens'));
    const box = page.locator('#email-on-failure');
    assert.equal(await box.isChecked(), false);
    assert.match(await page.textContent('#notifications'), /dave@example\.org/);
    await box.check();
    await Promise.all([page.waitForNavigation(), page.click('form[action="/tokens/preferences"] button[type=submit]')]);
    assert.match(await page.textContent('.flash'), /E-mail on failure is on/);
    assert.equal(await page.locator('#email-on-failure').isChecked(), true);
    const s = JSON.parse((await api('GET', '/api/session')).text);
    assert.equal(s.email_on_failure, true);
    if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    assert.deepEqual(bad, []);
    await page.locator('#email-on-failure').uncheck();
    await Promise.all([page.waitForNavigation(), page.click('form[action="/tokens/preferences"] button[type=submit]')]);
    assert.match(await page.textContent('.flash'), /E-mail on failure is off/);
    assert.equal(JSON.parse((await api('GET', '/api/session')).text).email_on_failure, false);
    // The header button turns browser notifications off again.
    await page.click('#notify-toggle');
    assert.equal(await page.getAttribute('#notify-toggle', 'aria-pressed'), 'false');
  });
});
