"""The submission form: check stores nothing, errors name their field or
their path in the file, and a failed form comes back with the user's input."""
from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from distributor.models import Job
from tests.conftest import taskset_file

EXAMPLE = open("fixtures/example5.json").read()


@pytest.fixture
def form(client, alice, stdio_target):
    client.force_login(alice)
    return {"target": "dry", "offset": "0", "priority": "0", "tries": "", "admission": "", "name": ""}


def _errors_of(page: str, field: str) -> list[str]:
    block = re.search(rf'data-field="{field}">(.*?)</ul>', page, re.S)
    return re.findall(r"<li>(.*?)</li>", block.group(1)) if block else []


def test_check_shows_the_variant_count_and_stores_nothing(client, form):
    response = client.post("/submit/", {**form, "text": EXAMPLE, "action": "check"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "8 variants in 1 task-set" in page
    assert "Nothing was stored" in page
    assert Job.objects.count() == 0


def test_check_of_an_uploaded_file_keeps_its_content_for_the_submit(client, form):
    upload = SimpleUploadedFile("example5.json", EXAMPLE.encode())
    page = client.post("/submit/", {**form, "file": upload, "action": "check"}).content.decode()
    assert "8 variants" in page
    assert "&quot;example5&quot;" in page  # the text box holds the file now
    assert 'value="example5.json"' in page


def test_every_file_error_is_listed_with_its_path(client, form):
    bad = taskset_file([{"pkg": "a-name-much-too-long", "period": -1}, {"pkg": "hey", "colour": "red"}])
    response = client.post("/submit/", {**form, "text": bad.decode(), "action": "check"})
    assert response.status_code == 400
    page = response.content.decode()
    errors = re.search(r'id="file-errors">(.*?)</ul>', page, re.S).group(1)
    assert "<code>tasksets[0].tasks[0].pkg</code>" in errors
    assert "<code>tasksets[0].tasks[0].period</code>" in errors
    assert "<code>tasksets[0].tasks[1].colour</code> unknown field" in errors
    assert Job.objects.count() == 0


def test_option_errors_stand_next_to_their_field_with_the_input_kept(client, form):
    response = client.post("/submit/", {**form, "text": EXAMPLE, "offset": "8", "priority": "5000",
                                        "admission": "[1, 2]", "name": "my campaign", "action": "submit"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "from 0 to 7" in _errors_of(page, "offset")[0]
    assert "-1000 to 1000" in _errors_of(page, "priority")[0]
    assert _errors_of(page, "admission") == ["must be a JSON object"]
    assert 'value="my campaign"' in page and 'value="5000"' in page
    assert "&quot;example5&quot;" in page
    assert Job.objects.count() == 0


def test_file_and_option_errors_are_shown_together(client, form):
    response = client.post("/submit/", {**form, "text": "{not json", "tries": "0", "action": "check"})
    page = response.content.decode()
    assert response.status_code == 400
    assert "invalid JSON" in page
    assert "from 1 to 100" in _errors_of(page, "tries")[0]


def test_words_where_numbers_belong_are_refused_by_field(client, form):
    response = client.post("/submit/", {**form, "text": EXAMPLE, "offset": "ten", "action": "submit"})
    assert response.status_code == 400
    assert _errors_of(response.content.decode(), "offset") == ["Enter a whole number."]
    assert Job.objects.count() == 0


def test_an_empty_form_asks_for_a_file(client, form):
    response = client.post("/submit/", {**form, "action": "submit"})
    assert response.status_code == 400
    assert "choose a task-set file or paste its content" in _errors_of(response.content.decode(), "file")


def test_an_uploaded_file_over_the_limit_is_refused(client, form, settings):
    settings.TASKSET_FILE_MAX_BYTES = 2048
    upload = SimpleUploadedFile("big.json", taskset_file(name="x" * 4000))
    response = client.post("/submit/", {**form, "file": upload, "action": "submit"})
    assert response.status_code == 400
    assert "the limit is 2048 bytes" in response.content.decode()
    assert Job.objects.count() == 0


def test_submit_queues_the_job_and_opens_its_page(client, form, alice):
    admission = json.dumps({"goal": "utilisation", "max": 0.9})
    upload = SimpleUploadedFile("example5.json", EXAMPLE.encode())
    response = client.post("/submit/", {**form, "file": upload, "priority": "3", "tries": "2", "admission": admission,
                                        "action": "submit"})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert (job.owner, job.target.name, job.variant_count, job.priority, job.tries) == (alice, "dry", 8, 3, 2)
    assert job.admission == {"goal": "utilisation", "max": 0.9}
    assert job.source_name == "example5.json"
    assert f"Queued job #{job.pk}" in client.get(response["Location"]).content.decode()


def test_the_form_offers_the_targets_with_the_default_first(client, form):
    from distributor.models import Target

    Target.objects.create(name="alpha", kind="stdio", is_default=True)
    page = client.get("/submit/").content.decode()
    assert page.index('value="alpha"') < page.index('value="dry"')
    assert re.search(r'<option value="alpha" selected>', page)


def test_a_pkg_without_a_binary_on_a_genode_pool_is_refused_on_the_page_and_by_the_api(client, form, token):
    from distributor.models import Target

    Target.objects.create(name="lab", kind="genode", addresses=["127.0.0.1:1"])
    text = taskset_file([{"pkg": "hey2", "period": 10}]).decode()
    response = client.post("/submit/", {**form, "target": "lab", "text": text, "action": "submit"})
    assert response.status_code == 400
    assert "no binary uploaded for &#x27;hey2&#x27;" in response.content.decode()
    api = client.post("/api/jobs", json.dumps({"spec": json.loads(text), "target": "lab"}), content_type="application/json",
                      HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.status_code == 400 and "no binary uploaded for 'hey2'" in api.json()["errors"]["pkg"]
    assert not Job.objects.exists()
