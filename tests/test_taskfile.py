"""Task-set files: formats, validation with paths, lazy variants."""
from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from django.core.exceptions import ValidationError

from distributor.models import Job, Task, TaskSet
from distributor.queue import submit_job
from distributor.taskfile import Expander, TaskFileError, parse, taskset_xml, variant_count
from tests.conftest import taskset_file


def errors_of(data, filename: str = "") -> dict[str, str]:
    with pytest.raises(TaskFileError) as caught:
        parse(data, filename, max_bytes=1024 * 1024)
    return caught.value.as_dict()


def test_it_fills_in_defaults():
    spec = parse(taskset_file([{"pkg": "hey"}]), max_bytes=10_000).spec
    task = spec["tasksets"][0]["tasks"][0]
    assert task["quota"] == "100M" and task["caps"] == 235
    assert task["numberofjobs"] == 1 and task["priority"] == 127 and task["period"] == 0


@pytest.mark.parametrize(
    ("task", "path", "words"),
    [
        ({"pkg": "a_name_of_16_byte"}, "tasksets[0].tasks[0].pkg", "1-15"),
        ({"pkg": "../etc/passwd"}, "tasksets[0].tasks[0].pkg", "no path"),
        ({"pkg": "hey", "numberofjobs": 0}, "tasksets[0].tasks[0].numberofjobs", "≥ 1"),
        ({"pkg": "hey", "period": -1}, "tasksets[0].tasks[0].period", "≥ 0"),
        ({"pkg": "hey", "priority": 129}, "tasksets[0].tasks[0].priority", "≤ 128"),
        ({"pkg": "hey", "period": "10"}, "tasksets[0].tasks[0].period", "integer"),
        ({"pkg": "hey", "period": True}, "tasksets[0].tasks[0].period", "integer"),
        ({"pkg": "hey", "period": 2**40}, "tasksets[0].tasks[0].period", "≤"),
        ({"pkg": "hey", "colour": 1}, "tasksets[0].tasks[0].colour", "unknown"),
        ({"pkg": "hey", "config": {"arg2": 1}}, "tasksets[0].tasks[0].config.arg2", "unknown"),
        ({"pkg": "hey", "period": {"range": [0, 10, 0]}}, "tasksets[0].tasks[0].period.range", "step"),
        ({"pkg": "hey", "period": {"range": [10, 0]}}, "tasksets[0].tasks[0].period.range", "empty"),
        ({"pkg": "hey", "period": {"random": [5, 1]}}, "tasksets[0].tasks[0].period.random", "lo ≤ hi"),
        ({"pkg": "hey", "period": {"between": [1, 2]}}, "tasksets[0].tasks[0].period", "range"),
        ({"pkg": "hey", "period": []}, "tasksets[0].tasks[0].period", "empty list"),
        ({"pkg": "hey", "quota": "lots"}, "tasksets[0].tasks[0].quota", "size"),
        ({"pkg": "hey", "quota": 0}, "tasksets[0].tasks[0].quota", "size"),
        ({"pkg": "hey", "caps": 0}, "tasksets[0].tasks[0].caps", "≥ 1"),
        ({"pkg": {"range": [1, 3]}}, "tasksets[0].tasks[0].pkg", "integer fields"),
        ({"period": 10}, "tasksets[0].tasks[0].pkg", "required"),
    ],
)
def test_it_names_the_field_at_fault(task, path, words):
    errors = errors_of(taskset_file([task]))
    assert path in errors, errors
    assert words in errors[path]


def test_it_reports_every_problem_at_once():
    errors = errors_of(taskset_file([{"pkg": "hey", "period": -1}, {"pkg": "x" * 16, "numberofjobs": 0}]))
    assert set(errors) == {
        "tasksets[0].tasks[0].period",
        "tasksets[0].tasks[1].pkg",
        "tasksets[0].tasks[1].numberofjobs",
    }


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"{", "invalid JSON"),
        (b'{"tasksets": [', "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"tasksets": []}', "non-empty"),
        (b'{"tasksets": [{"tasks": []}]}', "non-empty"),
        (b'{"tasksets": [{"tasks": [{"pkg": "hey"}]}], "extra": 1}', "unknown"),
        (b'{"tasksets": [{"tasks": [{"pkg": "hey", "period": 1' + b"0" * 5000 + b"}]}]}", "invalid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"42", "object"),
    ],
)
def test_it_refuses_broken_json(data, words):
    errors = errors_of(data)
    assert any(words in message for message in errors.values()), errors


def test_it_refuses_files_over_the_size_limit():
    with pytest.raises(TaskFileError) as caught:
        parse(b" " * 2000 + taskset_file(), max_bytes=1000)
    assert "limit is 1000 bytes" in str(caught.value)


def test_it_refuses_an_xml_bomb():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<taskset><periodictask><pkg>&lol2;</pkg></periodictask></taskset>"
    )
    errors = errors_of(bomb, "bomb.xml")
    assert "DTD" in errors["file"]


def test_it_refuses_external_entities():
    xxe = b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><taskset>&x;</taskset>'
    assert "refused XML" in errors_of(xxe, "x.xml")["file"]


def test_it_refuses_a_yaml_bomb():
    bomb = b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\ntasksets: [*b]\n"
    assert "aliases are not allowed" in errors_of(bomb, "bomb.yaml")["file"]


