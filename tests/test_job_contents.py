"""Jobs name the content they run by checksum (issue 18, point 1).

A job names the binaries of its tasks' pkgs and the boot images of its pool
when it is submitted (or, for one uploaded later, when a machine first needs
it); every task-set of the job then runs that content on every host, even
after the upload is replaced. The job page, the API, ``jobs show --json`` and
the SQLite export say what it ran; the content stays in the database while a
job names it, until ``purge --contents``.
"""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from distributor.exports import Selection, export
from distributor.files import UploadedFiles
from distributor.models import Binary, Blob, BootImage, Job, JobContent, Target, TaskSet
from distributor.queue import submit_job
from tests.conftest import taskset_file
from tests.inprocess import run_launched
from tests.peer import TaskLoaderPeer

V1, V2 = b"\x7fELF hey, first build", b"\x7fELF hey, second build, fixed"
SHA1, SHA2 = hashlib.sha256(V1).hexdigest(), hashlib.sha256(V2).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path  # this host's cache: DATA_DIR/cache
    return tmp_path


def hey_and_pi(period: int = 10, name: str = "t") -> bytes:
    return taskset_file([{"pkg": "hey", "period": period, "numberofjobs": 1},
                         {"pkg": ["pi", "gone"], "period": period, "numberofjobs": 1}], name=name)


def named(job: Job) -> dict[tuple[str, str], str]:
    return {(row.kind, row.name): row.sha256 for row in JobContent.objects.filter(job=job)}


# -- what a job names, and when ---------------------------------------------------------


@pytest.mark.django_db
def test_a_job_names_the_uploads_its_kind_uses_when_it_is_submitted(data_dir, stdio_target):
    Binary.store("hey", ContentFile(V1))
    Binary.store("pi", ContentFile(b"pi"))
    BootImage.store("guest.img", ContentFile(b"kernel"))
    genode = Target.objects.create(name="lab", kind="genode", addresses=["127.0.0.1:1"])
    qemu = Target.objects.create(name="vms", kind="qemu", settings={"kernel": "guest.img", "initrd": "nothere.img"})

    with pytest.raises(ValidationError) as refused:
        submit_job(hey_and_pi(), target=genode)
    assert "no binary uploaded for 'gone'" in refused.value.message_dict["pkg"][0], "else every set would end bad"
    assert not Job.objects.exists()
    Binary.store("gone", ContentFile(b"back"))
    on_genode = submit_job(hey_and_pi(), target=genode)
    assert named(on_genode) == {("binary", "hey"): SHA1, ("binary", "pi"): sha(b"pi"), ("binary", "gone"): sha(b"back")}
    on_qemu = submit_job(hey_and_pi(), target=qemu)
    assert named(on_qemu) == {**named(on_genode), ("image", "guest.img"): sha(b"kernel")}, "no initrd was uploaded"
    assert named(submit_job(hey_and_pi(), target=stdio_target)) == {}, "a stdio pool runs no upload"

    Binary.store("hey", ContentFile(V2))
    assert named(on_genode)[("binary", "hey")] == SHA1, "a replaced upload changes no job"
    again = submit_job(hey_and_pi(), target=genode)
    assert named(again)[("binary", "hey")] == SHA2, "a new submission names what is uploaded now"
    assert Blob.objects.filter(pk=SHA1).exists(), "kept: a job names it"


@pytest.mark.django_db
def test_a_job_that_named_nothing_yet_names_its_content_at_first_use_on_every_host(data_dir, tmp_path):
    """A job from before job contents existed (migration 0015), or a QEMU job
    whose image was uploaded after it: the first machine that needs a name names it."""
    Binary.store("hey", ContentFile(V1))
    genode = Target.objects.create(name="lab", kind="genode", addresses=["127.0.0.1:1"])
    job = submit_job(taskset_file([{"pkg": "hey", "period": 10}]), target=genode)
    JobContent.objects.filter(job=job).delete()
    alpha = UploadedFiles()
    alpha.for_job(job.pk)
    assert alpha.checksums(["hey", "nothere"]) == {"hey": SHA1}
    assert named(job) == {("binary", "hey"): SHA1}, "named by its first use"
    Binary.store("hey", ContentFile(V2))
    beta = UploadedFiles()  # another machine, perhaps on another host
    beta.for_job(job.pk)
    assert beta.binaries(["hey"])["hey"].data == V1 and alpha.binaries(["hey"])["hey"].data == V1
    beta.for_job(None)
    assert beta.binaries(["hey"])["hey"].data == V2, "outside a job a name means the current upload"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's IMMEDIATE transactions never overlap")
