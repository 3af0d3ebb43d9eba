from django.apps import AppConfig


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Web application"
    default_auto_field = "django.db.models.BigAutoField"
