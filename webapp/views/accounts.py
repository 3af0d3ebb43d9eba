"""The profile page: who you are and your API tokens."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.access import login_required
from webapp.forms import TokenForm
from webapp.models import ApiToken


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    # A new token is shown once, on the page the creation redirected to.
    new_token = request.session.pop("new_token", None)
    return render(request, "web/profile.html", {
        "tokens": request.user.api_tokens.all(),
        "form": TokenForm(),
        "new_token": new_token,
    })


@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return render(request, "web/profile.html", {"tokens": request.user.api_tokens.all(), "form": form}, status=400)
    _, clear = ApiToken.issue(request.user, form.cleaned_data["name"])
    request.session["new_token"] = clear
    return redirect("profile")


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    token.delete()
    messages.success(request, f"Revoked the token {token.prefix}… ({token.name}).")
    return redirect("profile")
