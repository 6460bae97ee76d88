#!/usr/bin/env python3
"""bench/celery-bench.py: the Celery baseline of scripts/bench.

N tasks, each running the process `true` (subprocess.run(['true'])), through Celery 5.2 (Debian's
python3-celery) with Redis as broker and result backend, configured fairly: one worker with 2
prefork processes (--concurrency), `-O fair`, prefetch multiplier 1, acks_late. Measures the wall
time from the first submit to the last result. The Redis server is the caller's (a unix socket).
--acks-late 0 runs the same without acks_late: on this Celery/kombu the acks_late + prefetch 1
combination stalls its consumer for up to a second at a time, so scripts/bench measures both and
takes the faster one as the baseline.
Prints one line: celery n=N seconds=S rate=R.
"""
import argparse, os, signal, subprocess, sys, tempfile, textwrap, time

TASKS = textwrap.dedent('''
    import subprocess
    from celery import Celery
    import os
    url = 'redis+socket://' + os.environ['CELERY_BENCH_REDIS']
    app = Celery('celery_tasks', broker=url, backend=url)
    app.conf.update(task_acks_late=os.environ.get('CELERY_BENCH_ACKS_LATE', '1') == '1', worker_prefetch_multiplier=1, result_expires=3600,
                    broker_connection_retry_on_startup=True, task_serializer='json',
                    result_serializer='json', accept_content=['json'])

    @app.task
    def run_true():
        return subprocess.run(['true']).returncode
''')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=1000)
    ap.add_argument('--redis-socket', required=True)
    ap.add_argument('--concurrency', type=int, default=2)
    ap.add_argument('--timeout', type=float, default=600)
    ap.add_argument('--acks-late', type=int, default=1, choices=(0, 1), help='task_acks_late (default 1)')
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix='celery-bench.')
    with open(os.path.join(d, 'celery_tasks.py'), 'w') as f:
        f.write(TASKS)
    env = dict(os.environ, CELERY_BENCH_REDIS=a.redis_socket, PYTHONPATH=d, CELERY_BENCH_ACKS_LATE=str(a.acks_late))
    os.environ.update(CELERY_BENCH_REDIS=a.redis_socket, CELERY_BENCH_ACKS_LATE=str(a.acks_late))
    sys.path.insert(0, d)
    log = open(os.path.join(d, 'worker.log'), 'w')
    w = subprocess.Popen([sys.executable, '-m', 'celery', '-A', 'celery_tasks', 'worker', '-P', 'prefork',
                          '-c', str(a.concurrency), '-O', 'fair', '--prefetch-multiplier', '1',
                          '--without-gossip', '--without-mingle', '--loglevel', 'WARNING'],
                         cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import celery_tasks
        # Warm-up: the worker is up and its pool processes are forked.
        celery_tasks.run_true.delay().get(timeout=60)
        celery_tasks.run_true.delay().get(timeout=60)
        t0 = time.time()
        rs = [celery_tasks.run_true.delay() for _ in range(a.n)]
        deadline = t0 + a.timeout
        for r in rs:
            rc = r.get(timeout=max(1, deadline - time.time()))
            if rc != 0:
                raise SystemExit('celery task returned %r' % rc)
        t1 = time.time()
        print('celery n=%d acks_late=%d seconds=%.3f rate=%.1f' % (a.n, a.acks_late, t1 - t0, a.n / (t1 - t0)), flush=True)
    finally:
        os.killpg(w.pid, signal.SIGTERM)
        try:
            w.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()
        log.close()
        import shutil
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    main()
