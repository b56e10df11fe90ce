from django.apps import AppConfig


class CallsConfig(AppConfig):
    name = "calls"
    verbose_name = "costlab calls"
    default_auto_field = "django.db.models.BigAutoField"
