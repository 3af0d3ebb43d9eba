"""`serve` runs the web server and both clusters; Ctrl-C stops all of them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from distributor.models import Host, Job, TaskSet
from tests.cluster import ROOT, test_database_url, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(data_dir, *args: str, **kwargs) -> tuple[subprocess.Popen, dict, int]:
    """``manage.py serve`` on a free port, in a session of its own, on the test
    database with the scripted kind loaded: (process, its environment, port)."""
    port = free_port()
    process, env = start_launcher("serve", data_dir, "--port", str(port), *args, **kwargs)
    wait_until_serving(process, port)
    return process, env, port


def wait_until_serving(process: subprocess.Popen, port: int, seconds: float = 90) -> None:
    """``serve`` answers its login page: on a loaded machine it takes seconds
    to listen, and a script's first request before that is refused (a flaky CI run)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited with {process.returncode} before it answered"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"serve did not answer on port {port} within {seconds} s")


def start_launcher(command: str, data_dir, *args: str, stderr=subprocess.DEVNULL,
                   ignore_sigint: bool = False, extra_env: dict | None = None) -> tuple[subprocess.Popen, dict]:
    """``manage.py serve`` or ``workers`` as above; with ``ignore_sigint`` it
    starts with SIGINT ignored, as under ``nohup`` or as a script's background job."""
    env = {**os.environ, "DATABASE_URL": test_database_url(), "DATA_DIR": str(data_dir),
           "DISTRIBUTOR_MACHINE_WORKERS": "2", "DISTRIBUTOR_SESSION_MODULES": "tests.fake_sessions",
           "PYTHONPATH": str(ROOT), **(extra_env or {})}
    env.pop("Q_CLUSTER_NAME", None)
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    process = subprocess.Popen([sys.executable, "manage.py", command, *args], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, preexec_fn=ignore)
    return process, env


def session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-e", "-o", "sid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(sid)]


def descendants_alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]


def stop_serve(serve: subprocess.Popen) -> None:
    """After a test: Ctrl-C to the launcher's group, a kill if it hangs, and
    nothing it started left behind."""
    descendants = all_descendants(serve.pid)
    if serve.poll() is None:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
    for pid in descendants_alive(descendants):
        os.kill(pid, signal.SIGKILL)


def all_descendants(root: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_serve_runs_a_job_and_ctrl_c_stops_every_process(settings):
    from distributor.queue import submit_job

    serve, env, port = start_serve(settings.DATA_DIR)
    try:
        wait_until(lambda: Host.objects.filter(heartbeat_at__isnull=False).exists(), 60, every=0.2,
                   message="the machines cluster beats")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs")
        assert refused.value.code in (401, 403)  # the web server answers, and wants a login

        job = submit_job(open(ROOT / "fixtures" / "example5.json", "rb").read(), filename="example5.json")
        wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 60, every=0.2, message="the job ends")
        assert job.tasksets.filter(state=TaskSet.State.FINISHED).count() == job.total

        family = all_descendants(serve.pid)
        assert len(family) >= 4, "two clusters with their sentinels and workers"
        os.killpg(serve.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        serve.wait(timeout=40)
        wait_until(lambda: not descendants_alive(family), 20, message="every cluster process stops")
        assert not session_processes(serve.pid)
        assert Host.objects.get().heartbeat_at is None  # a clean stop silences the host at once
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        for pid in descendants_alive(all_descendants(serve.pid)):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def stops_cleanly(launcher: subprocess.Popen, sig: int, stderr_path, timeout: float = 60,
                  again_after: float | None = None) -> float:
    """Send ``sig`` to the launcher's process group (what a terminal, systemd's
    default or ``kill -- -PGID`` does; its clusters run in sessions of their
    own, so the launcher alone gets it); it must exit 0 with no traceback on
    stderr and leave no process behind. Returns the seconds it took. With
    ``again_after`` the signal is sent a second time after so many seconds."""
    # Each cluster: its command, the sentinel, monitor, pusher and two workers.
    wait_until(lambda: len(all_descendants(launcher.pid)) >= 12, 60, every=0.2, message="both clusters run")
    family = all_descendants(launcher.pid)
    started = time.monotonic()
    os.killpg(launcher.pid, sig)
    if again_after is not None:
        time.sleep(again_after)
        os.killpg(launcher.pid, sig)
    assert launcher.wait(timeout=timeout) == 0, open(stderr_path).read()[-3000:]
    took = time.monotonic() - started
    wait_until(lambda: not descendants_alive(family), 10, message="every cluster process stops")
    assert not session_processes(launcher.pid)
    stderr = open(stderr_path).read()
    assert "Traceback" not in stderr, stderr[-3000:]
    return took


def stop_leftovers(launcher: subprocess.Popen) -> None:
    if launcher.poll() is None:
        os.killpg(launcher.pid, signal.SIGKILL)
    for pid in descendants_alive(all_descendants(launcher.pid)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig, ignore_sigint", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["sigterm", "sigint-while-ignored"])
def test_serve_stops_on_sigterm_and_on_sigint_even_when_started_with_sigint_ignored(settings, tmp_path, sig,
                                                                                     ignore_sigint):
    """What systemd and docker send, and a script's background job (SIGINT
    ignored, as from nohup): exit status 0, no traceback, nothing left."""
    stderr = open(tmp_path / "serve.err", "wb")
    serve, env, port = start_serve(settings.DATA_DIR, stderr=stderr, ignore_sigint=ignore_sigint)
    try:
        wait_until(lambda: Host.objects.filter(heartbeat_at__isnull=False).exists(), 60, every=0.2,
                   message="the machines cluster beats")
        stops_cleanly(serve, sig, tmp_path / "serve.err")
        assert Host.objects.get().heartbeat_at is None
    finally:
        stderr.close()
        stop_leftovers(serve)
