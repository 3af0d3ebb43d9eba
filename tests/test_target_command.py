"""`manage.py target …` and `manage.py binary …`."""
from __future__ import annotations

import hashlib
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from distributor.models import Binary, Blob, BootImage, Job, Target


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def snapshot() -> list[tuple]:
    return list(Target.objects.order_by("name").values_list("name", "kind", "settings", "addresses", "is_default"))


# -- target add ---------------------------------------------------------------


def test_it_adds_a_genode_pool_with_one_slot_per_address(db):
    output = run("target", "add", "lab", "--kind", "genode", "--hosts", "127.0.0.2:3001,127.0.0.4/31:3002",
                 "--set", "ping=true", "--set", "connect_timeout=2.5", "--host", "node1")

    target = Target.objects.get(name="lab")
    assert target.addresses == ["127.0.0.2:3001", "127.0.0.4:3002", "127.0.0.5:3002"]
    assert target.settings == {"ping": True, "connect_timeout": 2.5}
    assert target.capacity == 3
    assert target.host == "node1"
    assert "capacity 3" in output


def test_values_that_are_not_json_are_strings(db):
    run("target", "add", "panda", "--kind", "board", "--hosts", "127.0.0.3",
        "--set", "power_on=poe on {slot}", "--set", "power_off=poe off {slot}")

    assert Target.objects.get(name="panda").settings == {"power_on": "poe on {slot}", "power_off": "poe off {slot}"}


def test_default_moves_to_the_new_pool(db):
    Target.objects.create(name="old", kind="stdio", is_default=True)

    run("target", "add", "new", "--kind", "stdio", "--default")

    assert list(Target.objects.filter(is_default=True).values_list("name", flat=True)) == ["new"]


@pytest.mark.parametrize("args, field", [
    (["--kind", "nonsense"], "kind: unknown kind 'nonsense'"),
    (["--kind", "genode"], "addresses: a genode pool needs at least one host:port"),
    (["--kind", "genode", "--hosts", "127.0.0.2", "--set", "connect_timeout=fast"], "settings.connect_timeout: must be"),
    (["--kind", "genode", "--hosts", "127.0.0.2", "--set", "colour=blue"], "settings.colour: unknown setting"),
    (["--kind", "genode", "--hosts", "127.0.0.2/33"], "hosts: '127.0.0.2/33': not a CIDR range"),
    (["--kind", "genode", "--hosts", "127.0.0.2", "--set", "ping"], "--set 'ping': expected KEY=VALUE"),
    (["--kind", "board", "--hosts", "127.0.0.2", "--set", "power_on=poe {ip}"], "settings.power_on: unknown placeholder"),
])
def test_bad_input_names_the_field_and_changes_nothing(db, args, field):
    Target.objects.create(name="old", kind="stdio", is_default=True)
    before = snapshot()

    with pytest.raises(CommandError, match=field):
        run("target", "add", "lab", *args, "--default")

    assert snapshot() == before  # the default flag stayed where it was


def test_a_duplicate_or_bad_name_is_refused(db):
    run("target", "add", "lab", "--kind", "stdio")

    with pytest.raises(CommandError, match="name: Target with this Name already exists"):
        run("target", "add", "lab", "--kind", "stdio")
    with pytest.raises(CommandError, match="name: 1-63 letters"):
        run("target", "add", "no spaces", "--kind", "stdio")
    assert Target.objects.count() == 1


# -- target list / remove -----------------------------------------------------


def test_list_shows_kind_default_capacity_addresses_and_settings(db):
    run("target", "add", "lab", "--kind", "genode", "--hosts", "127.0.0.0/29:3001", "--set", "ping=true", "--default")
    run("target", "add", "dry", "--kind", "stdio")

    lines = run("target", "list").splitlines()
    assert lines[0].startswith("dry  kind=stdio  capacity=cap")
    assert lines[1].startswith("lab (default)  kind=genode  capacity=6  addresses=[127.0.0.1:3001, 127.0.0.2:3001")
    assert "… (6 in all)" in lines[1] and 'settings={"ping": true}' in lines[1]
    rows = json.loads(run("target", "list", "--json"))
    assert rows[1]["addresses"][-1] == "127.0.0.6:3001" and rows[1]["default"] is True


