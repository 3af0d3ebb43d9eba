"""Cancelling a job and continuing it: its queued task-sets end cancelled when
the cancel reaches them, however it reaches them, and continuing the job
queues them again and waits for its new end to notify."""
from __future__ import annotations

import pytest
from django.utils import timezone

from distributor.exports import Selection
from distributor.models import Job, Notification, TaskSet
from distributor.queue import claim_next, submit_job
from tests.inprocess import live_machine, variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


def test_queued_tasksets_end_at_the_cancel_whether_the_cancel_or_a_put_back_ends_them(scripted):
    """The job's cancel ends its queued sets; a running one put back later ends
    cancelled on its way back to the queue. Both carry the time they ended, so
    an export of what ended since before the cancel takes all of them."""
    job = submit_job(variants_file(3), target=scripted)
    machine = live_machine(scripted)
    running = claim_next(machine).taskset
    before_cancel = timezone.now()
    assert job.cancel()
    assert running.put_back(machine) and running.state == TaskSet.State.CANCELLED
    cancelled = TaskSet.objects.filter(job=job, state=TaskSet.State.CANCELLED)
    assert cancelled.count() == 3
    exported = Selection(jobs=(job.pk,), since=before_cancel).tasksets()
    assert set(exported.values_list("pk", flat=True)) == set(cancelled.values_list("pk", flat=True))
    assert all(ended_at and ended_at >= before_cancel for ended_at in cancelled.values_list("ended_at", flat=True))


def test_continuing_a_cancelled_job_queues_its_cancelled_sets_and_rearms_its_end_message(scripted, settings):
    settings.DISTRIBUTOR_NOTIFY_INTERNAL = True  # never sent: the address only has to be accepted
    job = submit_job(variants_file(3), target=scripted, notify=["http://127.0.0.1:9/hook"])
    running = claim_next(live_machine(scripted)).taskset  # a plain cancel lets it run on
    assert job.cancel()
    assert Notification.make_due() == 1
    assert job.reopen_cancelled()
    unrun = job.tasksets.exclude(pk=running.pk)
    assert list(unrun.values_list("state", "ended_at", "last_error")) == [(TaskSet.State.QUEUED, None, "")] * 2
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING
    message = job.notifications.get()
    assert (message.state, message.due_at, message.next_try_at) == (Notification.State.WAITING, None, None)
    assert not job.reopen_cancelled()  # not cancelled any more
