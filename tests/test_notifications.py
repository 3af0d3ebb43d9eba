"""A job's notify URLs are POSTed a JSON document when it ends, from a
background task (never a machine), tried again with a growing pause for an
hour; the delivery shows on the job page (issue 17, point 4)."""
from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from distributor import notifications
from distributor.models import Job, Notification
from distributor.queue import claim_next, resubmit_job, submit_job
from tests.inprocess import live_machine, run_launched, variants_file
from webapp.models import ApiToken


class Hook:
    """A local HTTP server that records every POST and answers ``status``."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        self.status = 204
        hook = self

        self.location = ""  # sent with the status when set (a redirect)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                hook.posts.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(hook.status)
                if hook.location:
                    self.send_header("Location", hook.location)
                self.end_headers()

            def do_GET(self):  # a followed redirect would arrive as a GET
                hook.posts.append((self.path, None))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def internal_hooks(settings):
    """The hooks here listen on 127.0.0.1: a site that allows internal addresses."""
    settings.DISTRIBUTOR_NOTIFY_INTERNAL = True


@pytest.fixture(autouse=True)
def background():
    """Tasks handed to the default cluster are kept here; ``send_due`` runs them
    as its worker would (every reconciler tick, the machines' too, runs the step)."""
    with mock.patch.object(notifications, "run_in_background") as queued:
        yield queued


def send_due() -> list[str]:
    """The reconciler's step, then the background worker's tries of what it queued."""
    queued = notifications.run_in_background
    notifications.step()
    calls, queued.call_args_list[:] = list(queued.call_args_list), []
    return [notifications.deliver(*call.args[1:]) for call in calls]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_broker")
def test_a_job_that_ends_is_posted_once_by_the_background_not_by_its_machines(scripted, hook, settings):
    settings.DISTRIBUTOR_URL = "https://distributor.example"
    job = submit_job(variants_file(3), target=scripted, name="nightly", notify=[hook.url])
    assert list(job.notifications.values_list("url", "state")) == [(hook.url, "waiting")]
    run_launched()
    job.refresh_from_db()
    assert job.state == Job.State.FINISHED
    assert hook.posts == [], "machines never send"
    assert send_due() == ["sent"]
    assert send_due() == []  # once
    path, document = hook.posts[0]
    assert path == "/hook" and len(hook.posts) == 1
    assert (document["event"], document["job"], document["name"], document["state"]) == (
        "job.ended", job.pk, "nightly", "finished")
    assert document["counts"]["finished"] == 3 and document["counts"]["total"] == 3
    assert document["links"]["job"] == f"https://distributor.example/api/jobs/{job.pk}"
    assert document["links"]["exports"]["taskjobs-parquet"].endswith(f"/api/jobs/{job.pk}/export/taskjobs-parquet")
    assert document["ended_at"] and document["sent_at"]
    sent = job.notifications.get()
    assert (sent.state, sent.attempts, sent.last_status, sent.sent_at is not None) == ("sent", 1, 204, True)


def test_a_cancelled_job_notifies_too(scripted, hook):
    job = submit_job(variants_file(2), target=scripted, notify=[hook.url])
    assert send_due() == []  # not ended yet
    job.cancel()
    assert send_due() == ["sent"] and hook.posts[0][1]["state"] == "cancelled"


def test_a_refused_post_is_tried_again_with_a_growing_pause_then_given_up_after_an_hour(scripted, hook):
    hook.status = 500
    job = submit_job(variants_file(1), target=scripted, notify=[hook.url])
    job.cancel()
    assert send_due() == ["pending"]
    first = Notification.objects.get()
    assert (first.attempts, first.last_status, first.last_error) == (1, 500, "HTTP 500 Internal Server Error")
    assert timedelta(seconds=14) < first.next_try_at - timezone.now() <= timedelta(seconds=15)
    assert send_due() == []  # not before its time
    Notification.objects.update(next_try_at=timezone.now())
    assert send_due() == ["pending"]
    second = Notification.objects.get()
    assert timedelta(seconds=29) < second.next_try_at - timezone.now() <= timedelta(seconds=30)
    Notification.objects.update(next_try_at=timezone.now(), due_at=timezone.now() - timedelta(minutes=59, seconds=50))
    assert send_due() == ["failed"]
    gone = Notification.objects.get()
    assert (gone.state, gone.attempts, gone.next_try_at) == ("failed", 3, None)
    assert len(hook.posts) == 3


def test_an_unreachable_address_is_recorded(scripted):
    job = submit_job(variants_file(1), target=scripted, notify=["http://127.0.0.1:9/nobody"])
    job.cancel()
    assert send_due() == ["pending"]
    assert "URLError" in Notification.objects.get().last_error


def test_a_try_that_never_reported_back_is_made_again_after_its_lease(scripted, hook):
    job = submit_job(variants_file(1), target=scripted, notify=[hook.url])
    job.cancel()
    notifications.step()  # the worker that got it died
    notifications.step()
    assert notifications.run_in_background.call_count == 1  # taken once
    notifications.run_in_background.call_args_list[:] = []
    Notification.objects.update(next_try_at=timezone.now())  # its lease ran out
    assert send_due() == ["sent"]


@pytest.mark.parametrize("notify, message", [
    (["ftp://example.org/x"], "is not an http"), (["not a url"], "is not an http"),
    (["http://example.org/" + "x" * 2000], "at most 2000"), ([f"http://h{n}.example" for n in range(6)], "at most 5"),
    ("http://example.org", "must be a list"),
])
def test_bad_addresses_are_refused_naming_notify(scripted, notify, message):
    with pytest.raises(ValidationError) as refused:
        submit_job(variants_file(1), target=scripted, notify=notify)
    assert message in " ".join(refused.value.message_dict["notify"])
    assert not Job.objects.exists()


def test_submit_notify_from_the_command_line_and_a_resubmission_keeps_it(scripted, tmp_path):
    path = tmp_path / "job.json"
    path.write_bytes(variants_file(1))
    out = io.StringIO()
    call_command("submit", str(path), "--target", "scripted", "--notify", "https://a.example/x", "--notify",
                 "https://b.example/y", stdout=out)
    job = Job.objects.get(pk=int(out.getvalue()))
    assert list(job.notifications.values_list("url", flat=True)) == ["https://a.example/x", "https://b.example/y"]
    copy = resubmit_job(job)
    assert list(copy.notifications.values_list("url", "state")) == [("https://a.example/x", "waiting"),
                                                                    ("https://b.example/y", "waiting")]
    with pytest.raises(CommandError, match="--notify"):
        call_command("submit", str(path), "--target", "scripted", "--notify", "gopher://x", stdout=io.StringIO())


def test_the_api_takes_notify_and_shows_its_delivery(client, scripted, alice):
    token = ApiToken.issue(alice, "script")[1]
    spec = json.loads(variants_file(1))
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post("/api/jobs", data=json.dumps({"spec": spec, "target": "scripted",
                                                         "notify": ["https://hooks.example/a"]}),
                           content_type="application/json", headers=headers)
    assert response.status_code == 201, response.content
    assert response.json()["notify"] == [{"url": "https://hooks.example/a", "event": "job.ended", "state": "waiting",
                                          "attempts": 0, "sent_at": None, "last_error": ""}]
    refused = client.post("/api/jobs", data=json.dumps({"spec": spec, "notify": ["javascript:alert(1)"]}),
                          content_type="application/json", headers=headers)
    assert refused.status_code == 400 and "notify" in refused.json()["errors"]


def test_the_form_takes_notify_and_the_job_page_shows_the_delivery(client, scripted, alice, hook):
    client.force_login(alice)
    response = client.post("/submit/", {"text": variants_file(1).decode(), "target": "scripted", "offset": "0",
                                        "priority": "0", "notify": f"{hook.url}\nhttps://b.example/y",
                                        "action": "submit"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = Job.objects.get()
    assert job.notifications.count() == 2
    job.cancel()
    hook.status = 200
    send_due()
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="notifications"' in page and hook.url in page and ">sent<" in page and ">pending<" in page
    bad = client.post("/submit/", {"text": variants_file(1).decode(), "target": "scripted", "offset": "0",
                                   "priority": "0", "notify": "ftp://example.org/x", "action": "submit"})
    assert bad.status_code == 400 and "is not an http" in bad.content.decode()


def test_an_email_address_gets_the_document_where_mail_is_configured(scripted, settings, mailoutbox):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    job = submit_job(variants_file(1), target=scripted, name="nightly", notify=["ana@example.org"])
    assert list(job.notifications.values_list("url", flat=True)) == ["mailto:ana@example.org"]
    job.cancel()
    assert send_due() == ["sent"]
    (mail,) = mailoutbox
    assert mail.to == ["ana@example.org"] and mail.subject == f"Job #{job.pk} nightly: cancelled"
    assert json.loads(mail.body)["job"] == job.pk
    assert Notification.objects.get().last_status is None


def test_an_email_address_is_refused_where_mail_is_not_configured(scripted, settings):
    settings.EMAIL_BACKEND, settings.EMAIL_HOST = "django.core.mail.backends.smtp.EmailBackend", "localhost"
    with pytest.raises(ValidationError) as refused:
        submit_job(variants_file(1), target=scripted, notify=["mailto:ana@example.org"])
    assert "mail settings" in " ".join(refused.value.message_dict["notify"])
    settings.EMAIL_HOST = "smtp.example.org"
    with pytest.raises(ValidationError, match="not an e-mail address"):
        submit_job(variants_file(1), target=scripted, notify=["ana@"])


# -- when task-sets turn bad (notify_bad) ----------------------------------------------


def _turn_bad(machine, count: int) -> None:
    """``count`` task-sets claimed by the machine and failed for good, as a broken target's would be."""
    for _ in range(count):
        claim = claim_next(machine)
        assert claim.taskset.fail(machine, "the target broke", final=True) == "bad"


def test_task_sets_turned_bad_are_told_at_most_once_a_minute_with_the_count_since_the_last(scripted, hook, settings):
    settings.DISTRIBUTOR_URL = "https://distributor.example"
    job = submit_job(variants_file(8), target=scripted, name="nightly", notify=[hook.url], notify_bad=True)
    machine = live_machine(scripted)
    assert send_due() == []  # nothing bad yet
    _turn_bad(machine, 2)
    assert send_due() == ["sent"]
    _, first = hook.posts[0]
    assert (first["event"], first["job"], first["name"], first["bad_new"], first["bad_total"]) == (
        "taskset.bad", job.pk, "nightly", 2, 2)
    assert first["state"] == "running" and first["counts"]["bad"] == 2
    assert first["links"]["bad"] == f"https://distributor.example/api/jobs/{job.pk}/tasksets?state=bad"

    _turn_bad(machine, 1)
    assert send_due() == [] and len(hook.posts) == 1  # within the minute: nothing yet
    _turn_bad(machine, 2)
    Job.objects.filter(pk=job.pk).update(bad_notified_at=timezone.now() - timedelta(seconds=61))  # a minute later
    assert send_due() == ["sent"]
    assert (hook.posts[1][1]["bad_new"], hook.posts[1][1]["bad_total"]) == (3, 5)  # the three since the last
    Job.objects.filter(pk=job.pk).update(bad_notified_at=timezone.now() - timedelta(seconds=61))
    assert send_due() == []  # no new bad one: no message

    job.cancel()
    assert send_due() == ["sent"] and hook.posts[2][1]["event"] == "job.ended"  # the end, once, as ever
    assert list(job.notifications.values_list("event", "state", "bad_new")) == [
        ("job.ended", "sent", None), ("taskset.bad", "sent", 2), ("taskset.bad", "sent", 3)]


def test_without_notify_bad_only_the_end_is_told(scripted, hook):
    job = submit_job(variants_file(3), target=scripted, notify=[hook.url])
    _turn_bad(live_machine(scripted), 2)
    assert send_due() == [] and hook.posts == []
    job.cancel()
    assert send_due() == ["sent"] and [d["event"] for _, d in hook.posts] == ["job.ended"]


def test_a_refused_bad_message_is_tried_again_like_the_end(scripted, hook):
    hook.status = 503
    submit_job(variants_file(3), target=scripted, notify=[hook.url], notify_bad=True)
    _turn_bad(live_machine(scripted), 1)
    assert send_due() == ["pending"]
    Notification.objects.filter(event="taskset.bad").update(next_try_at=timezone.now())
    hook.status = 204
    assert send_due() == ["sent"] and [d["bad_new"] for _, d in hook.posts] == [1, 1]


def test_notify_bad_needs_an_address_and_is_kept_by_a_resubmission(scripted, hook, tmp_path):
    with pytest.raises(ValidationError, match="notify_bad"):
        submit_job(variants_file(1), target=scripted, notify_bad=True)
    path = tmp_path / "job.json"
    path.write_bytes(variants_file(3))
    out = io.StringIO()
    call_command("submit", str(path), "--target", "scripted", "--notify", hook.url, "--notify-bad", stdout=out)
    job = Job.objects.get(pk=int(out.getvalue()))
    assert job.notify_bad
    _turn_bad(live_machine(scripted), 1)
    send_due()
    copy = resubmit_job(job)
    assert copy.notify_bad and list(copy.notifications.values_list("url", "event")) == [(hook.url, "job.ended")]
    with pytest.raises(CommandError, match="--notify-bad"):
        call_command("submit", str(path), "--target", "scripted", "--notify-bad", stdout=io.StringIO())


def test_the_api_and_the_form_take_notify_bad(client, scripted, alice):
    token = ApiToken.issue(alice, "script")[1]
    headers = {"Authorization": f"Bearer {token}"}
    spec = json.loads(variants_file(1))
    response = client.post("/api/jobs", data=json.dumps({"spec": spec, "target": "scripted", "notify_bad": True,
                                                         "notify": ["https://hooks.example/a"]}),
                           content_type="application/json", headers=headers)
    assert response.status_code == 201 and response.json()["notify_bad"] is True
    for body, field in (({"notify_bad": "yes", "notify": ["https://hooks.example/a"]}, "notify_bad"),
                        ({"notify_bad": True}, "notify_bad")):
        refused = client.post("/api/jobs", data=json.dumps({"spec": spec, "target": "scripted", **body}),
                              content_type="application/json", headers=headers)
        assert refused.status_code == 400 and field in refused.json()["errors"], refused.json()
    client.force_login(alice)
    form = {"text": variants_file(1).decode(), "target": "scripted", "offset": "0", "priority": "0",
            "notify": "https://hooks.example/b", "notify_bad": "on", "action": "submit"}
    assert client.post("/submit/", form).status_code == 302
    assert Job.objects.order_by("-pk").first().notify_bad
    refused = client.post("/submit/", {**form, "notify": ""})
    assert refused.status_code == 400 and "needs a notify URL" in refused.content.decode()


# -- a notify URL is no way into the site's own network ------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/", "http://localhost:8000/admin/", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data/", "http://[::1]/x",
                                 "http://[::ffff:127.0.0.1]/x", "https://192.168.0.10/x", "http://0.0.0.0:5432/",
                                 "http://api.localhost/x"])
def test_a_notify_url_naming_an_internal_address_is_refused_at_submission(scripted, settings, url):
    settings.DISTRIBUTOR_NOTIFY_INTERNAL = False
    with pytest.raises(ValidationError) as refused:
        submit_job(variants_file(1), target=scripted, notify=[url])
    assert "internal address" in refused.value.message_dict["notify"][0] or "is this server" in \
        refused.value.message_dict["notify"][0]
    assert not Job.objects.exists()
    assert submit_job(variants_file(1), target=scripted, notify=["https://hooks.example/a"]).notifications.count() == 1


def test_a_host_that_turns_out_internal_when_sent_to_gets_nothing(scripted, hook, settings):
    job = submit_job(variants_file(1), target=scripted, notify=[hook.url])  # allowed then
    settings.DISTRIBUTOR_NOTIFY_INTERNAL = False  # and no longer when it is sent: the address is checked again
    job.cancel()
    assert send_due() == ["pending"]
    assert hook.posts == []
    assert "127.0.0.1, an internal address (DISTRIBUTOR_NOTIFY_INTERNAL is off)" in Notification.objects.get().last_error


def test_an_https_url_is_checked_the_same_way(scripted, settings):
    job = submit_job(variants_file(1), target=scripted, notify=["https://127.0.0.1:9/hook"])
    settings.DISTRIBUTOR_NOTIFY_INTERNAL = False
    job.cancel()
    assert send_due() == ["pending"]
    assert "127.0.0.1, an internal address" in Notification.objects.get().last_error, "refused before connecting"


def test_a_redirect_is_not_followed(scripted, hook):
    elsewhere = Hook()
    try:
        hook.status, hook.location = 302, elsewhere.url
        job = submit_job(variants_file(1), target=scripted, notify=[hook.url])
        job.cancel()
        assert send_due() == ["pending"]
        assert len(hook.posts) == 1 and elsewhere.posts == [], "it could lead inside"
        assert Notification.objects.get().last_status == 302
    finally:
        elsewhere.close()
