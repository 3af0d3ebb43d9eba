"""`image add FILE [--name NAME]` / `image list`: boot images for QEMU pools.

The command-line twin of the web's boot-image upload: the same naming rule
(BootImage.check_name) and size limit (IMAGE_MAX_BYTES); the content is
streamed into the database (flat memory, whatever its size), where every
host's machines read it.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distributor.audit import cli_actor, record_upload
from distributor.management.commands.binary import store_file
from distributor.models import BootImage


class Command(BaseCommand):
    help = "Manage the boot images QEMU pools boot."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{add,list}")
        add = actions.add_parser("add", help="upload a boot image (replaces one of the same name)")
        add.add_argument("file")
        add.add_argument("--name", default="", help="the name pools use in kernel/initrd (default: the file's name)")
        actions.add_parser("list", help="show the boot images")

    def handle(self, *args, action: str, **options) -> None:
        {"add": self._add, "list": self._list}[action](options)

    def _add(self, options: dict) -> None:
        path = Path(options["file"])
        name = BootImage.name_for(options["name"], path.name)
        try:
            BootImage.check_name(name)
        except ValidationError as error:
            raise CommandError(f"name: {error.message_dict['name'][0]} (use --name)") from None
        image, replaced = store_file(BootImage, name, path, settings.IMAGE_MAX_BYTES)
        record_upload(cli_actor(), image, replaced)
        self.stdout.write(f"boot image {image.name}: {image.size} bytes, sha256 {image.sha256}"
                          f" ({'replaced' if replaced else 'added'})")

    def _list(self, options: dict) -> None:
        images = BootImage.objects.order_by("name")
        if not images:
            self.stdout.write("no boot images (python manage.py image add FILE --name NAME)")
        for image in images:
            self.stdout.write(f"{image.name}  {image.size} bytes  sha256 {image.sha256}  "
                              f"{image.uploaded_at:%Y-%m-%d %H:%M}")
