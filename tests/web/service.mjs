// The browser suite's service driver: a whole DESCprod service on this machine — redis-server on a
// unix socket, descprod-daemon, descprod-gateway (random port) and one descprod-worker — started
// from DESCPROD_BIN_DIR in a temporary directory and stopped by PID. Every wait has a deadline.
// Also a minimal RESP client (for direct Redis writes) and helpers for descprod-admin.
import { spawn, execFile } from 'node:child_process';
import { it } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';

export const BIN_DIR = process.env.DESCPROD_BIN_DIR || path.resolve('../../build/bin');
export const SOURCE_DIR = process.env.DESCPROD_SOURCE_DIR || path.resolve('../..');

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Polls fn (sync or async) every `poll` ms until it returns a truthy value; throws after `ms`.
export async function waitFor(what, fn, ms = 15000, poll = 25) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}` + (last ? `: ${last.message}` : ''));
    await sleep(poll);
  }
}

// ---- a minimal RESP client -------------------------------------------------------------------

export class Redis {
  static connect(socketPath, ms = 5000) {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(socketPath);
      const timer = setTimeout(() => { sock.destroy(); reject(new Error('redis connect timeout')); }, ms);
      sock.once('connect', () => { clearTimeout(timer); resolve(new Redis(sock)); });
      sock.once('error', (e) => { clearTimeout(timer); reject(e); });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.drain(); });
    sock.on('error', (e) => { for (const w of this.waiting.splice(0)) w.reject(e); });
  }

  // Sends one command; resolves with its reply (Error objects for error replies are thrown).
  cmd(...args) {
    let out = `*${args.length}\r\n`;
    for (const a of args) {
      const b = Buffer.from(String(a));
      out += `$${b.length}\r\n${b.toString('binary')}\r\n`;
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.sock.write(Buffer.from(out, 'binary'));
    });
  }

  drain() {
    for (;;) {
      const r = this.parse(0);
      if (!r) return;
      this.buf = this.buf.subarray(r.end);
      const w = this.waiting.shift();
      if (!w) continue;
      if (r.value instanceof Error) w.reject(r.value); else w.resolve(r.value);
    }
  }

  parse(at) {
    const nl = this.buf.indexOf('\r\n', at);
    if (nl < 0) return null;
    const type = String.fromCharCode(this.buf[at]);
    const line = this.buf.toString('utf8', at + 1, nl);
    const next = nl + 2;
    if (type === '+') return { value: line, end: next };
    if (type === '-') return { value: new Error(line), end: next };
    if (type === ':') return { value: Number(line), end: next };
    if (type === '$') {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (this.buf.length < next + n + 2) return null;
      return { value: this.buf.toString('utf8', next, next + n), end: next + n + 2 };
    }
    if (type === '*') {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const items = [];
      let pos = next;
      for (let i = 0; i < n; i++) {
        const r = this.parse(pos);
        if (!r) return null;
        items.push(r.value);
        pos = r.end;
      }
      return { value: items, end: pos };
    }
    throw new Error('bad RESP type ' + type);
  }

  close() { this.sock.destroy(); }
}

// ---- processes --------------------------------------------------------------------------------

class child {
  constructor(name, argv, env, logFile) {
    this.name = name;
    const fd = fs.openSync(logFile, 'a');
    this.proc = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, sig) => resolve({ code, sig })));
    this.proc.once('error', () => {});
  }

  get pid() { return this.proc.pid; }
  get running() { return this.proc.exitCode === null && this.proc.signalCode === null; }

  // SIGTERM by PID, then SIGKILL when it has not exited within `ms`.
  async stop(ms = 10000) {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const t = await Promise.race([this.exited, sleep(ms).then(() => null)]);
    if (t === null && this.running) {
      this.proc.kill('SIGKILL');
      await Promise.race([this.exited, sleep(5000)]);
    }
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// GET http://127.0.0.1:port/path → {status, body}; 5 s deadline.
export function httpGet(port, p, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// A JSON request; resolves {status, json, headers}.
export function httpJson(port, method, p, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? '' : JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port, path: p, method, timeout: 10000,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data), ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        resolve({ status: res.statusCode, json, headers: res.headers, text });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(data);
  });
}

// Debian's chromium, headless (DESCPROD_CHROMIUM overrides the path); `extra` adds flags.
export function launchChromium(chromium, extra = []) {
  return chromium.launch({
    executablePath: process.env.DESCPROD_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', ...extra],
  });
}

// A suite's steps: `steps.step(name, fn)` is an it() that records a failure in `steps.failed`
// (the suite then keeps its service's logs: svc.stop(steps.failed)).
export function stepTracker() {
  const t = { failed: false };
  t.step = (name, fn) => it(name, async () => {
    try { await fn(); } catch (e) { t.failed = true; throw e; }
  });
  return t;
}

export class Service {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'descprod-web-'));
    this.sock = path.join(this.dir, 'redis.sock');
    this.config = path.join(this.dir, 'descprod.yaml');
    this.procs = {};
    this.port = 0;
  }

  bin(name) { return path.join(BIN_DIR, name); }

  env() {
    return { ...process.env, PATH: `${path.join(SOURCE_DIR, 'apps')}:${BIN_DIR}:${process.env.PATH}` };
  }

  writeConfig() {
    const d = this.dir;
    fs.mkdirSync(path.join(d, 'out'), { recursive: true });
    fs.writeFileSync(path.join(d, 'apps.yaml'), `apps:
  - name: mysleep
    help: "Sleeps for CONFIG seconds, reporting \\"I'm sleeping for N seconds.\\" then \\"I'm awake now.\\" (DESCprod's example)."
    pattern: "^[0-9]{1,6}$"
  - name: parsltest
    help: "Runs many sleep tasks in parallel, e.g. sleep-ttsk2-ntsk20-nwrk4."
    pattern: "^[a-z0-9:-]+$"
  - name: quick
    help: "Exits at once (the burst tests)."
    pattern: "^[0-9]{1,6}$"
    command: ["/bin/true"]
    args: []
  - name: xss
    help: "Writes markup to its status and log (a test of the pages' escaping)."
    command: ["/bin/sh", "-c", "echo '<script>alert(1)</script>' > current-status.txt; echo '<script>alert(2)</script> in the log'; sleep 1"]
    args: []