def test_it_reads_yaml_and_genode_xml_like_json():
    as_json = parse(taskset_file([{"pkg": "hey", "period": 10, "numberofjobs": 2, "config": {"arg1": 3}}]), max_bytes=10_000)
    as_yaml = parse("tasksets:\n  - tasks:\n      - {pkg: hey, period: 10, numberofjobs: 2, config: {arg1: 3}}\n", "f.yaml", max_bytes=10_000)
    as_xml = parse(
        "<taskset><periodictask><id>0</id><pkg>hey</pkg><period>10</period><numberofjobs>2</numberofjobs>"
        "<config><arg1>3</arg1></config></periodictask></taskset>", "f.xml", max_bytes=10_000,
    )
    assert as_json.spec["tasksets"] == as_yaml.spec["tasksets"] == as_xml.spec["tasksets"]
    assert (as_json.format, as_yaml.format, as_xml.format) == ("json", "yaml", "xml")


def test_xml_ids_must_count_from_zero_in_order():
    errors = errors_of("<taskset><periodictask><id>1</id><pkg>hey</pkg></periodictask></taskset>", "f.xml")
    assert errors["taskset.periodictask[0].id"].startswith("must be 0")


def test_the_genode_description_round_trips():
    tasks = Expander(parse(taskset_file([{"pkg": "hey", "period": 10}, {"pkg": "pi", "config": {"arg1": 7}}]), max_bytes=10_000).spec).variant(0)
    xml = taskset_xml(tasks)
    assert xml.startswith("<taskset><periodictask><id>0</id><pkg>hey</pkg>")
    assert "<config><arg1>7</arg1></config>" in xml
    again = Expander(parse(xml, "t.xml", max_bytes=10_000).spec).variant(0)
    assert again == tasks


def test_variants_run_the_last_varying_field_fastest():
    spec = parse(taskset_file([{"pkg": "hey", "period": [10, 20], "config": {"arg1": {"range": [1, 4]}}}]), max_bytes=10_000).spec
    expander = Expander(spec)
    decoded = [(t[0]["period"], t[0]["arg1"]) for t in map(expander.variant, range(expander.count))]
    assert decoded == [(10, 1), (10, 2), (10, 3), (20, 1), (20, 2), (20, 3)]


def test_a_jobs_variants_are_those_of_its_tasksets_in_order():
    data = json.dumps({"tasksets": [
        {"tasks": [{"pkg": "a", "period": [1, 2]}]},
        {"tasks": [{"pkg": "b", "period": {"range": [5, 20, 5]}}]},
    ]})
    expander = Expander(parse(data, max_bytes=10_000).spec)
    assert [(t[0]["pkg"], t[0]["period"]) for t in map(expander.variant, range(5))] == [
        ("a", 1), ("a", 2), ("b", 5), ("b", 10), ("b", 15)]
    with pytest.raises(IndexError):
        expander.variant(5)


def test_random_values_are_reproducible_from_the_seed():
    data = taskset_file([{"pkg": "hey", "offset": {"random": [0, 1000]}, "period": [1, 2, 3]}], seed=7)
    first = [Expander(parse(data, max_bytes=10_000).spec).variant(i)[0]["offset"] for i in range(3)]
    again = [Expander(parse(data, max_bytes=10_000).spec).variant(i)[0]["offset"] for i in range(3)]
    other = [Expander(parse(taskset_file([{"pkg": "hey", "offset": {"random": [0, 1000]}, "period": [1, 2, 3]}], seed=8), max_bytes=10_000).spec).variant(i)[0]["offset"] for i in range(3)]
    assert first == again
    assert first != other
    assert all(0 <= value <= 1000 for value in first)


def test_a_billion_variants_are_counted_not_materialised():
    data = taskset_file([{"pkg": "hey", "period": {"range": [1, 31624]}, "config": {"arg1": {"range": [0, 31623]}}}])
    tracemalloc.start()
    started = time.perf_counter()
    parsed = parse(data, max_bytes=10_000)
    last = Expander(parsed.spec).variant(parsed.variant_count - 1)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parsed.variant_count == 31623 * 31623 > 10**9
    assert last[0]["period"] == 31623 and last[0]["arg1"] == 31622
    assert elapsed < 1 and peak < 5 * 2**20


def test_more_variants_than_the_limit_are_refused():
    data = taskset_file([{"pkg": "hey", f: {"range": [0, 100000]}} for f in ("period", "offset", "deadline", "criticaltime")])
    assert "limit" in errors_of(data)["tasksets"]


@pytest.mark.django_db
def test_a_bad_file_leaves_the_database_unchanged(stdio_target):
    before = (Job.objects.count(), TaskSet.objects.count(), Task.objects.count())
    for bad in (taskset_file([{"pkg": "x" * 16}]), b"{", b"<taskset><x/></taskset>"):
        with pytest.raises(TaskFileError):
            submit_job(bad, target=stdio_target)
    assert (Job.objects.count(), TaskSet.objects.count(), Task.objects.count()) == before


@pytest.mark.django_db
def test_bad_options_are_named_and_nothing_is_stored(stdio_target):
    with pytest.raises(ValidationError) as caught:
        submit_job(taskset_file(), target="nowhere", offset=5, tries=0, priority="high")
    assert set(caught.value.message_dict) == {"target", "offset", "tries", "priority"}
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_job_of_a_billion_variants_is_one_row(stdio_target):
    data = taskset_file([{"pkg": "hey", "period": {"range": [1, 31624]}, "config": {"arg1": {"range": [0, 31623]}}}])
    job = submit_job(data, target=stdio_target, offset=10)
    assert job.variant_count == 31623 * 31623 and job.total == job.variant_count - 10 and job.cursor == 10
    assert not TaskSet.objects.exists()


def test_variant_count_of_a_spec():
    assert variant_count(parse(taskset_file([{"pkg": "hey", "period": [1, 2]}, {"pkg": "pi", "priority": [1, 2, 3]}]), max_bytes=10_000).spec) == 6
