"""The README's deployment on several hosts, as a lab would run it (issue 18, point 4).

Two hosts, ``alpha`` and ``beta``, each its own process tree (``manage.py
workers``) with its own DISTRIBUTOR_HOST and its own data folder, sharing
only the database, the broker and SECRET_KEY. A Genode target of four
task-loader peers (tests/peer); the binary is uploaded through alpha's
command line, so only the database holds it and beta's machines must
fetch it into beta's own cache.

1. A missing file on one host costs no try: beta's cache cannot hold the
   binary (its place is taken by a folder), so beta's machines meet a host
   fault on their first task-set. A job with one try per task-set ends with
   none bad; beta is marked unable to run the target until the operator
   fixes it and runs ``distributor host beta resume``.
2. A job spread over both hosts; the binary is uploaded again through
   alpha while it runs, and every process of beta is SIGKILLed in the
   middle of it: the job ends with every task-set finished, none bad, none
   stored twice, and every target got only the build the job named.
3. SIGTERM to alpha's launcher leaves no process of alpha behind.

The broker: Redis database 14 on PostgreSQL (``TWO_HOSTS_REDIS_URL``), the
ORM broker on SQLite; this process uses the same one, since its ticks send
launch messages too (see tests/test_chaos.py on django-q2's Conf).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import Count

from distributor import reconciler
from distributor.models import Attempt, Binary, HostTargetFault, Job, Machine, Target, TaskJob, TaskSet
from distributor.queue import submit_job
from tests.cluster import ROOT, clusters_broker, short_timeouts, test_database_url, wait_until
from tests.peer import TaskLoaderPeer

HEY = b"\x7fELF hey, uploaded through alpha " * 64
REDIS_URL = os.environ.get("TWO_HOSTS_REDIS_URL", "redis://127.0.0.1:6379/14")
WORKERS = 2
PEERS = 4
JOBS_PER_TASK = 2


def job_file(count: int) -> bytes:
    """``count`` task-sets of two tasks, two jobs each, some 60 ms per set."""
    return json.dumps({"name": "two hosts", "tasksets": [{"tasks": [
        {"pkg": "hey", "config": {"arg1": {"range": [0, count]}}, "period": 30, "priority": 1,
         "numberofjobs": JOBS_PER_TASK},
        {"pkg": "hey", "config": {"arg1": 3}, "period": 30, "priority": 2, "numberofjobs": JOBS_PER_TASK},
    ]}]}).encode()


def exec_time(task: dict, number: int) -> int:
    return 2


class Host:
    """One host: ``manage.py workers`` with its own name and data folder; every
    process it ever starts carries its marker in the environment."""

    def __init__(self, name: str, data_dir: Path, broker_url: str):
        self.name, self.data_dir = name, data_dir
        self.marker = uuid.uuid4().hex
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k != "Q_CLUSTER_NAME"}
        self.env.update({
            "DATABASE_URL": test_database_url(), "REDIS_URL": broker_url, "SECRET_KEY": settings.SECRET_KEY,
            "DISTRIBUTOR_HOST": name, "DATA_DIR": str(data_dir), "DISTRIBUTOR_MACHINE_WORKERS": str(WORKERS),
            "PYTHONPATH": str(ROOT), "TWO_HOSTS_RUN": self.marker,
        })
        self.process: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        """A command run on this host (its environment)."""
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        with open(self.data_dir / "workers.log", "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "workers"], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def processes(self) -> list[int]:
        """Every live process of this host (not zombies): found by the marker."""
        needle, found = f"TWO_HOSTS_RUN={self.marker}".encode(), []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    ours = needle in handle.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as handle:
                    zombie = handle.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if ours and not zombie:
                found.append(int(entry))
        return found

    def kill_everything(self) -> None:
        """A host lost: SIGKILL to every process it runs, at once."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process:
            self.process.wait(timeout=10)


@pytest.fixture
def broker(monkeypatch):
    with clusters_broker(monkeypatch, REDIS_URL) as client:
        yield REDIS_URL if client else ""


@pytest.fixture
def hosts(transactional_db, broker, tmp_path):
    short_timeouts(launch_timeout_s=30, target_timeout_s=5, idle_timeout_s=30)
    made = {name: Host(name, tmp_path / name, broker) for name in ("alpha", "beta")}
    try:
        yield made
    finally:
        reconciler.kill_all()
        for host in made.values():
            host.kill_everything()


def finished_on(job: Job, host: str) -> int:
    return Attempt.objects.filter(taskset__job=job, result=Attempt.Result.FINISHED, machine__host=host).count()


def wait_for_job(job: Job, timeout: float) -> Job:
    wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, timeout, tick=True, message=f"job {job.pk} ends")
    job.refresh_from_db()
    return job