@pytest.mark.django_db(transaction=True)
def test_a_name_taken_while_its_upload_is_replaced_is_of_content_that_stays(data_dir):
    """A machine names the job's binary at the very moment an upload replaces
    it: it waits for the replacement and names the new content, never the old
    content the replacement is deleting (before: "purged; resubmit")."""
    Binary.store("hey", ContentFile(V1))
    genode = Target.objects.create(name="lab", kind="genode", addresses=["127.0.0.1:1"])
    job = submit_job(taskset_file([{"pkg": "hey", "period": 10}]), target=genode)
    JobContent.objects.filter(job=job).delete()  # named at first use, as a job from before 0015
    deleting, go_on = threading.Event(), threading.Event()
    delete_unused = Blob.delete_unused.__func__

    def paused(cls, sha256s, used):  # the replacement, between its delete and its commit
        delete_unused(cls, sha256s, used)
        deleting.set()
        go_on.wait(10)

    def in_a_thread(work) -> threading.Thread:
        def run():
            try:
                work()
            finally:
                connection.close()
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    with mock.patch.object(Blob, "delete_unused", classmethod(paused)):
        replacing = in_a_thread(lambda: Binary.store("hey", ContentFile(V2)))
        assert deleting.wait(10)
        naming = in_a_thread(lambda: JobContent.resolve(job.pk, JobContent.Kind.BINARY, ["hey"]))
        naming.join(0.5)
        go_on.set()
        replacing.join(10)
        naming.join(10)
    assert named(job) == {("binary", "hey"): SHA2}
    assert Blob.objects.filter(pk=SHA2).exists() and not Blob.objects.filter(pk=SHA1).exists()


@pytest.mark.django_db
def test_a_target_boots_again_when_a_job_names_other_boot_images_than_it_booted(data_dir):
    Binary.store("hey", ContentFile(V1))
    BootImage.store("guest.img", ContentFile(b"kernel one"))
    qemu = Target.objects.create(name="vms", kind="qemu", settings={"kernel": "guest.img"})
    old = submit_job(taskset_file(), target=qemu)
    BootImage.store("guest.img", ContentFile(b"kernel two"))
    new = submit_job(taskset_file(), target=qemu)

    files = UploadedFiles()
    assert files.boot_image("guest.img").read_bytes() == b"kernel two", "a first boot: the current upload"
    files.for_job(new.pk)
    assert files.images_to_boot() == []
    files.for_job(old.pk)
    assert files.images_to_boot() == ["guest.img"]
    assert (data_dir / "cache" / sha(b"kernel one")).read_bytes() == b"kernel one", "fetched before the reboot"
    assert files.boot_image("guest.img").read_bytes() == b"kernel one"
    assert files.images_to_boot() == [], "booted what the job names"


