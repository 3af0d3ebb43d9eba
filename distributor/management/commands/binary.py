"""`binary add FILE [--name NAME]` / `binary list`: binaries for Genode targets.

The name is what tasks call ``pkg`` and what the target receives in a
15-byte field, so it is checked here instead of being cut on the wire (the
seeds cut silently). The content is stored in the database, a chunk at a
time (Upload.store), where every host's machines read it; the checksum lets
a host verify its copy and a session resend a replaced one.
"""
from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError

from distributor.audit import cli_actor, record_upload
from distributor.models import Binary
from distributor.models.targets import Upload

MAX_BINARY_BYTES = 256 * 1024 * 1024


class Command(BaseCommand):
    help = "Manage the task binaries sent to Genode targets."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{add,list}")
        add = actions.add_parser("add", help="upload a binary (replaces one of the same name)")
        add.add_argument("file")
        add.add_argument("--name", default="", help="the pkg name tasks use (default: the file's name)")
        actions.add_parser("list", help="show the binaries")

    def handle(self, *args, action: str, **options) -> None:
        {"add": self._add, "list": self._list}[action](options)

    def _add(self, options: dict) -> None:
        path = Path(options["file"])
        name = options["name"] or path.name
        check_name(name)
        binary, replaced = store_file(Binary, name, path, MAX_BINARY_BYTES)
        record_upload(cli_actor(), binary, replaced)
        self.stdout.write(f"binary {binary.name}: {binary.size} bytes, sha256 {binary.sha256}"
                          f" ({'replaced' if replaced else 'added'})")

    def _list(self, options: dict) -> None:
        binaries = Binary.objects.order_by("name")
        if not binaries:
            self.stdout.write("no binaries (python manage.py binary add FILE --name NAME)")
        for binary in binaries:
            self.stdout.write(f"{binary.name:<15}  {binary.size:>10} bytes  sha256 {binary.sha256}  "
                              f"{binary.uploaded_at:%Y-%m-%d %H:%M}")


def check_name(name: str) -> None:
    """The web upload's rule (Binary.check_name), with the option to use."""
    try:
        Binary.check_name(name)
    except ValidationError as error:
        raise CommandError(f"name: {error.message_dict['name'][0]} (use --name)") from None


def store_file(model: type[Upload], name: str, path: Path, limit: int) -> tuple[Upload, bool]:
    """Store the file at ``path`` as the upload ``name`` of ``model``, streamed
    (flat memory whatever its size); True when it replaced one."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise CommandError(f"file: {path} is a directory")
        if size > limit:
            raise CommandError(f"file: {path} is {size} bytes; the limit is {limit}")
        if not size:
            raise CommandError(f"file: {path} is empty")
        with path.open("rb") as handle:
            return model.store(name, File(handle, name=path.name))
    except OSError as error:
        raise CommandError(f"file: cannot read {path}: {error.strerror or error}") from None


def store_binary(name: str, data: bytes) -> tuple[Binary, bool]:
    """Store ``data`` as the binary ``name``; True when it replaced one."""
    return Binary.store(name, ContentFile(data))
