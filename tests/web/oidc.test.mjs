// Browser tests of the OpenID Connect login (docs/web.md, "Logging in with your institution's
// identity"): Debian's chromium driven by playwright-core against the real service (service.mjs)
// with a real provider, Debian's glewlwyd, started by tests/oidc/provider.sh on loopback. The
// browser follows every redirect itself (to the provider, back to the callback, on to /). At the
// provider, the person's part (its login form and consent) goes through glewlwyd's own API from
// the browser context's request client, which shares the browser's cookies: the flow's cookies
// and redirects are the browser's. Checked: the login page's button; a first login makes a pending
// account; once an administrator approves it, a login lands on the home page logged in (the
// session cookie is SameSite=Strict, so this also shows the callback's same-site hop to / works);
// a replayed callback opens nothing; axe-core on the login page; the login page's screenshot
// (docs/screenshots/login-oidc.png).
//
// Run: node --test tests/web/oidc.test.mjs (ctest -L web does, with the paths set).
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { Service, SOURCE_DIR, launchChromium, stepTracker, waitFor } from './service.mjs';

const STEP_MS = 20000;
const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const SHOTS = process.env.DESCPROD_SCREENSHOT_DIR || path.join(SOURCE_DIR, 'build', 'web-screenshots');
const PROVIDER = path.join(SOURCE_DIR, 'tests', 'oidc', 'provider.sh');

function provider(...args) {
  return execFileSync(PROVIDER, args, { encoding: 'utf8', timeout: 60000, stdio: ['ignore', 'pipe', 'pipe'] });
}

// The suite's service with glewlwyd as a login provider (gateway.oidc).
class OidcService extends Service {
  writeConfig() {
    super.writeConfig();
    const out = provider('start', path.join(this.dir, 'provider'));
    this.issuer = out.match(/^OIDC_ISSUER=(.*)$/m)[1];
    this.env_ = Object.fromEntries(fs.readFileSync(path.join(this.dir, 'provider', 'provider.env'), 'utf8')
      .split('\n').filter((l) => /^OIDC_[A-Z0-9_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^'(.*)'$/, '$1')]));
    fs.writeFileSync(path.join(this.dir, 'oidc-secret'), `${this.env_.OIDC_CLIENT_SECRET}\n`);
    const text = fs.readFileSync(this.config, 'utf8').replace('  sites: [alpha, beta]\n', `  sites: [alpha, beta]
  oidc:
    - name: glewlwyd
      issuer: ${this.issuer}
      client_id: ${this.env_.OIDC_CLIENT_ID}
      client_secret_file: ${path.join(this.dir, 'oidc-secret')}
      button_label: Log in with Glewlwyd
`);
    fs.writeFileSync(this.config, text);
  }

  async start() {
    await super.start();
    provider('redirect', path.join(this.dir, 'provider'), this.url('/login/oidc/callback'));
  }

  async stop(keep = false) {
    try { provider('stop', path.join(this.dir, 'provider')); } catch (e) { process.stderr.write(`provider stop: ${e.message}\n`); }
    await super.stop(keep);
  }
}

let svc, browser;
const steps = stepTracker();

async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

// From /login, the provider's button; at the provider, alice logs in and consents (when it asks);
// resolves once the browser is back on this service's origin.
async function loginWithProvider(page, user = 'alice', password = 'alice-password') {
  await page.goto(svc.url('/login'));
  await page.click('a.oidc-login');
  const origin = new URL(svc.url('/')).origin;
  const providerOrigin = new URL(svc.issuer).origin;
  await waitFor('the provider or this service', async () => {
    const u = new URL(page.url());
    return u.origin === providerOrigin || u.origin === origin;
  }, STEP_MS, 50);
  const at = new URL(page.url());
  if (at.origin === providerOrigin) {
    // glewlwyd's login page: its callback_url is the authorization request to resume.
    const callback = at.searchParams.get('callback_url');
    assert.ok(callback, `the provider's login page has a callback_url: ${page.url()}`);
    const api = svc.env_.OIDC_API_URL;
    const request = page.context().request;
    let r = await request.post(`${api}/auth/`, { data: { username: user, password } });
    assert.equal(r.status(), 200, await r.text());
    r = await request.put(`${api}/auth/grant/${svc.env_.OIDC_CLIENT_ID}`, { data: { scope: 'openid profile email' } });
    assert.equal(r.status(), 200, await r.text());
    // As glewlwyd's page does on "continue": a navigation its own document starts, so the way
    // back to this service is a cross-site one, as in real life (page.goto would be the browser's
    // own navigation, to which every cookie goes).
    await page.evaluate((u) => { window.location.assign(u); }, `${callback}&g_continue`);
  }
  await waitFor('this service again', async () => new URL(page.url()).origin === origin, STEP_MS, 50);
}

