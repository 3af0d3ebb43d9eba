from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    """Generated and growing campaigns: task-sets made by the distributor itself."""

    name = "distributor.campaigns"
    label = "campaigns"
    verbose_name = "Campaigns"
    default_auto_field = "django.db.models.BigAutoField"
