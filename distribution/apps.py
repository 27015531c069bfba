from django.apps import AppConfig


class DistributionConfig(AppConfig):
    name = "distribution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from distribution.downloads import fast_path  # noqa: F401  (connects the receivers that keep its decisions current)