`);
    fs.writeFileSync(this.config, `log_level: info
apps: ${path.join(d, 'apps.yaml')}
redis:
  path: ${this.sock}
gateway:
  address: 127.0.0.1
  port: 0
  daemon_endpoint: ipc://${path.join(d, 'gw.ipc')}
  password_opslimit: 1
  password_memlimit_kib: 8
  session_ttl_s: 3600
  sites: [alpha, beta]
daemon:
  worker_endpoint: ipc://${path.join(d, 'w.ipc')}
  gateway_endpoint: ipc://${path.join(d, 'gw.ipc')}
  heartbeat_interval_ms: 200
  lease_timeout_ms: 3000
  worker_auth: open  # worker tokens are tested in tests/e2e/auth_test.cpp
worker:
  daemon_endpoint: ipc://${path.join(d, 'w.ipc')}
  output_dir: ${path.join(d, 'out')}
  status_poll_ms: 100
  slots: 1
  kill_grace_s: 1
`);
  }

  async start() {
    this.writeConfig();
    await this.startRedis();
    this.procs.daemon = new child('daemon', [this.bin('descprod-daemon'), '--config', this.config], this.env(),
      path.join(this.dir, 'daemon.log'));
    await this.startGateway();
    // The jobs' login shells read an empty profile, not the machine's (tests/support/service.cpp
    // says why).
    const home = path.join(this.dir, 'home');
    fs.mkdirSync(home, { recursive: true });
    this.procs.worker = new child('worker', [this.bin('descprod-worker'), '--config', this.config, '--id', 'w0'],
      { ...this.env(), HOME: home }, path.join(this.dir, 'worker.log'));
    await waitFor('the worker to register', async () => (await this.redis.cmd('KEYS', 'descprod:worker:*')).length > 0, 20000, 100);
  }

  async startRedis() {
    this.procs.redis = new child('redis', ['redis-server', '--port', '0', '--unixsocket', this.sock,
      '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', this.dir],
    process.env, path.join(this.dir, 'redis.log'));
    this.redis = await waitFor('redis-server', async () => {
      const r = await Redis.connect(this.sock);
      if ((await r.cmd('PING')) === 'PONG') return r;
      r.close();
      return null;
    }, 10000, 50);
  }

  // A Redis outage: saves the data set, stops redis-server, awaits during(), then starts it again
  // on the same socket with the saved data.
  async restartRedis(during) {
    const saved = await this.redis.cmd('SAVE');
    if (saved !== 'OK') throw new Error(`redis SAVE answered ${saved}`);
    this.redis.close();
    await this.procs.redis.stop();
    try {
      await during();
    } finally {
      await this.startRedis();
    }
  }

  // Starts the gateway (again): on the same port as before when there was one.
  async startGateway() {
    const portFile = path.join(this.dir, 'gateway.port');
    fs.rmSync(portFile, { force: true });
    const argv = [this.bin('descprod-gateway'), '--config', this.config, '--port-file', portFile];
    if (this.port) argv.push('--port', String(this.port));
    this.procs.gateway = new child('gateway', argv, this.env(), path.join(this.dir, 'gateway.log'));
    const text = await waitFor('the gateway port file', () => {
      if (!this.procs.gateway.running) throw new Error('the gateway exited: ' + this.log('gateway'));
      return fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim();
    }, 20000);
    this.port = Number(text);
    await waitFor('/readyz', async () => (await httpGet(this.port, '/readyz')).status === 200, 20000, 50);
  }

  async restartGateway() {
    await this.procs.gateway.stop();
    await this.startGateway();
  }

  url(p = '/') { return `http://127.0.0.1:${this.port}${p}`; }

  admin(...args) {
    return new Promise((resolve, reject) => {
      execFile(this.bin('descprod-admin'), ['--config', this.config, ...args], { timeout: 10000 },
        (err, stdout, stderr) => (err ? reject(new Error(`descprod-admin ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout)));
    });
  }

  // A user registered, approved and given an API token (the benches' users):
  // {name, password, auth: {Authorization}}.
  async approvedUser(name) {
    const password = `${name}-password-1`;
    const r = await httpJson(this.port, 'POST', '/api/register', { username: name, password, email: `${name}@example.org` });
    if (r.status !== 201) throw new Error(`register ${name}: ${r.status} ${r.text}`);
    await this.admin('approve', name);
    const token = (await this.admin('token', name)).trim();
    return { name, password, auth: { Authorization: `Bearer ${token}` } };
  }

  log(name) {
    try { return fs.readFileSync(path.join(this.dir, `${name}.log`), 'utf8'); } catch (e) { return ''; }
  }

  async stop(keep = false) {
    if (this.redis) this.redis.close();
    for (const name of ['worker', 'gateway', 'daemon', 'redis']) {
      if (this.procs[name]) await this.procs[name].stop();
    }
    if (keep) {
      for (const name of ['gateway', 'daemon', 'worker']) {
        const s = this.log(name);
        process.stderr.write(`---- ${name}.log (tail)\n${s.slice(-3000)}\n`);
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export { freePort };
