"""The admin, whose every page (but signing out) asks for the second factor of staff (access.gate)."""

from django.contrib import admin

from access.second_factor import second_factor_required


class StaffAdminSite(admin.AdminSite):
    def admin_view(self, view, cacheable=False):
        # Django checks the staff flag first (has_permission); the second factor comes after it.
        return super().admin_view(view if view == self.logout else second_factor_required(view), cacheable)