# -- through the engine: a binary replaced while jobs run ----------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_broker")
def test_every_taskset_runs_the_binary_its_job_named_though_it_was_replaced(data_dir, admin_client, token, client):
    Binary.store("hey", ContentFile(V1))
    Binary.store("pi", ContentFile(b"pi"))
    with TaskLoaderPeer("127.0.0.9") as peer:
        target = Target.objects.create(name="lab", kind="genode", addresses=[peer.address])
        first = submit_job(taskset_file([{"pkg": "hey", "period": 10, "numberofjobs": [1, 2, 3]},
                                         {"pkg": "pi", "period": 10, "numberofjobs": 1}]), target=target, tries=1)
        Binary.store("hey", ContentFile(V2))  # before any of the first job's task-sets ran
        second = submit_job(taskset_file([{"pkg": "hey", "period": 20, "numberofjobs": [1, 2, 3]}]), target=target,
                            tries=1)
        run_launched()
        records = list(peer.tasksets)

    for job in (first, second):
        job.refresh_from_db()
        assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 3, 0)
    ran = {(record.tasks[0]["period"], record.ran["hey"]) for record in records}
    assert ran == {(10, SHA1), (20, SHA2)}, "the first job's sets ran the first build, the second's the second"
    assert len(records) == 6

    # What it ran, where a user and a script look.
    page = admin_client.get(f"/jobs/{first.pk}/").content.decode()
    assert SHA1[:16] in page and "replaced since" in page
    assert admin_client.get(f"/files/{SHA1}").getvalue() == V1, "the very content, downloadable"
    assert admin_client.get(f"/files/{SHA1[:-1]}x").status_code == 404, "a checksum or nothing"
    api = client.get(f"/api/jobs/{first.pk}", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert {(c["name"], c["sha256"], c["upload"], c["stored"]) for c in api["contents"]} == {
        ("hey", SHA1, "replaced", True), ("pi", sha(b"pi"), "current", True)}
    shown = io.StringIO()
    call_command("jobs", "show", str(second.pk), "--json", stdout=shown)
    assert [(c["name"], c["sha256"]) for c in json.loads(shown.getvalue())["contents"]] == [("hey", SHA2)]
    exported = export("sqlite", data_dir / "export.sqlite3", Selection(jobs=(first.pk, second.pk)))
    with sqlite3.connect(exported) as db:
        assert set(db.execute("SELECT job_id, kind, name, sha256, size FROM job_contents")) == {
            (first.pk, "binary", "hey", SHA1, len(V1)), (first.pk, "binary", "pi", sha(b"pi"), 2),
            (second.pk, "binary", "hey", SHA2, len(V2))}

    # Only purge --contents lets the replaced build go, and only once its jobs ended before the date.
    out = io.StringIO()
    call_command("purge", "--before", (first.ended_at - timedelta(seconds=1)).isoformat(), "--contents", stdout=out)
    assert "contents: removed 0 uploaded content(s)" in out.getvalue() and Blob.objects.filter(pk=SHA1).exists()
    call_command("purge", "--before", timezone.now().isoformat(), "--contents", "--dry-run", stdout=out)
    assert Blob.objects.filter(pk=SHA1).exists()
    out = io.StringIO()
    call_command("purge", "--before", timezone.now().isoformat(), "--contents", stdout=out)
    assert f"contents: removed 1 uploaded content(s), {len(V1)} bytes" in out.getvalue()
    assert set(Blob.objects.values_list("sha256", flat=True)) == {SHA2, sha(b"pi")}, "what uploads name stays"
    assert named(first)[("binary", "hey")] == SHA1, "the job still says what it ran"
    assert "(purged)" in admin_client.get(f"/jobs/{first.pk}/").content.decode()
    assert admin_client.get(f"/files/{SHA1}").status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_broker")
def test_a_reopened_job_whose_content_was_purged_ends_its_tasksets_bad_saying_so(data_dir):
    Binary.store("hey", ContentFile(V1))
    with TaskLoaderPeer("127.0.0.9") as peer:
        target = Target.objects.create(name="lab", kind="genode", addresses=[peer.address])
        job = submit_job(taskset_file([{"pkg": "hey", "period": 10, "numberofjobs": 1}]), target=target, tries=1)
        Binary.store("hey", ContentFile(V2))
        job.cancel()
        call_command("purge", "--before", timezone.now().isoformat(), "--contents", stdout=io.StringIO())
        assert not Blob.objects.filter(pk=SHA1).exists()
        assert job.reopen_cancelled()
        run_launched()
        assert peer.tasksets == [], "nothing ran"

    taskset = TaskSet.objects.get(job=job)
    assert taskset.state == TaskSet.State.BAD and taskset.attempts == 1
    assert "is no longer in the database (purged); resubmit the job" in taskset.last_error