def test_remove_refuses_a_pool_that_jobs_use(db):
    target = Target.objects.create(name="lab", kind="stdio")
    Job.objects.create(name="j", target=target, spec={"tasksets": []}, variant_count=1, cursor=0)

    with pytest.raises(CommandError, match="lab: used by 1 job"):
        run("target", "remove", "lab")
    assert Target.objects.filter(name="lab").exists()

    Job.objects.all().delete()
    run("target", "remove", "lab")
    assert not Target.objects.exists()
    with pytest.raises(CommandError, match="name: no target named 'lab'"):
        run("target", "remove", "lab")


# -- binary -------------------------------------------------------------------


def test_binary_add_keeps_name_checksum_and_the_content_in_the_database(db, tmp_path):
    source = tmp_path / "hey"
    source.write_bytes(b"\x7fELF hey")

    output = run("binary", "add", str(source))

    binary = Binary.objects.get()
    assert (binary.name, binary.size, binary.sha256) == ("hey", 8, hashlib.sha256(b"\x7fELF hey").hexdigest())
    assert b"".join(binary.blob().chunks()) == b"\x7fELF hey"
    assert "binary hey: 8 bytes" in output and "(added)" in output


def test_binary_add_replaces_the_same_name_and_drops_the_old_content(db, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"one")
    second.write_bytes(b"two!")
    run("binary", "add", str(first), "--name", "pi")
    old = Binary.objects.get().sha256

    assert "(replaced)" in run("binary", "add", str(second), "--name", "pi")

    binary = Binary.objects.get()
    assert (binary.size, binary.sha256) == (4, hashlib.sha256(b"two!").hexdigest())
    assert not Blob.objects.filter(pk=old).exists()
    assert "pi" in run("binary", "list") and binary.sha256 in run("binary", "list")


@pytest.mark.parametrize("name, message", [
    ("sixteen-bytes-xx", "name: 'sixteen-bytes-xx' must be 1-15"),
    ("../etc", "name: '../etc' must be"),
    ("héllo", "name: 'héllo' must be"),
])
def test_binary_add_refuses_names_the_target_would_cut(db, tmp_path, name, message):
    source = tmp_path / "file"
    source.write_bytes(b"x")

    with pytest.raises(CommandError, match=message):
        run("binary", "add", str(source), "--name", name)
    assert not Binary.objects.exists()


def test_binary_add_names_an_unreadable_file(db, tmp_path):
    with pytest.raises(CommandError, match="file: cannot read"):
        run("binary", "add", str(tmp_path / "missing"), "--name", "x")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(CommandError, match="file: .* is empty"):
        run("binary", "add", str(tmp_path / "empty"))


def test_image_add_streams_a_boot_image_into_the_database_under_the_web_uploads_rules(db, tmp_path, settings):
    source = tmp_path / "image.elf"
    source.write_bytes(b"\x7fELF kernel")
    assert "boot image image.elf: 11 bytes" in run("image", "add", str(source))
    image = BootImage.objects.get()
    assert b"".join(image.blob().chunks()) == b"\x7fELF kernel"
    assert "(replaced)" in run("image", "add", str(source), "--name", "image.elf")
    assert image.sha256 in run("image", "list")
    with pytest.raises(CommandError, match="name: '../x' must be"):
        run("image", "add", str(source), "--name", "../x")
    settings.IMAGE_MAX_BYTES = 4
    with pytest.raises(CommandError, match="file: .* is 11 bytes; the limit is 4"):
        run("image", "add", str(source), "--name", "other")
    assert BootImage.objects.count() == 1


def test_names_with_a_trailing_newline_are_refused(tmp_path, db):
    """`$` in a regular expression also matches before a final newline."""
    from django.core.management import CommandError, call_command

    from distributor.models import Binary, Target

    binary = tmp_path / "hey"
    binary.write_bytes(b"\x7fELF")
    with pytest.raises(CommandError):
        call_command("binary", "add", str(binary), "--name", "hey\n")
    with pytest.raises(CommandError):
        call_command("target", "add", "pool\n", "--kind", "stdio")
    assert not Binary.objects.exists() and not Target.objects.filter(name__startswith="pool").exists()