describe('OpenID Connect login in a real browser', { timeout: 300000 }, () => {
  before(async () => {
    svc = new OidcService();
    await svc.start();
    browser = await launchChromium(chromium);
  });

  after(async () => {
    if (browser) await browser.close();
    if (svc) await svc.stop(steps.failed);
  });

  const { step } = steps;

  step('the login page offers the provider; axe-core finds nothing serious; screenshot', async () => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, locale: 'en-US' });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    await page.goto(svc.url('/login'));
    const button = page.locator('a.oidc-login');
    assert.equal(await button.textContent(), 'Log in with Glewlwyd');
    assert.equal(await button.getAttribute('href'), '/login/oidc/glewlwyd');
    assert.equal(await page.locator('form[action="/login"] input[name=password]').count(), 1, 'the password form stays');
    assert.deepEqual(await axeViolations(page), []);
    fs.mkdirSync(SHOTS, { recursive: true });
    const file = path.join(SHOTS, 'login-oidc.png');
    await page.screenshot({ path: file, fullPage: true });
    fs.copyFileSync(file, path.join(SOURCE_DIR, 'docs', 'screenshots', 'login-oidc.png'));
    await context.close();
  });

  step('a first login makes a pending account and opens no session; a replay of its callback opens nothing', async () => {
    const context = await browser.newContext({ locale: 'en-US' });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    let callbackUrl = '';
    page.on('request', (r) => { if (r.url().includes('/login/oidc/callback')) callbackUrl = r.url(); });
    await loginWithProvider(page);
    assert.match(await page.textContent('main'), /Welcome, alice: your account is made and waits for an administrator's approval/);
    assert.equal((await context.cookies()).filter((c) => c.name === 'descprod_session').length, 0);
    assert.equal(await svc.redis.cmd('HGET', 'descprod:user:alice', 'status'), 'pending');
    // The same callback again (the browser's back-and-reload): refused, no session.
    assert.ok(callbackUrl, 'the browser came back through the callback');
    const again = await page.goto(callbackUrl);
    assert.equal(again.status(), 400);
    assert.match(await page.textContent('main'), /expired or was used already/);
    assert.equal((await context.cookies()).filter((c) => c.name === 'descprod_session').length, 0);
    // /login/oidc/callback is a page: / still sends to the login.
    await page.goto(svc.url('/'));
    assert.equal(new URL(page.url()).pathname, '/login');
    await context.close();
  });

  step('approved, the next login lands on the home page logged in, and logs out', async () => {
    await svc.admin('approve', 'alice');
    const context = await browser.newContext({ locale: 'en-US' });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    await loginWithProvider(page);
    await waitFor('the home page', async () => new URL(page.url()).pathname === '/' && (await page.locator('#jobs, form[action="/jobs"]').count()) > 0, STEP_MS, 50);
    assert.match(await page.textContent('nav'), /alice/);
    const session = (await context.cookies()).find((c) => c.name === 'descprod_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.sameSite, 'Strict');
    assert.equal(session.httpOnly, true);
    assert.equal((await context.cookies()).filter((c) => c.name === 'descprod_oidc' && c.value).length, 0, 'the state cookie is gone');
    await Promise.all([page.waitForNavigation(), page.click('nav form[action="/logout"] button[type=submit]')]);
    assert.equal(new URL(page.url()).pathname, '/login');
    await context.close();
  });
});
