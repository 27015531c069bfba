"""Staff edit repos' gating policies, rules and reviewers, and grant or revoke access, here."""

from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db import transaction

from access.models import AccessRequest, AccessRule, ApiToken, GatingPolicy, Grant, Publisher, Reviewer, User
from access.services import reset_second_factor
from audit.chain import append, new_event
from audit.models import AuditEvent
from audit.tags import Tag


def tags_by_action(created: Tag, changed: Tag, deleted: Tag) -> dict[str, Tag]:
    return {"created": created, "changed": changed, "deleted": deleted}


class AuditedAdmin(admin.ModelAdmin):
    """Changes staff make here are audited like those made through the portal's own pages."""

    # The tag each change here leaves, by action: created, changed or deleted.
    audit_tags: dict[str, Tag] = {}
    # Never written into the log, whatever changed.
    SECRET_FIELDS = frozenset({"password", "digest"})

    def audited_repo(self, obj):
        return getattr(obj, "repo", None)

    def audited_subject(self, obj):
        return getattr(obj, "user", None)

    def audit(self, request, obj, action: str, changed=()):
        append([self.audit_event(request, obj, action, changed)])

    def audit_event(self, request, obj, action: str, changed=()) -> AuditEvent:
        now = {
            name: value
            for name in changed
            if name not in self.SECRET_FIELDS
            and isinstance(value := getattr(obj, name, None), bool | int | str)
            and len(str(value)) <= 200
        }
        return new_event(
            self.audit_tags[action],
            actor=request.user,
            subject=self.audited_subject(obj),
            repo=self.audited_repo(obj),
            request=request,
            object=str(obj),
            action=action,
            changed=sorted(changed),
            **({"now": now} if now else {}),
        )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Recorded after the inlines are saved, so a change to a policy's rules is named too.
        changed = form.changed_data + [formset.prefix for formset in formsets if formset.has_changed()]
        self.audit(request, form.instance, "changed" if change else "created", changed)

    def delete_model(self, request, obj):
        self.deleted_with_events(request, [obj], lambda: super(AuditedAdmin, self).delete_model(request, obj))

    def delete_queryset(self, request, queryset):
        objects = list(queryset)
        self.deleted_with_events(request, objects, lambda: super(AuditedAdmin, self).delete_queryset(request, queryset))

    def deleted_with_events(self, request, objects: list, delete) -> None:
        """`delete()` the objects, then append their events, in one transaction, the objects' rows locked first.
        Locked, no one can refer to them anew (a token made for an account, a download by a grant) while their
        references are collected and deleted; and they are locked before the chain's head, as every writer
        locks the rows its events refer to: taking the head first deadlocked with a writer that held a key
        lock on the row and waited for the head. The events are made before the rows go (they name them)."""
        with transaction.atomic():
            pks = sorted(obj.pk for obj in objects)  # in one order, so two deletions cannot lock crosswise
            list(self.model._default_manager.select_for_update().filter(pk__in=pks).order_by("pk").values_list("pk"))
            events = [self.audit_event(request, obj, "deleted") for obj in objects]
            delete()
            append(events)


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, UserAdmin):
    """Accounts, whose staff and superuser flags open the admin and every repo: each change is audited."""

    audit_tags = tags_by_action(Tag.ADMIN_USER_CREATED, Tag.ADMIN_USER_CHANGED, Tag.ADMIN_USER_DELETED)

    def audited_subject(self, obj):
        return obj


class AccessRuleInline(admin.TabularInline):
    model = AccessRule
    extra = 0


@admin.register(GatingPolicy)
class GatingPolicyAdmin(AuditedAdmin):
    audit_tags = tags_by_action(Tag.POLICY_CHANGED, Tag.POLICY_CHANGED, Tag.POLICY_CHANGED)
    list_display = ["repo", "mode", "license_version", "reapply_cooldown_days"]
    inlines = [AccessRuleInline]


@admin.register(AccessRequest)
class AccessRequestAdmin(AuditedAdmin):
    audit_tags = tags_by_action(
        Tag.ADMIN_ACCESS_REQUEST_CREATED, Tag.ADMIN_ACCESS_REQUEST_CHANGED, Tag.ADMIN_ACCESS_REQUEST_DELETED
    )
    list_display = ["user", "repo", "state", "created_at", "decided_at"]
    list_filter = ["state", "repo"]
    search_fields = ["user__username", "user__email"]
    readonly_fields = ["user", "repo", "fields", "license_version", "created_at"]


@admin.register(Grant)
class GrantAdmin(AuditedAdmin):
    audit_tags = tags_by_action(Tag.ADMIN_GRANT_CREATED, Tag.ADMIN_GRANT_CHANGED, Tag.ADMIN_GRANT_DELETED)
    list_display = ["user", "repo", "created_at", "expires_at", "revoked_at", "license_version"]
    list_filter = ["repo"]
    search_fields = ["user__username"]


@admin.register(Reviewer)
class ReviewerAdmin(AuditedAdmin):
    audit_tags = tags_by_action(Tag.ADMIN_REVIEWER_CREATED, Tag.ADMIN_REVIEWER_CHANGED, Tag.ADMIN_REVIEWER_DELETED)
    list_display = ["user", "repo", "notify"]


@admin.register(Publisher)
class PublisherAdmin(AuditedAdmin):
    """Who may add revisions to which repo (through a token with the publish scope)."""

    audit_tags = tags_by_action(Tag.ADMIN_PUBLISHER_CREATED, Tag.ADMIN_PUBLISHER_CHANGED, Tag.ADMIN_PUBLISHER_DELETED)
    list_display = ["user", "repo"]
    list_filter = ["repo"]
    search_fields = ["user__username"]


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Tokens are made by their owners; here staff see what each may do and revoke or shorten it."""

    audit_tags = tags_by_action(Tag.ADMIN_TOKEN_CREATED, Tag.ADMIN_TOKEN_CHANGED, Tag.ADMIN_TOKEN_DELETED)
    list_display = [
        "user",
        "name",
        "hint",
        "scopes",
        "all_repos",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["all_repos"]
    readonly_fields = ["digest", "hint", "last_used_at"]
    filter_horizontal = ["repos"]


admin.site.unregister(Authenticator)  # allauth's shows the secrets and lets staff edit them


@admin.register(Authenticator)
class AuthenticatorAdmin(admin.ModelAdmin):
    """Second factors, listed without their secrets. Deleting one resets that person's second factor
    (the app and its recovery codes), audited: for a lost device, after checking who is asking."""

    list_display = ["user", "type", "created_at", "last_used_at"]
    list_filter = ["type"]
    search_fields = ["user__username", "user__email"]
    fields = ["user", "type", "created_at", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # only the person can enrol, with their own device

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        reset_second_factor(obj.user, via="admin", actor=request.user, request=request)

    def delete_queryset(self, request, queryset):
        for user in {authenticator.user for authenticator in queryset.select_related("user")}:
            reset_second_factor(user, via="admin", actor=request.user, request=request)