def assert_every_taskset_finished_once(job: Job) -> None:
    tasksets = job.tasksets.all()
    assert job.state == Job.State.FINISHED and job.bad_count == 0, (job.state, job.bad_count)
    assert sorted(tasksets.values_list("variant", flat=True)) == list(range(job.total))
    assert Counter(tasksets.values_list("state", flat=True)) == {TaskSet.State.FINISHED: job.total}
    finished = Attempt.objects.filter(taskset__job=job, result=Attempt.Result.FINISHED)
    assert finished.count() == job.total and finished.values("taskset").distinct().count() == job.total
    rows = TaskJob.objects.filter(taskset__job=job).values("taskset").annotate(n=Count("pk"))
    assert len(rows) == job.total and {row["n"] for row in rows} == {2 * JOBS_PER_TASK}, "task-jobs stored once"


@pytest.mark.slow
def test_two_hosts_with_their_own_data_folders_share_uploads_survive_a_lost_host_and_stop_clean(hosts, tmp_path):
    alpha, beta = hosts["alpha"], hosts["beta"]
    source = tmp_path / "hey.elf"
    source.write_bytes(HEY)
    sha256 = hashlib.sha256(HEY).hexdigest()
    with peer_farm() as peers:
        target = Target.objects.create(name="lab", kind="genode", addresses=[p.address for p in peers],
                                       settings={"connect_timeout": 5.0, "startup_timeout": 20.0})
        assert f"sha256 {sha256}" in alpha.manage("binary", "add", str(source), "--name", "hey")
        assert Binary.objects.get().sha256 == sha256
        alpha.start()
        beta.start()
        wait_until(lambda: beating({"alpha", "beta"}), 90, message="both hosts beat")
        reconciler.set_max_machines(PEERS)

        # 1. A host that cannot keep the binary costs no try; the target stays off it.
        (beta.data_dir / "cache" / sha256 / "in-the-way").mkdir(parents=True)
        first = wait_for_job(submit_job(job_file(100), target=target, tries=1), 120)
        assert_every_taskset_finished_once(first)
        assert set(first.tasksets.values_list("runs", flat=True)) == {1}, "no try used by beta's fault"
        fault = HostTargetFault.objects.get()
        assert (fault.host, fault.target_id) == ("beta", target.pk) and "binary 'hey': cannot keep a copy" in fault.cause
        assert Machine.objects.filter(host="beta", state=Machine.State.FAILED,
                                      last_error__contains="this host cannot run the target").exists()
        assert finished_on(first, "beta") == 0
        assert "beta: faulty" in alpha.manage("distributor", "status")

        (beta.data_dir / "cache" / sha256 / "in-the-way").rmdir()
        (beta.data_dir / "cache" / sha256).rmdir()
        assert "host beta resumed (1 fault(s) lifted)" in beta.manage("distributor", "host", "beta", "resume")

        # 2. A job over both hosts; beta lost in the middle of it.
        second = submit_job(job_file(600), target=target, tries=3)
        wait_until(lambda: finished_on(second, "alpha") >= 20 and finished_on(second, "beta") >= 20, 120, tick=True,
                   message="both hosts run the job")
        assert (beta.data_dir / "cache" / sha256).read_bytes() == HEY, "beta fetched its own copy"
        assert (alpha.data_dir / "cache" / sha256).read_bytes() == HEY
        rebuilt = tmp_path / "hey-rebuilt.elf"
        rebuilt.write_bytes(HEY + b" rebuilt")
        alpha.manage("binary", "add", str(rebuilt), "--name", "hey")  # mid-job: the job keeps what it named
        on_beta = set(Machine.objects.filter(host="beta", state__in=Machine.LIVE_STATES).values_list("pk", flat=True))
        beta.kill_everything()
        wait_until(lambda: not beta.processes(), 10, message="every process of beta is gone")
        ended = Job.objects.filter(pk=second.pk, state=Job.State.FINISHED).exists()
        assert not ended, "the job ended before beta was lost: make it longer"
        wait_until(lambda: not Machine.objects.filter(pk__in=on_beta, state__in=Machine.LIVE_STATES).exists(), 30,
                   tick=True, message="beta's machines are declared dead")
        second = wait_for_job(second, 300)
        assert_every_taskset_finished_once(second)
        assert finished_on(second, "beta") >= 20 and finished_on(second, "alpha") > finished_on(second, "beta")
        for peer in peers:
            assert all(boot.binaries.get("hey") in (None, HEY) for boot in peer.boots), "never the rebuilt one"
        assert second.contents.get(name="hey").sha256 == sha256
        assert sum(name == "hey" for peer in peers for _, name in peer.received_binaries()) >= PEERS

        # 3. SIGTERM to alpha's launcher stops everything it started.
        assert len(alpha.processes()) > 2
        alpha.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not alpha.processes(), 30, every=0.2,
                   message=f"every process of alpha exits after SIGTERM to its launcher (left: {alpha.processes()})")


def beating(names: set[str]) -> bool:
    from distributor.models import Host as HostRow

    return set(HostRow.objects.filter(name__in=names, heartbeat_at__isnull=False).values_list("name", flat=True)) == names


@contextmanager
def peer_farm():
    with ExitStack() as stack:
        yield [stack.enter_context(TaskLoaderPeer(f"127.0.0.{30 + i}", time_scale=1, exec_time=exec_time,
                                                  slow_start_seconds=0.1)) for i in range(PEERS)]
