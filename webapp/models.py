"""Per-user API tokens.

Only a SHA-256 of each token is stored: a stolen database does not hand out
working tokens. A plain hash suffices (no slow password hash) because tokens
are 256-bit random strings, not passwords a person chose; it also lets a
request find its token with one indexed lookup.
"""
from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
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

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name}, {self.user})"

    @classmethod
    def issue(cls, user, name: str) -> tuple["ApiToken", str]:
        """A new token; the clear text is returned once and never stored."""
        clear = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=clear[:12], token_hash=hash_token(clear))
        return token, clear

    @classmethod
    def authenticate(cls, clear: str):
        """The active user of a token, or None; stamps last use at most once a minute."""
        token = cls.objects.select_related("user").filter(token_hash=hash_token(clear)).first()
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user
