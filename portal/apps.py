from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class PortalConfig(AppConfig):
    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from portal import checks  # noqa: F401  (registers the system checks)


class PortalAdminConfig(AdminConfig):
    default_site = "portal.admin_site.StaffAdminSite"
