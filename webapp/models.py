"""Per-user API tokens.

Only a SHA-256 of each token is stored: a stolen database does not hand out
working tokens. A plain hash suffices (no slow password hash) because tokens
are 256-bit random strings, not passwords a person chose; it also lets a
request find its token with one indexed lookup.

A token may carry an expiry: from that moment on it is refused like a revoked
one (revoking deletes the row). Tokens are made on the profile page or with
``python manage.py token create``.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

TOKEN_PREFIX = "dst_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="what the token is for, e.g. 'campaign script'")
    # The first characters of the token, shown so a user can tell tokens apart.
    prefix = models.CharField(max_length=12)
    # Unique: the lookup of every API request by Bearer token.
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="refused from this moment on; empty: never")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}, {self.user})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @classmethod
    def issue(cls, user, name: str, expires_in: timedelta | None = None) -> tuple["ApiToken", str]:
        """A new token, valid for ``expires_in`` (None: until revoked); the
        clear text is returned once and never stored."""
        clear = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = timezone.now() + expires_in if expires_in is not None else None
        token = cls.objects.create(user=user, name=name, prefix=clear[:12], token_hash=hash_token(clear),
                                   expires_at=expires_at)
        return token, clear

    @classmethod
    def authenticate(cls, clear: str):
        """The active user of a token that has not expired, or None; stamps
        last use at most once a minute."""
        now = timezone.now()
        token = (cls.objects.select_related("user").filter(token_hash=hash_token(clear))
                 .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).first())
        if token is None or not token.user.is_active:
            return None
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user
