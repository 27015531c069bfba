"""Staff edit repos' gating policies, rules and reviewers, and grant or revoke access, here."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from access.models import AccessRequest, AccessRule, ApiToken, GatingPolicy, Grant, Reviewer, User

admin.site.register(User, UserAdmin)


class AccessRuleInline(admin.TabularInline):
    model = AccessRule
    extra = 0


@admin.register(GatingPolicy)
class GatingPolicyAdmin(admin.ModelAdmin):
    list_display = ["repo", "mode", "license_version", "reapply_cooldown_days"]
    inlines = [AccessRuleInline]


@admin.register(AccessRequest)
class AccessRequestAdmin(admin.ModelAdmin):
    list_display = ["user", "repo", "state", "created_at", "decided_at"]
    list_filter = ["state", "repo"]
    search_fields = ["user__username", "user__email"]
    readonly_fields = ["user", "repo", "fields", "license_version", "created_at"]


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin):
    list_display = ["user", "repo", "created_at", "expires_at", "revoked_at", "license_version"]
    list_filter = ["repo"]
    search_fields = ["user__username"]


@admin.register(Reviewer)
class ReviewerAdmin(admin.ModelAdmin):
    list_display = ["user", "repo", "notify"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "hint", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["digest", "hint"]
