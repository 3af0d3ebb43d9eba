from django.contrib import admin

from webapp.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created on the profile page (the clear text is shown once);
    here staff can see who has which and revoke them."""

    list_display = ("prefix", "name", "user", "created_at", "expires_at", "last_used_at")
    list_filter = ("user",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("user", "name", "prefix", "token_hash", "created_at", "expires_at", "last_used_at")

    def has_add_permission(self, request) -> bool:
        return False
