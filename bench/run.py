#!/usr/bin/env python3
"""bench/run.py: the measurements behind scripts/bench (run that; it installs and builds first).

Every figure is measured in this run, next to its baseline where one exists. Each phase starts
its own private service (redis-server on a unix socket, descprod-daemon, descprod-gateway on a
free loopback port, and real or simulated workers) in a scratch directory, and stops every
process it started by PID. Results: one table on stdout, docs/perf/results.csv, PNG plots.
"""
import argparse, http.client, json, os, platform, resource, shutil, signal, socket, statistics
import subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.cpu_count() or 1
PUBLISHED = [  # (name, tasks/s) from the issue: published figures of peer systems (not measured here)
    ('Parsl pilot (published)', 1181), ('RADICAL-Pilot+Flux (published)', 1500),
    ('Slurm tuned (published)', 500), ('Flux (published)', 150)]


def log(*a):
    print('[bench %s]' % time.strftime('%H:%M:%S'), *a, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 20, 262144, 65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard) if want > hard else hard))
            return
        except (ValueError, OSError):
            continue


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float('nan')
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def cpu_ticks(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def dirty_mb():
    """Dirty + Writeback of /proc/meminfo, in MB: file data the kernel has yet to write to disk."""
    kb = 0
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith(('Dirty:', 'Writeback:')):
                kb += int(line.split()[1])
    return kb / 1024.0


def rss_mb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


class Procs:
    """Every process the bench starts, stopped by PID (TERM, then KILL after a grace)."""

    def __init__(self):
        self.live = []

    def start(self, argv, logfile, **kw):
        out = open(logfile, 'ab')
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        out.close()
        self.live.append(p)
        return p

    def stop(self, p, grace=10.0):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in reversed(list(self.live)):
            self.stop(p, 5.0)


PROCS = Procs()


class Redis:
    def __init__(self, d, name='redis', appendonly=True, extra=()):
        self.sock = os.path.join(d, name + '.sock')
        argv = ['redis-server', '--port', '0', '--unixsocket', self.sock, '--unixsocketperm', '700', '--dir', d,
                '--save', '', '--daemonize', 'no', '--appendfilename', name + '.aof',
                '--stream-node-max-bytes', '512']  # as scripts/descprod-up runs it (docs/operators.md)
        argv += ['--appendonly', 'yes', '--appendfsync', 'everysec'] if appendonly else ['--appendonly', 'no']
        argv += list(extra)
        import redis as redis_py  # before the server starts: a missing module must not leave it running
        self.argv, self.logfile = argv, os.path.join(d, name + '.log')
        self.proc = PROCS.start(argv, self.logfile)
        self.r = redis_py.Redis(unix_socket_path=self.sock, decode_responses=True)
        for _ in range(200):
            try:
                if self.r.ping():
                    return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError('redis-server did not start: ' + d)

    def stop(self):
        self.r.close()
        PROCS.stop(self.proc)

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc in PROCS.live:
            PROCS.live.remove(self.proc)

    def restart(self):
        self.proc = PROCS.start(self.argv, self.logfile)


def free_port():
    with socket.socket() as so:
        so.bind(('127.0.0.1', 0))
        return so.getsockname()[1]


class Sentinels:
    """Redis behind Sentinel for the sentinel phase: the master (a Redis with a TCP port, as the
    Service's own Redis), one replica, and three Debian redis-sentinel processes watching them."""

    def __init__(self, d, master, master_port, down_after_ms=1000):
        import redis as redis_py
        self.redis_py = redis_py
        self.name = 'descprod'
        self.servers = {master_port: master}
        rport = free_port()
        self.servers[rport] = Redis(d, 'replica', extra=['--port', str(rport), '--bind', '127.0.0.1',
                                                         '--repl-diskless-sync-delay', '0',
                                                         '--replicaof', '127.0.0.1', str(master_port)])
        self.ports = []
        self.procs = []
        for i in range(3):
            port = free_port()
            conf = os.path.join(d, 'sentinel-%d.conf' % i)
            with open(conf, 'w') as f:
                f.write('port %d\nbind 127.0.0.1\ndir %s\nsentinel resolve-hostnames no\n'
                        'sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s %d\n'
                        'sentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n'
                        % (port, d, self.name, master_port, self.name, down_after_ms, self.name, self.name))
            self.procs.append(PROCS.start(['redis-sentinel', conf], os.path.join(d, 'sentinel-%d.log' % i)))
            self.ports.append(port)
        self.wait_healthy()

    def yaml(self, wait_replicas):
        return ('  sentinels: [%s]\n  master_name: %s\n  wait_replicas: %d\n'
                % (', '.join('"127.0.0.1:%d"' % p for p in self.ports), self.name, wait_replicas))

    def master_port(self):
        for p in self.ports:
            try:
                r = self.redis_py.Redis(port=p, socket_timeout=1, decode_responses=True)
                addr = r.execute_command('SENTINEL', 'get-master-addr-by-name', self.name)
                r.close()
                if addr:
                    return int(addr[1])
            except Exception:
                pass
        return 0

    def master(self):
        return self.redis_py.Redis(port=self.master_port(), decode_responses=True)

    def wait_healthy(self, timeout=60):
        """Every sentinel sees the replica and the two others; every replica's link is up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                m = self.master_port()
                ok = m != 0
                for p in self.ports:
                    r = self.redis_py.Redis(port=p, socket_timeout=1, decode_responses=True)
                    reps = r.execute_command('SENTINEL', 'replicas', self.name)
                    ok = ok and any(dict(zip(x[0::2], x[1::2])).get('flags') == 'slave' for x in reps) and \
                        len(r.execute_command('SENTINEL', 'sentinels', self.name)) == 2
                    r.close()
                for port in self.servers:
                    if port != m:
                        info = self.redis_py.Redis(port=port, socket_timeout=1).info('replication')
                        ok = ok and info.get('master_link_status') == 'up'
                if ok:
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError('the sentinels are not healthy')

    def stop(self):
        for p in self.procs:
            PROCS.stop(p)
        for port, srv in self.servers.items():
            if srv.proc.poll() is None:
                srv.stop()


class Service:
    """A private DESCprod: Redis, daemon, gateway, and workers on demand."""

    def __init__(self, bench, name, log_level, worker_extra='', daemon_extra='', redis_args=(), redis_section=None):
        """redis_section(service) -> the lines of the config's redis section that name Redis
        (default: its unix socket), called once its Redis is up (redis_args: more server arguments)."""
        self.b = bench
        self.d = os.path.join(bench.work, name)
        os.makedirs(self.d)
        self.out = os.path.join(bench.run_dirs, name + '-out')  # the workers' run directories
        self.redis = Redis(self.d, extra=redis_args)
        self.prefix = 'descprod:'
        redis_lines = redis_section(self) if redis_section else '  path: %s\n' % self.redis.sock
        self.workers_ep = 'ipc://%s/workers.ipc' % self.d
        self.config = os.path.join(self.d, 'descprod.yaml')
        with open(self.config, 'w') as f:
            f.write('''# scripts/bench (see config/descprod.yaml for every key)
log_level: %(ll)s
apps: %(apps)s
redis:
%(redis)sgateway:
  address: 127.0.0.1
  port: 0
  daemon_endpoint: ipc://%(d)s/gateways.ipc
  max_body_bytes: 67108864
  max_bulk_jobs: 100000
daemon:
  worker_endpoint: %(wep)s
  gateway_endpoint: ipc://%(d)s/gateways.ipc
  worker_auth: open
%(dx)s
worker:
  daemon_endpoint: %(wep)s
  owner: admin
  output_dir: %(out)s
%(wx)s''' % dict(ll=log_level, apps=bench.apps, redis=redis_lines, d=self.d, wep=self.workers_ep,
                   out=self.out, wx=worker_extra, dx=daemon_extra))
        binp = bench.bin
        self.daemon = PROCS.start([binp('descprod-daemon'), '--config', self.config], os.path.join(self.d, 'daemon.log'))
        portfile = os.path.join(self.d, 'gateway.port')
        self.gateway = PROCS.start([binp('descprod-gateway'), '--config', self.config, '--port-file', portfile],
                                   os.path.join(self.d, 'gateway.log'))
        for _ in range(200):
            if os.path.exists(portfile) and open(portfile).read().strip():
                break
            if self.gateway.poll() is not None or self.daemon.poll() is not None:
                raise RuntimeError('daemon or gateway exited; see ' + self.d)
            time.sleep(0.05)
        self.port = int(open(portfile).read().strip())
        admin = [binp('descprod-admin'), '--config', self.config]
        subprocess.run(admin + ['add-user', 'admin', '--admin'], check=True, stdout=subprocess.DEVNULL)
        self.token = subprocess.run(admin + ['token', 'admin'], check=True, capture_output=True,
                                    text=True).stdout.strip().split()[-1]
        # Ready when the daemon has welcomed the gateway.
        for _ in range(200):
            try:
                st, _ = self.http('GET', '/readyz', auth=False)
                if st == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        self.workers = []

    def http(self, method, path, body=None, auth=True, conn=None):
        c = conn or http.client.HTTPConnection('127.0.0.1', self.port, timeout=600)
        h = {'Content-Type': 'application/json'}
        if auth:
            h['Authorization'] = 'Bearer ' + self.token
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def start_workers(self, n, slots, prefetch=0):
        for i in range(n):
            self.workers.append(PROCS.start(
                [self.b.bin('descprod-worker'), '--config', self.config, '--slots', str(slots), '--id', 'w%d' % i,
                 '--prefetch', str(prefetch)],
                os.path.join(self.d, 'worker-%d.log' % i), env=dict(os.environ, PATH='/usr/bin:/bin')))
        # Connected when the daemon lists them in Redis (worker hashes, written every heartbeat) or
        # simply after the hello round trip; a short wait suffices on one machine.
        deadline = time.time() + 10
        while time.time() < deadline:
            if len(self.redis.r.keys(self.prefix + 'worker:*')) >= n:
                break
            time.sleep(0.05)

    def stop_workers(self):
        for w in self.workers:
            PROCS.stop(w, 30)
        self.workers = []

    def stop(self):
        self.stop_workers()
        PROCS.stop(self.gateway)
        PROCS.stop(self.daemon)
        if self.redis.proc.poll() is None:
            self.redis.stop()
        if not self.b.args.keep:
            shutil.rmtree(self.d, ignore_errors=True)
            shutil.rmtree(self.out, ignore_errors=True)

    # ---- submitting ----
    def bulk_bodies(self, n, chunk, tag):
        bodies = []
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            bodies.append(json.dumps({'jobs': [{'jobtype': 'true', 'config': '%s%d' % (tag, start + i)}
                                               for i in range(m)]}).encode())
        return bodies

    def bulk_submit(self, bodies):
        """POSTs the bodies on one keep-alive connection; returns (seconds, ids)."""
        c = http.client.HTTPConnection('127.0.0.1', self.port, timeout=600)
        ids = []
        t0 = time.time()
        for b in bodies:
            st, data = self.http('POST', '/api/jobs/bulk', b, conn=c)
            if st != 201:
                raise RuntimeError('bulk submit: HTTP %d %s' % (st, data[:300]))
            ids.extend(json.loads(data)['ids'])
        t1 = time.time()
        c.close()
        return t1 - t0, ids

    def trial_batch(self, r, tag, total, leave):
        """A failover trial's jobs: 400 more, then waits (60 s at most) until all but `leave` of the
        `total` + 400 are done, as `r` (a Redis client) counts them. Returns the new total."""
        _, ids = self.bulk_submit(self.bulk_bodies(400, 400, tag))
        total += len(ids)
        deadline = time.time() + 60
        while int(r.hget(self.prefix + 'stats:jobs_by_state', 'done') or 0) < total - leave:
            if time.time() > deadline:
                raise RuntimeError('trial %s: jobs do not run' % tag)
            time.sleep(0.01)
        return total

    def wait_all_finished(self, timeout):
        """Until Redis's queue and lease sets are empty: every submitted job is terminal."""
        r = self.redis.r
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = r.pipeline(transaction=False)
            p.zcard(self.prefix + 'queue')
            p.zcard(self.prefix + 'leases')
            q, l = p.execute()
            if q == 0 and l == 0:
                return time.time()
            time.sleep(0.002)
        raise RuntimeError('jobs not finished after %.0f s (queue %d, leases %d)' % (timeout, q, l))

    def count_states(self, lo, hi):
        lua = ("local c = {} for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do "
               "local s = redis.call('HGET', KEYS[1] .. i, 'state') or 'missing' c[s] = (c[s] or 0) + 1 end "
               "local out = {} for k, v in pairs(c) do table.insert(out, k) table.insert(out, v) end return out")
        out = self.redis.r.eval(lua, 1, self.prefix + 'job:', lo, hi)
        return dict(zip(out[0::2], out[1::2]))


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.work = tempfile.mkdtemp(prefix='descprod-bench.')
        # Run directories (5 files per job) on tmpfs by default: on this machine's ext4 (no journal)
        # creating inodes slows down several-fold after a run deletes tens of thousands of them, so
        # on disk the end-to-end figure depends on what ran before (docs/performance.md).
        if args.run_dirs == 'tmpfs':
            shm = '/dev/shm'
            is_tmpfs = os.path.isdir(shm) and os.access(shm, os.W_OK) and any(
                l.split()[1] == shm and l.split()[2] == 'tmpfs' for l in open('/proc/mounts'))
            self.run_dirs = tempfile.mkdtemp(prefix='descprod-bench-runs.', dir=shm if is_tmpfs else None)
            self.run_dirs_kind = 'tmpfs' if is_tmpfs else 'the scratch file system (no tmpfs found)'
        else:
            os.makedirs(args.run_dirs, exist_ok=True)
            self.run_dirs = tempfile.mkdtemp(prefix='descprod-bench-runs.', dir=args.run_dirs)
            self.run_dirs_kind = args.run_dirs
        self.bindir = os.path.join(args.build_dir, 'bin')
        self.rows = []
        self.extra = {}
        self.apps = os.path.join(self.work, 'apps.yaml')
        with open(self.apps, 'w') as f:
            f.write('apps:\n  - name: "true"\n    command: ["/bin/true"]\n    args: []\n'
                    '    help: "Does nothing (benchmarks)."\n')

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def row(self, measure, value, unit, baseline=None, target=None, check=None, key=None, note=''):
        """check: ('value'|'ratio', '>='|'<=', number)."""
        ratio = value / baseline if baseline else None
        holds = None
        if check:
            x = ratio if check[0] == 'ratio' else value
            holds = (x >= check[2]) if check[1] == '>=' else (x <= check[2])
        r = dict(measure=measure, value=value, unit=unit, baseline=baseline, ratio=ratio, target=target or '',
                 holds=holds, key=key or measure, note=note)
        self.rows.append(r)
        log('%s: %s %s%s' % (measure, fmt(value), unit, '' if ratio is None else ' (ratio %.2f)' % ratio))
        return r

    def service(self, name, worker_extra='', daemon_extra='', redis_args=(), redis_section=None):
        return Service(self, name, self.args.log_level, worker_extra, daemon_extra, redis_args, redis_section)

    # ---------------------------------------------------------------- phases
    def phase_e2e(self):
        n = 2000 if self.quick else self.args.e2e_jobs
        out = subprocess.run([self.bin('spawn-ceiling'), '-n', str(max(n, 5000))], capture_output=True, text=True,
                             check=True).stdout
        ceiling = kv(out)['rate']
        self.row('spawn ceiling: posix_spawn /bin/true, %d drivers' % CORES, ceiling, 'jobs/s', key='spawn')
        t0 = time.time()
        subprocess.run('seq %d | xargs -P%d -n1 true' % (n, CORES), shell=True, check=True)
        xargs = n / (time.time() - t0)
        self.row('xargs -P%d -n1 true' % CORES, xargs, 'jobs/s', key='xargs')
        self.e2e = {}
        # As shipped (worker.prefetch 0), and with a prefetch of 2 (descprod-worker --prefetch 2),
        # the setting for many short jobs; last, twice as many slots as cores: a slot of a trivial
        # job spends most of its time waiting (for the child to exec and exit, for the daemon's next
        # job), so on this machine oversubscribed slots fill the cores the others leave idle.
        for nw, slots, pf in ((1, CORES, 0), (CORES, 1, 0), (1, CORES, 2), (CORES, 1, 1), (CORES, 2, 2)):
            if nw == 1 and slots == 1 and pf == 0 and self.e2e:
                continue
            s = self.service('e2e-%dx%d-p%d' % (nw, slots, pf))
            try:
                s.start_workers(nw, slots, pf)
                bodies = s.bulk_bodies(n, 100000, 'e')
                prof = self.perf_start('e2e-worker', s.workers[0].pid) if nw == 1 and pf == 0 else None
                ticks0 = sum(cpu_ticks(w.pid) for w in s.workers)
                t0 = time.time()
                _, ids = s.bulk_submit(bodies)
                t1 = s.wait_all_finished(600)
                cpu_us = (sum(cpu_ticks(w.pid) for w in s.workers) - ticks0) * 1e6 / os.sysconf('SC_CLK_TCK') / n
                self.perf_stop(prof)
                states = s.count_states(min(ids), max(ids))
                if states.get('done', 0) != n:
                    raise RuntimeError('e2e: not all jobs done: %r' % states)
                rate = n / (t1 - t0)
            finally:
                s.stop()
            self.e2e[(nw, slots, pf)] = rate
            self.row('end to end: %d x /bin/true, HTTP bulk -> done, %d worker x %d slots%s' % (
                n, nw, slots, ', prefetch %d' % pf if pf else ''), rate,
                     'jobs/s', baseline=ceiling, target='>= 0.8 x spawn ceiling', check=('ratio', '>=', 0.8),
                     key='e2e_%dx%d' % (nw, slots) + ('_p%d' % pf if pf else ''),
                     note='run directories on %s' % self.run_dirs_kind)
            self.row('worker CPU per job (user+system, every worker): %d worker x %d slots%s' % (
                nw, slots, ', prefetch %d' % pf if pf else ''), cpu_us, 'us',
                     target='<= 100 us where process creation is cheap',
                     key='cpu_%dx%d' % (nw, slots) + ('_p%d' % pf if pf else ''))
        best = max(self.e2e.values())
        self.row('end to end (best) vs xargs -P%d' % CORES, best, 'jobs/s', baseline=xargs, key='e2e_vs_xargs')
        self.ceiling, self.xargs, self.n_e2e = ceiling, xargs, n

    def phase_worker(self):
        """Issue #20: the worker's system calls per job by name (bench/syscalls-per-job: strace of the
        worker's threads and of its children up to their exec), in both containment modes; and the
        end-to-end rate with process creation made dearer: the worker and its jobs pinned to one
        core (taskset), against `xargs -P1` pinned to the same core."""
        import importlib.machinery
        tool = importlib.machinery.SourceFileLoader(
            'syscalls_per_job', os.path.join(ROOT, 'bench', 'syscalls-per-job')).load_module()
        n = 200 if self.quick else 1000
        tables = []
        for mode in ('cgroup', 'subreaper'):
            s = self.service('syscalls-' + mode, worker_extra='  containment: %s\n' % mode)
            try:
                s.start_workers(1, 1, 0)
                if s.workers[0].poll() is not None:
                    log('syscalls: no %s containment here (the worker did not start); skipped' % mode)
                    continue
                s.bulk_submit(s.bulk_bodies(50, 50, 'w'))  # warm: the first spawn's one-time work
                s.wait_all_finished(120)

                def run_jobs():
                    _, ids = s.bulk_submit(s.bulk_bodies(n, n, 's'))
                    s.wait_all_finished(600)
                    return 0
                r = tool.measure(s.workers[0].pid, n, run_jobs)
            finally:
                s.stop()
            t = r['totals']
            total = t['event_loop'] + t['io_threads'] + t['child_before_exec']
            self.row('worker system calls per job, containment %s: event loop %.1f + ZeroMQ threads %.1f + '
                     'child before exec %.1f' % (mode, t['event_loop'], t['io_threads'], t['child_before_exec']),
                     total, 'calls', target='<= 40', check=('value', '<=', 40), key='syscalls_' + mode)
            self.row('worker system calls per job, containment %s: event loop and child before exec' % mode,
                     t['event_loop'] + t['child_before_exec'], 'calls', key='syscalls_loop_child_' + mode)
            tables.append((mode, r))
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, 'syscalls.txt'), 'w') as f:
            for mode, r in tables:
                f.write('containment %s, %d true jobs, 1 worker x 1 slot:\n' % (mode, r['jobs']))
                import contextlib, io
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    tool.print_table(r)
                f.write(buf.getvalue() + '\n')
        print(open(os.path.join(self.args.out, 'syscalls.txt')).read())
        # Dear process creation: one core for the worker, its jobs and xargs.
        m = 2000 if self.quick else min(self.args.e2e_jobs, 10000)
        t0 = time.time()
        subprocess.run('seq %d | taskset -c 0 xargs -P1 -n1 true' % m, shell=True, check=True)
        xargs1 = m / (time.time() - t0)
        s = self.service('onecore')
        try:
            s.start_workers(1, 2, 2)
            for w in s.workers:
                subprocess.run(['taskset', '-a', '-p', '-c', '0', str(w.pid)], check=True, stdout=subprocess.DEVNULL)
            t0 = time.time()
            _, ids = s.bulk_submit(s.bulk_bodies(m, 100000, 'o'))
            t1 = s.wait_all_finished(900)
            if s.count_states(min(ids), max(ids)).get('done', 0) != m:
                raise RuntimeError('one-core e2e: not all jobs done')
        finally:
            s.stop()
        self.row('taskset -c 0 xargs -P1 -n1 true', xargs1, 'jobs/s', key='xargs_onecore')
        self.row('end to end, worker and its jobs on one core: %d x /bin/true, 1 worker x 2 slots, prefetch 2' % m,
                 m / (t1 - t0), 'jobs/s', baseline=xargs1, target='>= 0.9 x xargs on the same core',
                 check=('ratio', '>=', 0.9), key='onecore_e2e')

    def phase_celery(self):
        """Celery as the issue configures it (acks_late), and without acks_late: Celery 5.2's Redis
        transport stalls with acks_late + prefetch 1 (its consumer waits for the next poll), so the
        faster of the two is the baseline. The acks_late run uses fewer tasks (it is slow). Also
        with twice as many processes as cores, as DESCprod's oversubscribed end-to-end row has
        slots: the baseline is Celery's fastest setup, whichever it is."""
        n = self.n_e2e
        rates = {}
        for late, m, procs, key in ((0, n, CORES, 'celery'), (1, 100 if self.quick else 1000, CORES, 'celery_late'),
                                    (0, n, 2 * CORES, 'celery_2x')):
            d = os.path.join(self.work, key)
            os.makedirs(d)
            r = Redis(d, 'celery-redis')
            try:
                out = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'celery-bench.py'), '--n', str(m),
                                      '--redis-socket', r.sock, '--concurrency', str(procs), '--acks-late', str(late)],
                                     capture_output=True, text=True, timeout=1800)
                if out.returncode != 0:
                    raise RuntimeError('celery bench failed: ' + out.stderr[-2000:])
                rates[key] = kv(out.stdout)['rate']
            finally:
                r.stop()
            self.row('Celery 5.2 + Redis: %d x subprocess true, %d procs, -O fair, prefetch 1%s' % (
                m, procs, ', acks_late' if late else ', no acks_late'), rates[key], 'jobs/s', key=key)
        rate = max(rates.values())
        self.celery = rate
        best = max(self.e2e.values())
        self.row('end to end (best) vs Celery (its faster setup)', best, 'jobs/s', baseline=rate,
                 target='>= 5 x Celery', check=('ratio', '>=', 5), key='e2e_vs_celery')

    def sim(self, s, extra, timeout=900, profile=None):
        """Runs sim-workers to the end; returns its figures plus the CPU (% of a core) that the
        daemon, Redis, the gateway and sim-workers used meanwhile. With `profile`, perf records
        the daemon and Redis meanwhile (call graphs) into that file prefix."""
        argv = [self.bin('sim-workers'), '--endpoint', s.workers_ep, '--redis-socket', s.redis.sock] + extra
        outf = os.path.join(s.d, 'sim-%d.out' % len(os.listdir(s.d)))
        pids = dict(daemon=s.daemon.pid, redis=s.redis.proc.pid, gateway=s.gateway.pid)
        s.redis.r.config_resetstat()
        delayed0 = int(s.redis.r.info('persistence').get('aof_delayed_fsync', 0))
        dirty0 = dirty_mb()
        c0 = {k: cpu_ticks(v) for k, v in pids.items()}
        t0 = time.time()
        p = PROCS.start(argv, outf)
        perfs = []
        if profile:
            for name in ('daemon', 'redis'):
                perfs.append(PROCS.start(['perf', 'record', '-F', '299', '--call-graph', 'dwarf,16384', '-o', '%s-%s.data' % (profile, name),
                                          '-p', str(pids[name])], profile + '-' + name + '.log'))
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            PROCS.stop(p)
            raise RuntimeError('sim-workers did not finish in %d s' % timeout)
        for q in perfs:
            q.send_signal(signal.SIGINT)
            q.wait(60)
            PROCS.live.remove(q) if q in PROCS.live else None
        dt = time.time() - t0
        PROCS.live.remove(p) if p in PROCS.live else None
        text = open(outf).read()
        if p.returncode != 0:
            raise RuntimeError('sim-workers failed (%d): %s' % (p.returncode, text[-2000:]))
        res = kv(text.strip().splitlines()[-1])
        tck = os.sysconf('SC_CLK_TCK')
        for k, v in pids.items():
            res['cpu_' + k] = 100.0 * (cpu_ticks(v) - c0[k]) / tck / dt
        res['cpu_sim'] = 100.0 * float(res.get('cpu_s', 0)) / dt
        # What Redis did meanwhile: calls and CPU time per command (INFO commandstats).
        cs = s.redis.r.info('commandstats')
        res['redis_cmds'] = {k.replace('cmdstat_', ''): (v['calls'], v['usec']) for k, v in cs.items()}
        # Commands that scripts call are counted on their own and again inside EVALSHA's time, so
        # the per-job figures are EVALSHA's (everything the scripts do) and the Redis process's CPU
        # over the run (/proc), not a sum of the lines.
        jobs = max(1.0, float(res['completed']))
        res['redis_evalsha_us_per_job'] = res['redis_cmds'].get('evalsha', (0, 0))[1] / jobs
        res['redis_cpu_us_per_job'] = res['cpu_redis'] / 100.0 * dt * 1e6 / jobs
        res['cpu_note'] = 'CPU %% of a core meanwhile: daemon %.0f, redis %.0f, sim-workers %.0f, gateway %.0f' % (
            res['cpu_daemon'], res['cpu_redis'], res['cpu_sim'], res['cpu_gateway'])
        # The disk's share: how much the kernel still had to write back when the run began, and how
        # often Redis's AOF write waited on a slow fsync meanwhile (each a pause of its one thread).
        res['aof_delayed_fsync'] = int(s.redis.r.info('persistence').get('aof_delayed_fsync', 0)) - delayed0
        res['disk_note'] = 'dirty+writeback at start %.0f MB, AOF writes delayed by fsync %d' % (
            dirty0, res['aof_delayed_fsync'])
        return res

    def fill(self, s, n, chunk=100000):
        """Queues n jobs over HTTP (bulk, `chunk` per request); returns jobs/s."""
        done = 0
        secs = 0.0
        while done < n:
            m = min(chunk * 10, n - done)
            bodies = s.bulk_bodies(m, chunk, 'q%d-' % done)
            dt, _ = s.bulk_submit(bodies)
            secs += dt
            done += m
        return n / secs

    EVENTS_CAP = 100000  # the global stream's MAXLEN ~ in core/store.cpp

    def top_up_events(self, s):
        """Brings the global event stream to its cap, as in a service that has run a while. A fill
        of 1,000,000 jobs leaves it full and one of 10,000 a tenth full; measured here, a full
        stream alone costs dispatch 15-20 % (more memory touched per transition), which would
        otherwise be counted against depth. The filler entries name job 0 of a user that does not
        exist, so no client is shown them."""
        key = s.prefix + 'events'
        missing = self.EVENTS_CAP - int(s.redis.r.xlen(key))
        pipe = s.redis.r.pipeline(transaction=False)
        for i in range(max(0, missing)):
            pipe.xadd(key, {'id': '0', 'owner': 'bench-filler', 'type': 'transition', 'state': 'done',
                            'progress': 'Done.', 'attempt': '1', 'time': '0'},
                      maxlen=self.EVENTS_CAP, approximate=True)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        time.sleep(1.0)  # the gateway's event tail reads past them

    def phase_dispatch(self):
        w, sl = self.args.sim_workers, self.args.sim_slots
        depths = [5000, 50000] if self.quick else [10000, 100000, 1000000]
        # Every depth dispatches the same number of jobs, so the rates compare depth alone, not also
        # run length (the first credit burst, AOF rewrites). And every run ends the same way: the
        # simulated workers stop after `take` jobs while still holding a job in each of their
        # w x sl slots, which the daemon then hands back (lease + requeue writes, waited for).
        # `take` is the shallowest depth less those slots, so that queue never runs dry either;
        # a run that drained its queue would skip that end and look cheaper than the deep ones.
        cap = depths[0]
        take = cap - w * sl if cap > 2 * w * sl else cap // 2
        rounds = 1 if self.quick else 7
        self.depth_rates = []
        # One service per depth, all up together (idle but for the one being measured), filled one
        # after the other; then the rounds alternate between the depths. On this shared two-core
        # machine a single 9,000-job run varies by +-10 % from one minute to the next, and a service
        # slows a little as its done jobs pile up; measured one depth after the other, that drift
        # was counted as depth (0.82-1.03 over three full runs), alternated it hits every depth alike.
        svcs = []
        try:
            for depth in depths:
                s = self.service('dispatch-%d' % depth)
                svcs.append(s)
                used0 = int(s.redis.r.info('memory')['used_memory'])
                rss0 = rss_mb(s.daemon.pid)
                fill_rate = self.fill(s, depth)
                time.sleep(1.0)  # the daemon takes in the last `submitted` notices
                # Filling 1,000,000 jobs grows the append-only file enough for Redis to rewrite it
                # (a fork that rewrites ~1 GB on the other core): a one-off of the fill, not part of
                # dispatching at that depth, so let it finish first (at most 180 s).
                aof_deadline = time.time() + 180
                while time.time() < aof_deadline:
                    p = s.redis.r.info('persistence')
                    if not int(p.get('aof_rewrite_in_progress', 0)) and not int(p.get('aof_rewrite_scheduled', 0)):
                        break
                    time.sleep(0.5)
                s.bench_fill = dict(depth=depth, queued=s.redis.r.zcard(s.prefix + 'queue'), fill_rate=fill_rate,
                                    used0=used0, used1=int(s.redis.r.info('memory')['used_memory']),
                                    rss0=rss0, rss1=rss_mb(s.daemon.pid), created=depth, runs=[])
                self.top_up_events(s)
            # A 10,000-job run lasts about a second, so one run can land on a passing disturbance
            # (seen once: 5,600/s at depth 1,000,000 where the runs before and after made 8,900).
            # Each depth runs `rounds` times and reports the median; the shallowest queue is
            # refilled with `take` jobs before each further round, so every round starts at about
            # that depth.
            for r in range(rounds):
                for s in svcs:
                    f = s.bench_fill
                    if r and f['depth'] == cap:
                        self.fill(s, take)
                        f['created'] += take
                        time.sleep(1.0)
                    prof = None
                    if self.args.profile and f['depth'] == depths[1] and r == 0:
                        os.makedirs(self.args.out, exist_ok=True)
                        prof = os.path.join(self.args.out, 'profile-dispatch')
                    f['runs'].append(self.sim(s, ['--workers', str(w), '--slots', str(sl), '--jobs', str(take)],
                                              profile=prof))
                    if int(f['runs'][-1]['duplicates']) != 0:
                        raise RuntimeError('duplicates: %r' % f['runs'][-1])
                    if prof:
                        self.perf_report(prof)
                log('dispatch round %d: %s' % (r, ', '.join('depth %d %.0f jobs/s' % (s.bench_fill['depth'], float(
                    s.bench_fill['runs'][-1]['rate_persisted'])) for s in svcs)))
            # Nothing lost or stuck: every job of the shallowest queue is done or back in the queue.
            f = svcs[0].bench_fill
            st = svcs[0].count_states(1, f['created'])
            if st.get('done', 0) < take * rounds or set(st) - {'done', 'ready'} or sum(st.values()) != f['created']:
                raise RuntimeError('dispatch: jobs lost or stuck %r' % st)
        finally:
            for s in svcs:
                s.stop()
        base_runs = svcs[0].bench_fill['runs']
        for s in svcs:
            f = s.bench_fill
            depth, runs = f['depth'], f['runs']
            res = sorted(runs, key=lambda x: float(x['rate_persisted']))[len(runs) // 2]
            log('depth %d: rounds %s jobs/s, median taken; %s' % (depth, ', '.join('%.0f' % float(x['rate_persisted']) for x in runs),
                                                                  '; '.join(x['disk_note'] for x in runs)))
            if depth != cap:
                log('depth %d against %d, round by round: %s' % (depth, cap, ', '.join(
                    '%.2f' % (float(a['rate_persisted']) / float(b['rate_persisted'])) for a, b in zip(runs, base_runs))))
            rate = float(res['rate_persisted'])
            self.depth_rates.append((depth, rate, float(res['rate'])))
            log('depth %d: queued %d, bulk fill %.0f jobs/s, dispatch %s (sim-side %s), completed %s; %s' % (
                depth, f['queued'], f['fill_rate'], res['rate_persisted'], res['rate'], res['completed'], res['cpu_note']))
            self.commandstats(res, 'depth %d, %d jobs completed' % (depth, take))
            if depth == depths[0]:
                base = rate
                self.row('dispatch: sim-workers %dx%d, queue depth %d, every transition in Redis' % (w, sl, depth),
                         rate, 'jobs/s', target='>= 50,000', check=('value', '>=', 50000), key='dispatch',
                         note='%s; sim-side rate %.0f' % (res['cpu_note'], float(res['rate'])))
            if depth == depths[-1]:
                self.row('dispatch at queue depth %d vs at %d' % (depth, depths[0]), rate, 'jobs/s', baseline=base,
                         target='>= 0.9 x at 10,000', check=('ratio', '>=', 0.9), key='dispatch_deep',
                         note='%d jobs per round, median of %d rounds alternating with the other depths; %s' % (
                             take, len(runs), res['cpu_note']))
                self.row('HTTP bulk submit while filling %d (100,000-job requests)' % depth, f['fill_rate'], 'jobs/s',
                         key='bulk_fill')
                self.row('daemon RSS with %d queued' % depth, f['rss1'], 'MB', target='<= 300', check=('value', '<=', 300),
                         key='daemon_rss', note='before: %.1f MB' % f['rss0'])
                self.row('Redis memory per queued job (%d queued)' % depth, (f['used1'] - f['used0']) / depth, 'bytes',
                         target='<= 1536', check=('value', '<=', 1536), key='redis_per_job')

    def phase_http(self):
        s = self.service('http')
        try:
            dur = 3 if self.quick else 10
            lua = os.path.join(s.d, 'post.lua')
            with open(lua, 'w') as f:
                f.write('wrk.method = "POST"\nwrk.body = \'{"jobtype":"true","config":"w1"}\'\n'
                        'wrk.headers["Content-Type"] = "application/json"\n'
                        'wrk.headers["Authorization"] = "Bearer %s"\n'
                        'done = function(summary, latency, requests)\n'
                        '  io.write(string.format("wrk_requests=%%d wrk_non2xx=%%d wrk_errors=%%d p50_us=%%d p99_us=%%d\\n",\n'
                        '    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read +\n'
                        '    summary.errors.write + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))\n'
                        'end\n' % s.token)
            conns = self.args.wrk_connections
            prof = self.perf_start('http-gateway', s.gateway.pid)
            out = subprocess.run(['wrk', '-t%d' % CORES, '-c%d' % conns, '-d%ds' % dur, '-s', lua,
                                  'http://127.0.0.1:%d/api/jobs' % s.port], capture_output=True, text=True,
                                 timeout=dur + 60)
            self.perf_stop(prof)
            res = kv(out.stdout.strip().splitlines()[-1])
            rps = [l for l in out.stdout.splitlines() if l.startswith('Requests/sec')]
            rate = float(rps[0].split()[1]) if rps else float('nan')
            if int(res['wrk_non2xx']) or int(res['wrk_errors']):
                log('wrk: non-2xx %s errors %s' % (res['wrk_non2xx'], res['wrk_errors']))
            self.row('HTTP single-job submit: wrk %d threads, %d keep-alive connections' % (CORES, conns), rate,
                     'req/s', target='>= 20,000', check=('value', '>=', 20000), key='http_single',
                     note='p50 %.2f ms, p99 %.2f ms, non-2xx %s' % (int(res['p50_us']) / 1000, int(res['p99_us']) / 1000,
                                                                   res['wrk_non2xx']))
            nreq, per = (3, 10000) if self.quick else (10, 10000)
            bodies = s.bulk_bodies(nreq * per, per, 'b')
            s.redis.r.config_resetstat()
            r0, g0 = cpu_ticks(s.redis.proc.pid), cpu_ticks(s.gateway.pid)
            dt, ids = s.bulk_submit(bodies)
            # Where a bulk-created job's time goes: Redis and gateway CPU, and the create script's
            # commands (their time is also inside EVALSHA's).
            n, tck = nreq * per, os.sysconf('SC_CLK_TCK')
            cs = s.redis.r.info('commandstats')
            log('bulk create per job: Redis CPU %.1f us, gateway CPU %.1f us; %s' % (
                1e6 * (cpu_ticks(s.redis.proc.pid) - r0) / tck / n, 1e6 * (cpu_ticks(s.gateway.pid) - g0) / tck / n,
                ', '.join('%s %.2f us' % (k.replace('cmdstat_', ''), v['usec'] / n)
                          for k, v in sorted(cs.items(), key=lambda kv: -kv[1]['usec'])[:6])))
            self.row('HTTP bulk submit: %d requests x %d jobs' % (nreq, per), nreq * per / dt, 'jobs/s',
                     target='>= 200,000', check=('value', '>=', 200000), key='http_bulk')
        finally:
            s.stop()

    def phase_find(self):
        """GET /api/jobs over 100,000 jobs of one user (issue 17): the first page plain, filtered
        (every job matches / none does / a text search), sorted, and the next page by cursor. Each
        the median of 5 requests on one keep-alive connection, with the gateway's CPU per request."""
        n = 20000 if self.quick else 100000
        s = self.service('find')
        try:
            self.fill(s, n, chunk=10000)
            c = http.client.HTTPConnection('127.0.0.1', s.port, timeout=600)
            tck = os.sysconf('SC_CLK_TCK')

            def timed(path, reps=5):
                times, body = [], None
                g0, r0 = cpu_ticks(s.gateway.pid), cpu_ticks(s.redis.proc.pid)
                for _ in range(reps):
                    t0 = time.perf_counter()
                    st, data = s.http('GET', path, conn=c)
                    times.append(time.perf_counter() - t0)
                    if st != 200:
                        raise RuntimeError('GET %s: HTTP %d %s' % (path, st, data[:300]))
                    body = json.loads(data)
                cpu_ms = 1000.0 * (cpu_ticks(s.gateway.pid) - g0) / tck / reps
                redis_ms[0] = 1000.0 * (cpu_ticks(s.redis.proc.pid) - r0) / tck / reps
                return statistics.median(times) * 1000, cpu_ms, body

            redis_ms = [0.0]

            base, base_cpu, _ = timed('/api/jobs?limit=50')
            self.row('find: first page of %d jobs, no filter (baseline)' % n, base, 'ms', key='find_plain',
                     note='gateway CPU %.1f ms/request' % base_cpu)
            prof = self.perf_start('find-gateway', s.gateway.pid)
            cases = [('state=ready (every job matches, counted)', 'state=ready', 'find_all_match'),
                     ('state=failed (no job matches: the whole scan)', 'state=failed', 'find_no_match'),
                     ('text q=q0-999 in config/howfig/progress', 'q=q0-999', 'find_text'),
                     ('sort=-created (every job read and sorted)', 'sort=-created', 'find_sorted'),
                     ('archived=0 (the jobs page\'s Active view)', 'archived=0', 'find_active'),
                     ('archived=0&q=q0-999 (a search on the jobs page)', 'archived=0&q=q0-999', 'find_active_text')]
            for label, query, key in cases:
                s.redis.r.config_resetstat()
                ms, cpu, body = timed('/api/jobs?limit=50&' + query)
                # Redis's own time per request by command (INFO commandstats), the largest first.
                stats = s.redis.r.info('commandstats')
                spent = sorted(((v['usec'] / 5000.0, k.replace('cmdstat_', '')) for k, v in stats.items()
                                if k not in ('cmdstat_config', 'cmdstat_info')), reverse=True)[:3]
                self.row('find: %s, %d jobs' % (label, n), ms, 'ms', baseline=base, target='<= 200 ms',
                         check=('value', '<=', 200), key=key,
                         note='total %s, scanned %s, CPU per request: gateway %.1f ms, Redis %.1f ms (%s)' % (
                             body.get('total'), body.get('scanned'), cpu, redis_ms[0],
                             ', '.join('%s %.0f ms' % (c, t) for t, c in spent)))
            self.perf_stop(prof)
            _, _, first = timed('/api/jobs?limit=50&state=ready', reps=1)
            ms, cpu, body = timed('/api/jobs?limit=50&state=ready&cursor=' + first['next'])
            self.row('find: next page by cursor, state=ready, %d jobs' % n, ms, 'ms', baseline=base,
                     target='<= 200 ms', check=('value', '<=', 200), key='find_cursor',
                     note='gateway CPU %.1f ms/request' % cpu)
            c.close()
        finally:
            s.stop()

    def phase_fair(self):
        """Fair share (issue 19): four users queue 8,000, 4,000, 2,000 and 1,000 jobs (in that order,
        as users who submit at different rates have different backlogs), then simulated workers take
        4,000. Jain's fairness index of the jobs each user got (1: equal shares, 0.25: one user got
        everything), and the dispatch rate, with daemon.dispatch_policy fair_share against fifo (the
        baseline, in the same run)."""
        sizes = [2000, 1000, 500, 250] if self.quick else [8000, 4000, 2000, 1000]
        take = sizes[-1] * 4
        w, sl = 4, 64
        figures = {}
        for policy in ('fifo', 'fair_share'):
            s = self.service('fair-' + policy, daemon_extra='  dispatch_policy: ' + policy)
            try:
                admin = [self.bin('descprod-admin'), '--config', s.config]
                users = []
                for i, n in enumerate(sizes):
                    name = 'user%d' % (i + 1)
                    subprocess.run(admin + ['add-user', name], check=True, stdout=subprocess.DEVNULL)
                    tok = subprocess.run(admin + ['token', name], check=True, capture_output=True,
                                         text=True).stdout.strip().split()[-1]
                    s.token = tok  # bulk_submit posts as this user
                    _, ids = s.bulk_submit(s.bulk_bodies(n, 10000, '%s-' % name))
                    users.append((name, ids))
                time.sleep(1.0)  # the daemon takes in the last notices
                run = self.sim(s, ['--workers', str(w), '--slots', str(sl), '--jobs', str(take)])
                pipe = s.redis.r.pipeline(transaction=False)
                for _, ids in users:
                    for i in ids:
                        pipe.hget(s.prefix + 'job:%d' % i, 'state')
                states = pipe.execute()
                got, k = [], 0
                for _, ids in users:
                    got.append(sum(1 for st in states[k:k + len(ids)] if st in (b'done', 'done')))
                    k += len(ids)
                jain = sum(got) ** 2 / (len(got) * sum(x * x for x in got)) if sum(got) else 0.0
                figures[policy] = (jain, float(run['rate_persisted']), got)
            finally:
                s.stop()
        fifo, fair = figures['fifo'], figures['fair_share']
        self.row('fairness: Jain index of jobs run by 4 users with backlogs %s, fifo (baseline)' % '/'.join(
            str(n) for n in sizes), fifo[0], '', key='fair_fifo', note='jobs each: %s' % '/'.join(map(str, fifo[2])))
        self.row('fairness: the same with fair_share', fair[0], '', baseline=fifo[0], target='>= 0.95',
                 check=('value', '>=', 0.95), key='fair_share',
                 note='jobs each: %s' % '/'.join(map(str, fair[2])))
        self.row('dispatch with 4 users, fair_share vs fifo (sim-workers %dx%d)' % (w, sl), fair[1], 'jobs/s',
                 baseline=fifo[1], target='>= 0.9 x fifo', check=('ratio', '>=', 0.9), key='fair_dispatch')

    def phase_deps(self):
        """Dependencies (issue 19): (1) the dispatch rate of 10,100 jobs of which 10,000 wait, each
        with one `after` edge, for one of 100 first-stage jobs, against the same jobs without
        dependencies (the baseline, in the same run); (2) one job with 100,000 dependents ends while
        20,000 independent jobs are being dispatched: how long the release of the 100,000 takes, and
        the longest pause in dispatch meanwhile against the longest pause in a window as long
        before it."""
        edges = 2000 if self.quick else 10000
        stage = 100
        w, sl = 4, 64
        rates = {}
        for variant in ('plain', 'after'):
            s = self.service('deps-' + variant)
            try:
                jobs = [{'jobtype': 'true', 'config': 's%d' % i} for i in range(stage)]
                for i in range(edges):
                    j = {'jobtype': 'true', 'config': 'd%d' % i}
                    if variant == 'after':
                        j['after'] = ['#%d' % (i % stage)]
                    jobs.append(j)
                s.bulk_submit([json.dumps({'jobs': jobs}).encode()])
                time.sleep(0.5)
                run = self.sim(s, ['--workers', str(w), '--slots', str(sl), '--jobs', str(len(jobs))])
                states = s.count_states(1, len(jobs))
                if states.get(b'done', states.get('done', 0)) != len(jobs):
                    raise RuntimeError('deps %s: not every job done: %s' % (variant, states))
                rates[variant] = float(run['rate_persisted'])
            finally:
                s.stop()
        self.row('dispatch of %d jobs, %d waiting on an `after` edge, vs none (sim-workers %dx%d)' % (
            stage + edges, edges, w, sl), rates['after'], 'jobs/s', baseline=rates['plain'],
            target='>= 0.8 x no edges', check=('ratio', '>=', 0.8), key='deps_dispatch')

        fan = 20000 if self.quick else 100000
        others = 20000
        s = self.service('deps-release')
        try:
            st, data = s.http('POST', '/api/jobs', json.dumps({'jobtype': 'true', 'config': 'gate', 'hold': True,
                                                               'priority': 1000}))
            if st != 201:
                raise RuntimeError('gate: %d %s' % (st, data[:200]))
            gate = json.loads(data)['id']
            bodies = [json.dumps({'jobs': [{'jobtype': 'true', 'config': 'f%d' % (k + i), 'after': [gate]}
                                           for i in range(min(50000, fan - k))]}).encode()
                      for k in range(0, fan, 50000)]
            s.bulk_submit(bodies)
            s.bulk_submit(s.bulk_bodies(others, 10000, 'o'))
            time.sleep(0.5)
            total = 1 + fan + others
            simp = PROCS.start([self.bin('sim-workers'), '--endpoint', s.workers_ep, '--workers', str(w), '--slots',
                                str(sl), '--jobs', str(total), '--max-seconds', '900'], os.path.join(s.d, 'sim.log'))
            time.sleep(1.0)  # dispatch of the independent jobs under way
            st, data = s.http('POST', '/api/jobs/%d/release' % gate)
            if st != 200:
                raise RuntimeError('release: %d %s' % (st, data[:200]))
            simp.wait(900)
            PROCS.live.remove(simp) if simp in PROCS.live else None
            r = s.redis.r
            gate_stop = float(r.hget(s.prefix + 'job:%d' % gate, 'stop_time'))
            pipe = r.pipeline(transaction=False)
            for jid in range(1, total + 1):
                pipe.hmget(s.prefix + 'job:%d' % jid, 'queued_time', 'dispatch_time', 'state')
            rows = pipe.execute()
            not_done = sum(1 for q in rows if q[2] not in (b'done', 'done'))
            if not_done:
                raise RuntimeError('deps release: %d jobs not done' % not_done)
            released_at = max(float(q[0]) for q in rows[1:1 + fan])
            release_s = released_at - gate_stop
            dispatched = sorted(float(q[1]) for q in rows)

            def longest_gap(lo, hi):
                xs = [x for x in dispatched if lo <= x <= hi]
                return max((b - a for a, b in zip(xs, xs[1:])), default=hi - lo) * 1000

            during = longest_gap(gate_stop, released_at)
            before = longest_gap(max(dispatched[0], gate_stop - release_s), gate_stop)
            log('deps release: gate ended %.3f, %d dependents queued within %.3f s; longest dispatch pause %.1f ms '
                'during, %.1f ms before' % (gate_stop, fan, release_s, during, before))
        finally:
            s.stop()
        self.row('release of %d dependents of one job: time from its end to the last one queued' % fan,
                 release_s, 's', key='deps_release_s', note='%.0f dependents/s' % (fan / max(release_s, 1e-6)))
        self.row('longest pause in dispatch while the %d dependents are released, vs a window as long before' % fan,
                 during, 'ms', baseline=before, target='<= 50 ms', check=('value', '<=', 50), key='deps_stall')

    def phase_failover(self):
        """A standby daemon (issue 15): kill -9 of the leader while jobs run, over 20 trials (5 with
        --quick): the time until the standby leads (the lease's key names it) and until its first
        dispatch (the first `dispatched` event after the kill), p50 and p99; the killed daemon is
        started again as the next standby. Every job must end done."""
        trials = 5 if self.quick else 20
        ttl = 2000
        s = self.service('failover', daemon_extra='  leader_ttl_ms: %d\n  heartbeat_interval_ms: 200\n'
                                                  '  lease_timeout_ms: 3000' % ttl)
        try:
            r = s.redis.r
            daemons = {s.daemon.pid: s.daemon}
            logn = [1]

            def standby():
                logn[0] += 1
                p = PROCS.start([self.bin('descprod-daemon'), '--config', s.config],
                                os.path.join(s.d, 'daemon-%d.log' % logn[0]))
                daemons[p.pid] = p
                return p
            standby()
            s.start_workers(2, 2)
            led_ms, first_ms = [], []
            total = 0
            for t in range(trials):
                total = s.trial_batch(r, 'failover-%d-' % t, total, 350)
                leader = r.get(s.prefix + 'daemon:leader')
                pid = int(leader.rsplit(':', 1)[1])
                sec, usec = r.time()
                killed = sec * 1000 + usec // 1000
                os.kill(pid, signal.SIGKILL)
                daemons[pid].wait()
                PROCS.live.remove(daemons[pid]) if daemons[pid] in PROCS.live else None
                del daemons[pid]
                deadline = time.time() + 30
                while r.get(s.prefix + 'daemon:leader') in (None, leader):
                    if time.time() > deadline:
                        raise RuntimeError('failover trial %d: no new leader' % t)
                    time.sleep(0.005)
                sec, usec = r.time()
                led = sec * 1000 + usec // 1000
                led_ms.append(led - killed)
                # The new leader's first dispatch: the first `dispatched` event from the moment the
                # lease names it (seen within 5 ms; it must still rebuild and hear its workers
                # before it can dispatch). Events between the kill and then are the old leader's
                # last lease batch.
                first = None
                while first is None and time.time() < deadline:
                    for eid, f in r.xrange(s.prefix + 'events', min=str(led), count=100000):
                        if f.get('state') == 'dispatched':
                            first = int(eid.split('-')[0])
                            break
                    time.sleep(0.02)
                if first is None:
                    raise RuntimeError('failover trial %d: the new leader dispatched nothing' % t)
                first_ms.append(first - killed)
                standby()
                s.wait_all_finished(120)
                time.sleep(0.5)  # the new standby is up and asking
            states = s.count_states(1, total)
            done = states.get(b'done', states.get('done', 0))
            if done != total:
                raise RuntimeError('failover: not every job done: %s' % states)
        finally:
            s.stop()
            for p in list(daemons.values()):
                PROCS.stop(p)
        note = '%d trials, leader_ttl_ms %d, 2 workers; %d of %d jobs done' % (trials, ttl, done, total)
        self.row('failover: kill -9 of the leader -> the standby leads, p50', pct(led_ms, 50), 'ms', key='failover_lead_p50',
                 note=note)
        self.row('failover: kill -9 of the leader -> the standby leads, p99', pct(led_ms, 99), 'ms', key='failover_lead_p99',
                 note=note)
        self.row('failover: kill -9 of the leader -> its first dispatch, p50', pct(first_ms, 50), 'ms',
                 target='<= 5000 ms', check=('value', '<=', 5000), key='failover_dispatch_p50', note=note)
        self.row('failover: kill -9 of the leader -> its first dispatch, p99', pct(first_ms, 99), 'ms',
                 target='<= 5000 ms', check=('value', '<=', 5000), key='failover_dispatch_p99', note=note)

    def sentinel_service(self, name, wait_replicas, daemon_extra=''):
        """A service whose Redis is the master of a Sentinels cluster, and the cluster."""
        holder = {}
        port = free_port()

        def section(svc):
            holder['c'] = Sentinels(svc.d, svc.redis, port)
            return holder['c'].yaml(wait_replicas)
        s = self.service(name, daemon_extra=daemon_extra, redis_section=section,
                         redis_args=['--port', str(port), '--bind', '127.0.0.1', '--repl-diskless-sync-delay', '0'])
        return s, holder['c']

    def submit_figures(self, s, n, threads):
        """n single-job POST /api/jobs: one keep-alive connection (latency p50, p99 in ms), then
        `threads` connections at once (jobs/s)."""
        body = json.dumps({'jobtype': 'true', 'config': 'w'}).encode()
        c = http.client.HTTPConnection('127.0.0.1', s.port, timeout=60)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            st, data = s.http('POST', '/api/jobs', body, conn=c)
            lat.append((time.perf_counter() - t0) * 1000)
            if st != 201:
                raise RuntimeError('submit: HTTP %d %s' % (st, data[:200]))
        c.close()
        errors = []

        def loop():
            cc = http.client.HTTPConnection('127.0.0.1', s.port, timeout=60)
            for _ in range(n // threads):
                st, _ = s.http('POST', '/api/jobs', body, conn=cc)
                if st != 201:
                    errors.append(st)
            cc.close()
        ts = [threading.Thread(target=loop) for _ in range(threads)]
        t0 = time.time()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rate = (n // threads) * threads / (time.time() - t0)
        if errors:
            raise RuntimeError('concurrent submits: %d not 201' % len(errors))
        return pct(lat, 50), pct(lat, 99), rate

    def phase_sentinel(self):
        """Redis behind Sentinel (issue 15): what WAIT 1 costs a submit (single-job POSTs, with
        wait_replicas 0 as the baseline, same cluster kind, same run), and the failover time: kill -9
        of the master while jobs run -> the sentinels name the replica, -> the gateway's first 201,
        -> the first job done after it; the killed server then rejoins as a replica. Every job must
        end done."""
        n = 500 if self.quick else 2000
        threads = 8
        figs = {}
        for wait in (0, 1):
            s, c = self.sentinel_service('sentinel-wait%d' % wait, wait)
            try:
                figs[wait] = self.submit_figures(s, n, threads)
            finally:
                s.stop()
                c.stop()
        note = '%d submits; WAIT 1 100 after each create vs none, one replica on loopback' % n
        self.row('sentinel: single submit p50 with WAIT 1 (baseline: none)', figs[1][0], 'ms', baseline=figs[0][0],
                 key='sentinel_submit_p50', note=note)
        self.row('sentinel: single submit p99 with WAIT 1 (baseline: none)', figs[1][1], 'ms', baseline=figs[0][1],
                 key='sentinel_submit_p99', note=note)
        self.row('sentinel: submits/s on %d connections with WAIT 1 (baseline: none)' % threads, figs[1][2], 'jobs/s',
                 baseline=figs[0][2], key='sentinel_submit_rate', note=note)

        trials = 3 if self.quick else 5
        s, c = self.sentinel_service('sentinel-failover', 1, daemon_extra='  heartbeat_interval_ms: 200\n'
                                                                           '  lease_timeout_ms: 3000')
        promoted_ms, accepted_ms, done_ms = [], [], []
        total = 0
        try:
            s.start_workers(2, 2)
            body = json.dumps({'jobtype': 'true', 'config': 'f'}).encode()
            for t in range(trials):
                m = c.master()
                old_port = c.master_port()
                total = s.trial_batch(m, 'sentinel-%d-' % t, total, 300)
                m.close()
                victim = c.servers[old_port]
                t_kill = time.time()
                victim.kill9()
                accepted = promoted = None
                deadline = time.time() + 60
                while accepted is None or promoted is None:
                    if time.time() > deadline:
                        raise RuntimeError('sentinel trial %d: no failover (promoted %s, accepted %s)'
                                           % (t, promoted, accepted))
                    if promoted is None and c.master_port() not in (0, old_port):
                        promoted = time.time()
                    if accepted is None:
                        try:
                            st, data = s.http('POST', '/api/jobs', body)
                        except OSError:
                            st = 0
                        if st == 201:
                            accepted = time.time()
                            first_id = json.loads(data)['id']
                            total += 1
                    time.sleep(0.01)
                # The job accepted first after the kill runs: dispatch works on the new master.
                m = c.master()
                while m.hget(s.prefix + 'job:%d' % first_id, 'state') != 'done':
                    if time.time() > deadline:
                        raise RuntimeError('sentinel trial %d: job %d not done' % (t, first_id))
                    time.sleep(0.01)
                done_at = time.time()
                m.close()
                promoted_ms.append((promoted - t_kill) * 1000)
                accepted_ms.append((accepted - t_kill) * 1000)
                done_ms.append((done_at - t_kill) * 1000)
                log('sentinel trial %d: promoted %.0f ms, first 201 %.0f ms, its job done %.0f ms' % (
                    t, promoted_ms[-1], accepted_ms[-1], done_ms[-1]))
                victim.restart()  # it comes back as the master it was; the sentinels make it a replica
                c.wait_healthy()
            m = c.master()
            deadline = time.time() + 120
            while True:
                counts = m.hgetall(s.prefix + 'stats:jobs_by_state')
                done = int(counts.get('done', 0))
                if done >= total or time.time() > deadline:
                    break
                time.sleep(0.1)
            m.close()
            if done != total:
                raise RuntimeError('sentinel: %d of %d jobs done: %s' % (done, total, counts))
        finally:
            s.stop()
            c.stop()
        note = '%d trials, down-after-milliseconds 1000, WAIT 1 100; %d of %d jobs done' % (trials, done, total)
        self.row('sentinel: kill -9 of the master -> the sentinels name the replica, p50', pct(promoted_ms, 50), 'ms',
                 key='sentinel_promoted_p50', note=note)
        self.row('sentinel: kill -9 of the master -> the gateway\'s first 201, p50', pct(accepted_ms, 50), 'ms',
                 key='sentinel_accepted_p50', note=note)
        self.row('sentinel: kill -9 of the master -> the gateway\'s first 201, max', max(accepted_ms), 'ms',
                 key='sentinel_accepted_max', note=note)
        self.row('sentinel: kill -9 of the master -> that job done, p50', pct(done_ms, 50), 'ms',
                 key='sentinel_done_p50', note=note)

    def phase_latency(self):
        n = 50 if self.quick else 300
        s = self.service('latency')
        sse = SSE(s.port, s.token)
        simp = None
        try:
            simp = PROCS.start([self.bin('sim-workers'), '--endpoint', s.workers_ep, '--workers', '1', '--slots',
                                '4', '--duration', '600', '--max-seconds', '900'], os.path.join(s.d, 'sim.log'))
            time.sleep(1.0)
            c = http.client.HTTPConnection('127.0.0.1', s.port, timeout=30)
            sent = {}
            for i in range(n):
                t = time.time()
                st, data = s.http('POST', '/api/jobs', json.dumps({'jobtype': 'true', 'config': 'l%d' % i}), conn=c)
                if st != 201:
                    raise RuntimeError('submit: %d %s' % (st, data[:200]))
                sent[json.loads(data)['id']] = t
                time.sleep(0.02)
            s.wait_all_finished(60)
            time.sleep(0.3)
            c.close()
            lat_run = []
            legs = ([], [], [])  # POST sent -> create_time -> dispatch_time -> start_time, ms
            for jid, t in sent.items():
                ct, dt_, st = s.redis.r.hmget(s.prefix + 'job:%d' % jid, 'create_time', 'dispatch_time', 'start_time')
                lat_run.append((float(st) - t) * 1000)
                for leg, a, b in zip(legs, (t, float(ct), float(dt_)), (float(ct), float(dt_), float(st))):
                    leg.append((b - a) * 1000)
            log('submit -> running, p50 of each leg (ms): POST sent -> created in Redis %.2f, created -> leased %.2f, '
                'leased -> started %.2f' % tuple(pct(leg, 50) for leg in legs))
            lat_sse = [(arr - ev['time']) * 1000 for arr, ev in sse.events if ev.get('id') in sent]
        finally:
            sse.close()
            if simp:
                PROCS.stop(simp)
            s.stop()
        self.row('light load: submit -> running, p50 (HTTP POST sent -> start_time)', pct(lat_run, 50), 'ms',
                 target='<= 2', check=('value', '<=', 2), key='lat_run_p50')
        self.row('light load: submit -> running, p99', pct(lat_run, 99), 'ms', target='<= 10',
                 check=('value', '<=', 10), key='lat_run_p99')
        self.row('status change -> SSE client, p50', pct(lat_sse, 50), 'ms', key='lat_sse_p50',
                 note='%d events' % len(lat_sse))
        self.row('status change -> SSE client, p99', pct(lat_sse, 99), 'ms', target='<= 100',
                 check=('value', '<=', 100), key='lat_sse_p99')

    def phase_many_workers(self):
        nw = 1000 if self.quick else 10000
        window = 5 if self.quick else 20
        s = self.service('workers-%d' % nw)
        sims = []
        try:
            # Each simulated worker costs sim-workers two descriptors (its socket's mailbox and its
            # connection): several processes keep each under RLIMIT_NOFILE (which may not be raised).
            per = max(1, min(4000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2))
            k = -(-nw // per)
            outs = []
            for i in range(k):
                m = nw // k + (1 if i < nw % k else 0)
                outf = os.path.join(s.d, 'sim-%d.out' % i)
                outs.append(outf)
                sims.append(PROCS.start([self.bin('sim-workers'), '--endpoint', s.workers_ep, '--workers', str(m),
                                         '--slots', '1', '--idle', '--heartbeat-ms', '1000', '--id-prefix', 'sim%d' % i,
                                         '--duration', str(window + 15), '--max-seconds', str(window + 300)], outf))
            deadline = time.time() + 240
            while time.time() < deadline and not all('all-welcomed' in open(f).read() for f in outs):
                if any(p.poll() is not None for p in sims):
                    raise RuntimeError('sim-workers exited: ' + ' '.join(open(f).read()[-500:] for f in outs))
                time.sleep(0.2)
            if not all('all-welcomed' in open(f).read() for f in outs):
                raise RuntimeError('not every simulated worker was welcomed within 240 s')
            time.sleep(3)  # settle: the first heartbeat rounds and worker hashes
            c0, t0 = cpu_ticks(s.daemon.pid), time.time()
            time.sleep(window)
            c1, t1 = cpu_ticks(s.daemon.pid), time.time()
            cpu = 100.0 * (c1 - c0) / os.sysconf('SC_CLK_TCK') / (t1 - t0)
            rss = rss_mb(s.daemon.pid)
            nworkers = len(s.redis.r.keys(s.prefix + 'worker:*'))
        finally:
            for p in sims:
                PROCS.stop(p)
            s.stop()
        self.row('%d simulated workers, 1 Hz heartbeats, idle: daemon CPU over %d s' % (nw, window), cpu,
                 '% of a core', target='<= 25', check=('value', '<=', 25), key='workers_cpu',
                 note='daemon RSS %.0f MB; %d worker hashes in Redis; %d sim-workers processes' % (rss, nworkers, k))

    def perf_start(self, name, pid):
        """perf record (DWARF call graphs: the binaries have no frame pointers) of one process."""
        if not self.args.profile:
            return None
        os.makedirs(self.args.out, exist_ok=True)
        prefix = os.path.join(self.args.out, 'profile-' + name)
        return (prefix, PROCS.start(['perf', 'record', '-F', '299', '--call-graph', 'dwarf,16384', '-o',
                                     prefix + '-x.data', '-p', str(pid)], prefix + '-x.log'))

    def perf_stop(self, handle):
        if not handle:
            return
        prefix, p = handle
        p.send_signal(signal.SIGINT)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            PROCS.stop(p)
        if p in PROCS.live:
            PROCS.live.remove(p)
        self.perf_report(prefix, names=('x',))
        if os.path.exists(prefix + '-x.txt'):
            os.replace(prefix + '-x.txt', prefix + '.txt')

    def commandstats(self, res, what):
        """Redis's per-command calls and CPU during a sim run, per completed job, to a text file."""
        os.makedirs(self.args.out, exist_ok=True)
        path = os.path.join(self.args.out, 'redis-commandstats-dispatch.txt')
        n = max(1.0, float(res['completed']))
        with open(path, 'a' if getattr(self, '_cs_written', False) else 'w') as f:
            f.write('# Redis INFO commandstats during the dispatch run (%s): EVALSHA %.0f us per job (its time\n'
                    '# includes the commands the scripts call, which are listed again below); the Redis process\n'
                    '# used %.0f us of CPU per job over the whole run (/proc, AOF writing included)\n' % (
                        what, res['redis_evalsha_us_per_job'], res['redis_cpu_us_per_job']))
            f.write('%-14s %12s %10s %12s %12s\n' % ('command', 'calls', 'per job', 'usec', 'us per job'))
            for k, (c, u) in sorted(res['redis_cmds'].items(), key=lambda kv: -kv[1][1]):
                f.write('%-14s %12d %10.2f %12d %12.1f\n' % (k, c, c / n, u, u / n))
            f.write('\n')
        self._cs_written = True

    def perf_report(self, prefix, names=('daemon', 'redis')):
        """Flat and caller-inclusive top lists of a perf recording, as text next to the results."""
        for name in names:
            data = '%s-%s.data' % (prefix, name)
            if not os.path.exists(data):
                continue
            with open('%s-%s.txt' % (prefix, name), 'w') as f:
                for extra in (['--no-children'], ['--children']):
                    r = subprocess.run(['perf', 'report', '-i', data, '--stdio', '-g', 'none', '--percent-limit', '0.7']
                                       + extra, capture_output=True, text=True)
                    f.write('## perf report %s\n' % ' '.join(extra) + r.stdout + '\n')
            os.remove(data)
            for junk in (prefix + '-' + name + '.log',):
                if os.path.exists(junk):
                    os.remove(junk)

    # ---------------------------------------------------------------- output
    def merge_previous(self):
        """With --only: rows of the earlier results.csv that this run did not measure are kept."""
        import csv
        path = os.path.join(self.args.out, 'results.csv')
        if not self.args.only or not os.path.exists(path):
            return
        mine = {r['key'] for r in self.rows}
        old = []
        for c in csv.DictReader(open(path)):
            if c['key'] in mine:
                continue
            num = lambda x: float(x) if x not in ('', None) else None
            old.append(dict(key=c['key'], measure=c['measure'], value=float(c['value']), unit=c['unit'],
                            baseline=num(c['baseline']), ratio=num(c['ratio']), target=c['target'],
                            holds=None if c['holds'] == '' else c['holds'] == 'yes', note=c['note']))
        order = [r['key'] for r in old]
        merged = old + [r for r in self.rows]
        # keep the earlier order; new keys go where they were, or at the end
        pos = {k: i for i, k in enumerate(order)}
        self.rows = sorted(merged, key=lambda r: pos.get(r['key'], len(order)))

    def report(self):
        out = self.args.out
        os.makedirs(out, exist_ok=True)
        self.merge_previous()
        hdr = ['measure', 'value', 'unit', 'baseline', 'ratio', 'target', 'holds']
        lines = [hdr]
        for r in self.rows:
            lines.append([r['measure'], fmt(r['value']), r['unit'], fmt(r['baseline']) if r['baseline'] else '',
                          '%.2f' % r['ratio'] if r['ratio'] is not None else '', r['target'],
                          '' if r['holds'] is None else ('yes' if r['holds'] else 'NO')])
        w = [max(len(l[i]) for l in lines) for i in range(len(hdr))]
        print()
        for k, l in enumerate(lines):
            print('  '.join(c.ljust(w[i]) if i in (0, 2, 5) else c.rjust(w[i]) for i, c in enumerate(l)))
            if k == 0:
                print('  '.join('-' * x for x in w))
        # The end-to-end rows (one per worker layout) are one target, met if any layout meets it.
        is_e2e = lambda r: r['key'].startswith('e2e_') and r['key'][4:5].isdigit()
        held = [r for r in self.rows if r['holds'] is not None and not is_e2e(r)]
        e2e = [r for r in self.rows if r['holds'] is not None and is_e2e(r)]
        n_held = sum(1 for r in held if r['holds']) + (1 if any(r['holds'] for r in e2e) else 0)
        print('\n%d of %d targets hold%s.%s' % (n_held, len(held) + (1 if e2e else 0),
                                              ' (the %d end-to-end rows are one target)' % len(e2e) if len(e2e) > 1 else '',
                                              ' (--quick: small sizes, not the real figures)' if self.quick else ''))
        import csv
        with open(os.path.join(out, 'results.csv'), 'w', newline='') as f:
            cw = csv.writer(f)
            cw.writerow(['key'] + hdr + ['note'])
            for r in self.rows:
                cw.writerow([r['key'], r['measure'], '%.6g' % r['value'], r['unit'],
                             '%.6g' % r['baseline'] if r['baseline'] else '',
                             '%.4g' % r['ratio'] if r['ratio'] is not None else '', r['target'],
                             '' if r['holds'] is None else ('yes' if r['holds'] else 'no'), r['note']])
        with open(os.path.join(out, 'machine.txt'), 'w') as f:
            f.write(machine())
        self.plots(out)
        print('Wrote %s/results.csv, machine.txt and plots (*.png).' % out)

    def plots(self, out):
        if not shutil.which('gnuplot'):
            log('gnuplot not found: no plots')
            return
        by = {r['key']: r['value'] for r in self.rows}
        bars = [('spawn ceiling (C, %d drivers)' % CORES, by.get('spawn')), ('xargs -P%d' % CORES, by.get('xargs'))]
        for k in sorted(by):
            if k.startswith('e2e_') and k[4:5].isdigit():
                bars.append(('DESCprod end to end %s' % k[4:], by[k]))
        bars.append(('Celery 5.2 + Redis', by.get('celery')))
        bars.append(('Celery, acks_late', by.get('celery_late')))
        bars.append(('Celery, %d procs' % (2 * CORES), by.get('celery_2x')))
        bars += PUBLISHED
        bars = [(n, v) for n, v in bars if v]
        if bars:
            dat = os.path.join(out, 'throughput.dat')
            with open(dat, 'w') as f:
                for i, (n, v) in enumerate(bars):
                    f.write('%d "%s" %.1f\n' % (i, n, v))
            gp(out, '''set terminal pngcairo size 1000,560 font ",10" noenhanced
set rmargin 10
set output "%(o)s/throughput.png"
set title "Process jobs (/bin/true) per second on this machine (%(c)d cores); published peer figures for context"
set style fill solid 0.8 border -1
set boxwidth 0.7
set ylabel "jobs/s"
set grid ytics
set xtics rotate by -30 left
set yrange [0:*]
unset key
plot "%(d)s" using 1:3:xtic(2) with boxes lc rgb "#4477aa", "" using 1:3:(sprintf("%%.0f",$3)) with labels offset 0,0.7
''' % dict(o=out, d=dat, c=CORES))
            os.remove(dat)
        if getattr(self, 'depth_rates', None):
            dat = os.path.join(out, 'depth.dat')
            with open(dat, 'w') as f:
                for d, r, rs in self.depth_rates:
                    f.write('%d %.1f %.1f\n' % (d, r, rs))
            gp(out, '''set terminal pngcairo size 800,480 font ",10" noenhanced
set output "%(o)s/dispatch-vs-depth.png"
set title "Daemon dispatch rate (sim-workers) against queue depth"
set logscale x
set xlabel "jobs queued when dispatch starts"
set ylabel "jobs/s"
set yrange [0:*]
set grid
set key bottom left
plot "%(d)s" using 1:2 with linespoints lw 2 pt 7 title "all transitions persisted in Redis", \\
     "" using 1:3 with linespoints lw 1 pt 6 title "as seen by sim-workers"
''' % dict(o=out, d=dat))
            os.remove(dat)


class SSE:
    """Reads GET /api/events in a thread; keeps (arrival epoch, event data)."""

    def __init__(self, port, token):
        self.events = []
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.sock.sendall(('GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n'
                           'Accept: text/event-stream\r\n\r\n' % token).encode())
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        buf = b''
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                now = time.time()
                buf += data
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if line.startswith(b'data: '):
                        try:
                            self.events.append((now, json.loads(line[6:])))
                        except ValueError:
                            pass
        except OSError:
            return

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def gp(out, script):
    p = subprocess.run(['gnuplot'], input=script, text=True, capture_output=True)
    if p.returncode != 0:
        log('gnuplot failed: ' + p.stderr[-500:])


def kv(line):
    out = {}
    for tok in line.split():
        if '=' in tok:
            k, v = tok.split('=', 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def fmt(v):
    if v is None:
        return ''
    if v != v:
        return 'n/a'
    if abs(v) >= 100:
        return '{:,.0f}'.format(v)
    if abs(v) >= 10:
        return '%.1f' % v
    return '%.2f' % v


def machine():
    model = ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    for line in open('/proc/meminfo'):
        if line.startswith('MemTotal:'):
            mem = int(line.split()[1]) / 1024 / 1024
    osr = ''
    try:
        osr = [l.split('=', 1)[1].strip().strip('"') for l in open('/etc/os-release') if l.startswith('PRETTY_NAME=')][0]
    except (OSError, IndexError):
        pass
    redis_v = subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.strip()
    return ('date: %s\nnproc: %d\ncpu: %s\nmemory: %.1f GiB\nos: %s\nkernel: %s\nredis: %s\n' % (
        time.strftime('%Y-%m-%d %H:%M:%S %Z'), CORES, model, mem, osr, platform.release(), redis_v))


def main():
    ap = argparse.ArgumentParser(description='DESCprod benchmarks (run through scripts/bench).')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--build-dir', default=os.path.join(ROOT, 'build-bench'))
    ap.add_argument('--out', default=os.path.join(ROOT, 'docs', 'perf'))
    ap.add_argument('--only', default='', help='comma-separated phases: e2e,celery,worker,dispatch,http,find,fair,deps,latency,failover,sentinel,workers '
                    '(their rows replace those in an existing results.csv; the others are kept)')
    ap.add_argument('--e2e-jobs', type=int, default=20000)
    ap.add_argument('--sim-workers', type=int, default=8)
    ap.add_argument('--sim-slots', type=int, default=128)
    ap.add_argument('--wrk-connections', type=int, default=64)
    ap.add_argument('--log-level', default='info')
    ap.add_argument('--keep', action='store_true', help='keep the scratch directories (logs)')
    ap.add_argument('--run-dirs', default='tmpfs',
                    help="where workers put run directories: tmpfs (default: /dev/shm) or a directory")
    ap.add_argument('--profile', action='store_true', help='perf-record daemon and Redis during dispatch')
    args = ap.parse_args()
    raise_nofile()
    b = Bench(args)
    log('scratch directory %s; run directories on %s (%s); %s' % (
        b.work, b.run_dirs_kind, b.run_dirs, machine().replace('\n', '; ')))
    phases = [('e2e', b.phase_e2e), ('celery', b.phase_celery), ('worker', b.phase_worker),
              ('dispatch', b.phase_dispatch),
              ('http', b.phase_http), ('find', b.phase_find), ('fair', b.phase_fair), ('deps', b.phase_deps),
              ('latency', b.phase_latency), ('failover', b.phase_failover), ('sentinel', b.phase_sentinel),
              ('workers', b.phase_many_workers)]
    only = set(filter(None, args.only.split(',')))
    if 'celery' in only:
        only.add('e2e')
    failed = []

    def on_signal(sig, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name, fn in phases:
            if only and name not in only:
                continue
            log('phase %s' % name)
            try:
                fn()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one broken phase does not lose the others
                log('phase %s FAILED: %s' % (name, e))
                failed.append(name)
        b.report()
    finally:
        PROCS.stop_all()
        if not args.keep:
            shutil.rmtree(b.work, ignore_errors=True)
            shutil.rmtree(b.run_dirs, ignore_errors=True)
        else:
            log('kept %s and %s' % (b.work, b.run_dirs))
    if failed:
        print('failed phases: ' + ', '.join(failed))
        sys.exit(1)


if __name__ == '__main__':
    main()
