from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class PortalConfig(AppConfig):
    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from audit import chain
        from portal import checks  # noqa: F401  (registers the system checks)
        from portal.anchors import stored_anchor_breaks

        # The chain's checks include the anchors kept in storage, which the audit layer cannot reach itself.
        if stored_anchor_breaks not in chain.witnesses:
            chain.witnesses.append(stored_anchor_breaks)


class PortalAdminConfig(AdminConfig):
    default_site = "portal.admin_site.StaffAdminSite"
