from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from access import signals  # noqa: F401  (connects the audit receivers)
