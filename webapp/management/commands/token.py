"""`token create` / `token list` / `token revoke`: API tokens for scripts.

    TOKEN=$(python manage.py token create alice --name "campaign script" --expires 30)
    python manage.py token list [alice]
    python manage.py token revoke 7

``create`` prints the token alone on standard output, once (only its hash is
kept), so a script can capture it; what it made goes to standard error.
"""
from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webapp.models import ApiToken

MAX_DAYS = 3650
NAME_LENGTH = ApiToken._meta.get_field("name").max_length


class Command(BaseCommand):
    help = "Manage API tokens: create (prints the token once), list, revoke."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
        create = actions.add_parser("create", help="a new token for USER; prints it once")
        create.add_argument("user", help="user name")
        create.add_argument("--name", required=True, help="what the token is for, e.g. 'campaign script'")
        create.add_argument("--expires", type=int, default=None, metavar="DAYS",
                            help=f"refused after this many days (1 to {MAX_DAYS}; default: until revoked)")
        listing = actions.add_parser("list", help="tokens (of USER, or everyone's)")
        listing.add_argument("user", nargs="?", default=None, help="only this user's tokens")
        revoke = actions.add_parser("revoke", help="delete a token: requests carrying it get 401")
        revoke.add_argument("id", type=int, help="the token's id (token list)")

    def handle(self, *args, action: str, **options) -> None:
        {"create": self._create, "list": self._list, "revoke": self._revoke}[action](options)

    def _create(self, options: dict) -> None:
        user = _user(options["user"])
        if not user.is_active:
            raise CommandError(f"user {user.username!r} is inactive: a token of theirs would be refused")
        name = options["name"].strip()
        if not name or len(name) > NAME_LENGTH:
            raise CommandError(f"--name: must be 1 to {NAME_LENGTH} characters")
        days = options["expires"]
        if days is not None and not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--expires: must be a number of days from 1 to {MAX_DAYS}")
        token, clear = ApiToken.issue(user, name, timedelta(days=days) if days is not None else None)
        self.stdout.write(clear)
        until = f"expires {_moment(token.expires_at)}" if token.expires_at else "valid until revoked"
        self.stderr.write(f"token {token.pk} for {user.username} ({name}), {until}; it is not shown again")

    def _list(self, options: dict) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("pk")
        if options["user"] is not None:
            tokens = tokens.filter(user=_user(options["user"]))
        rows = [("ID", "USER", "NAME", "PREFIX", "CREATED", "EXPIRES", "LAST USED")]
        rows += [(str(t.pk), t.user.username, t.name, f"{t.prefix}…", _moment(t.created_at),
                  ("expired " if t.is_expired else "") + _moment(t.expires_at, "never"), _moment(t.last_used_at, "never"))
                 for t in tokens]
        if len(rows) == 1:
            self.stdout.write("no tokens (python manage.py token create USER --name NAME)")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def _revoke(self, options: dict) -> None:
        token = ApiToken.objects.select_related("user").filter(pk=options["id"]).first()
        if token is None:
            raise CommandError(f"no token {options['id']} (python manage.py token list)")
        token.delete()
        self.stdout.write(f"revoked token {options['id']} ({token.prefix}…, {token.name}, {token.user.username})")


def _user(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"no user {username!r}")
    return user


def _moment(value, empty: str = "") -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else empty
