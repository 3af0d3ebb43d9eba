"""Real django-q2 cluster processes for tests, pointed at the test database.

Each cluster runs in a process group of its own, so a test can kill it the
way a crash would (SIGKILL to every process) and start it again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database the running test uses, for child processes."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Cluster:
    """One qcluster (the default one, or a host's machines cluster)."""

    def __init__(self, name: str | None = None, host: str | None = None, workers: int = 4, extra_env: dict | None = None,
                 data_dir: Path | None = None):
        self.host = host or settings.DISTRIBUTOR_HOST
        self.name = name
        self.workers = workers
        self.extra_env = extra_env or {}
        # A host's own data folder (two hosts have two disks); the test's by default.
        self.data_dir = Path(data_dir or settings.DATA_DIR)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"cluster-{name or 'default'}-{self.host}.log"

    @classmethod
    def machines(cls, host: str | None = None, **kwargs) -> "Cluster":
        host = host or settings.DISTRIBUTOR_HOST
        return cls(name=f"machines-{host}", host=host, **kwargs)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "Q_CLUSTER_NAME"}
        env.update({
            "DATABASE_URL": test_database_url(),
            "DATA_DIR": str(self.data_dir),
            # django-q2 signs launch messages with it: the cluster must share it
            "SECRET_KEY": settings.SECRET_KEY,
            "DISTRIBUTOR_HOST": self.host,
            "DISTRIBUTOR_MACHINE_WORKERS": str(self.workers),
            "DISTRIBUTOR_SESSION_MODULES": "tests.fake_sessions",
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        })
        if self.name:
            env["Q_CLUSTER_NAME"] = self.name
        return env

    def start(self) -> "Cluster":
        log = open(self.log_path, "ab")
        command = "hostcluster" if self.name and self.name.startswith("machines-") else "qcluster"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), command], cwd=ROOT, env=self.env(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 30) -> "Cluster":
        """Until the host beats: machines are placed only on live hosts."""
        from distributor.models import Host

        wait_until(lambda: Host.objects.filter(name=self.host, heartbeat_at__isnull=False, pid__isnull=False)
                   .exclude(pid=os.getpid()).exists(), timeout, message=f"host {self.host} beats")
        return self

    def pids(self) -> list[int]:
        """Every process of the cluster (its group)."""
        out = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill9(self) -> None:
        """A crash: SIGKILL to every process of the cluster at once."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        if not self.process or self.process.poll() is not None:
            return
        # Like Ctrl-C: only the cluster's parent is told; it stops its workers.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()


def wait_until(condition, timeout: float, every: float = 0.05, tick: bool = False, message: str = "") -> float:
    """Poll ``condition`` until true; returns the seconds it took.

    With ``tick`` the test also plays the reconciler's schedule, calling
    ``tick()`` every half second as the default cluster does every minute."""
    from distributor.reconciler import tick as reconcile

    started = time.monotonic()
    next_tick = started
    while True:
        if condition():
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > timeout:
            raise AssertionError(f"not within {timeout} s: {message or condition}")
        if tick and now >= next_tick:
            reconcile()
            next_tick = now + 0.5
        time.sleep(every)


test_database_url.__test__ = False  # a helper, not a test


@contextmanager
def clusters_broker(monkeypatch, redis_url: str):
    """The broker this process and the clusters it starts share, for a test
    of whole hosts: on SQLite django-q2's ORM broker (yields None), on
    PostgreSQL the Redis database ``redis_url``, emptied before and after
    (yields its client). No Redis on PostgreSQL is a failure, not a skip."""
    import redis
    from django_q.conf import Conf

    if connection.vendor != "postgresql":
        monkeypatch.setattr(Conf, "ORM", "default")
        monkeypatch.setattr(Conf, "REDIS", {})
        yield None
        return
    client = redis.from_url(redis_url)
    client.ping()
    client.flushdb()
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", redis_url)
    monkeypatch.setattr(Conf, "DJANGO_REDIS", None)
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def short_timeouts(**overrides):
    """Distributor settings for tests with real clusters: dead machines are
    noticed in seconds, idle ones stop quickly."""
    from distributor.models import DistributorConfig

    config = DistributorConfig.get()
    for name, value in {"heartbeat_timeout_s": 3, "launch_timeout_s": 60, "idle_timeout_s": 2,
                        "target_timeout_s": 5, **overrides}.items():
        setattr(config, name, value)
    config.save()
    return config


def store_binaries(binaries: dict[str, bytes]):
    """Binary rows with their content in the database, where every host's
    clusters read it; a generator for fixtures: yields the rows."""
    from django.core.files.base import ContentFile

    from distributor.models import Binary

    yield [Binary.store(name, ContentFile(data))[0] for name, data in binaries.items()]


def join_machine_threads(threads, timeout: float = 10) -> None:
    """Join machines run in this process's threads. One still running after
    ``timeout`` is killed as an operator would, so that it never outlives its
    test and writes into the next one."""
    from distributor.models import Machine

    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        Machine.objects.filter(state__in=Machine.LIVE_STATES).update(stop_mode=Machine.StopMode.KILL)
        for thread in threads:
            thread.join(10)


@contextmanager
def machines_cluster_running(workers: int = 5):
    """This host's machines cluster for one test: started, ready, and at the
    end every machine killed and the cluster stopped."""
    cluster = Cluster.machines(workers=workers).start().wait_ready()
    try:
        yield cluster
    finally:
        kill_machines_and_stop(cluster)


def kill_machines_and_stop(*clusters: Cluster, timeout: float = 15) -> None:
    """A test's end: kill every machine as the operator would, wait until none
    is live (their task-sets back in the queue), then stop the clusters."""
    from distributor import reconciler
    from distributor.models import Machine

    reconciler.kill_all()
    try:
        wait_until(lambda: not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists(), timeout,
                   message="machines stop after the test")
    finally:
        for cluster in clusters:
            cluster.stop()


def stored_taskjobs(taskset) -> list[tuple]:
    """(task id, job number, start, end, exit type) of a task-set's stored task-jobs, the shape of
    ``tests.peer.peer_taskjobs``."""
    from distributor.models import TaskJob

    return sorted(TaskJob.objects.filter(taskset=taskset).values_list(
        "task__task_id", "job_number", "start_ms", "end_ms", "exit_type"))
