"""python manage.py setup — everything a fresh installation needs, idempotently."""
from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from distributor.reconciler import ensure_schedule
from distributor.models import Job, Target
from distributor.queue import submit_job


class Command(BaseCommand):
    help = "Migrate, create the default SimSo target and an admin account, and optionally queue the example job."

    def add_arguments(self, parser):
        parser.add_argument("--example", nargs="?", const="fixtures/example5.json", default=None,
                            help="queue this task-set file when there are no jobs yet (default: the five-task example)")

    def handle(self, *args, example, **opts):
        call_command("migrate", interactive=False, verbosity=0)
        target = Target.default()
        ensure_schedule()
        self._admin()
        if example and not Job.objects.exists():
            path = settings.BASE_DIR / example if not Path(example).is_absolute() else Path(example)
            job = submit_job(path.read_bytes(), filename=path.name, target=target)
            self.stdout.write(f"queued the example job {job.pk} ({job.total} task-sets) on target '{target.name}'")
        self.stdout.write(f"ready: database {settings.DATABASES['default']['NAME']}, default target '{target.name}'")

    def _admin(self) -> None:
        """An 'admin' account; its password is kept in DATA_DIR/admin_password."""
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            return
        password_file = settings.DATA_DIR / "admin_password"
        password = password_file.read_text().strip() if password_file.exists() else secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.stdout.write(f"created user 'admin' with password '{password}' (kept in {password_file})")
