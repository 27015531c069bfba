"""Staff see repos, revisions and downloads here; every change is audited, the records stay as written."""

from django import forms
from django.contrib import admin, messages
from django.shortcuts import render

from access.admin import AuditedAdmin, tags_by_action
from audit.tags import Tag
from distribution.models import DownloadEvent, Repo, Revision, TracedCopy
from distribution.publishing import PublishError, withdraw_revision


@admin.register(Repo)
class RepoAdmin(AuditedAdmin):
    audit_tags = tags_by_action(Tag.ADMIN_REPO_CREATED, Tag.ADMIN_REPO_CHANGED, Tag.ADMIN_REPO_DELETED)
    list_display = ["org", "name", "private", "gated", "traceable", "created_at"]

    def audited_repo(self, obj):
        return obj


class WithdrawalForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="recorded in the audit log and shown to staff")


@admin.action(description="Withdraw: stop every download of the selected revisions")
def withdraw(modeladmin, request, queryset):
    form = WithdrawalForm(request.POST if "reason" in request.POST else None)
    if not form.is_valid():  # first ask why
        context = {**modeladmin.admin_site.each_context(request), "revisions": queryset, "form": form}
        return render(request, "distribution/admin/withdraw.html", context)
    for revision in queryset.select_related("repo"):
        try:
            withdraw_revision(revision, reason=form.cleaned_data["reason"], actor=request.user, request=request)
            messages.success(request, f"withdrawn {revision.repo.repo_id}@{revision.commit[:12]}")
        except PublishError as refused:
            messages.error(request, str(refused))
    return None


@admin.register(Revision)
class RevisionAdmin(AuditedAdmin):
    audit_tags = {"changed": Tag.ADMIN_REVISION_CHANGED, "deleted": Tag.ADMIN_REVISION_DELETED}
    list_display = ["repo", "commit", "state", "verification_stage", "created_at", "released_at"]
    list_filter = ["state"]
    actions = [withdraw]
    # What was published, verified and released, and when, is the pipeline's record: never edited here.
    readonly_fields = [
        "repo",
        "commit",
        "state",
        "verification_stage",
        "storage_backend",
        "tag",
        "published_by",
        "created_at",
        "verification_started_at",
        "verified_at",
        "released_at",
        "withdrawn_at",
    ]

    def has_add_permission(self, request):
        return False  # revisions come from publishing

    def has_delete_permission(self, request, obj=None):
        # Its downloads would lose their revision, and the who-obtained report would lose them.
        if obj is not None and DownloadEvent.objects.filter(revision=obj).exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        downloaded = queryset.filter(pk__in=DownloadEvent.objects.values("revision"))
        if downloaded.exists():
            names = ", ".join(f"{r.repo.repo_id}@{r.commit[:12]}" for r in downloaded.select_related("repo"))
            messages.error(request, f"not deleted: {names} have downloads; withdraw them instead")
            queryset = queryset.exclude(pk__in=downloaded)
        super().delete_queryset(request, queryset)


class RecordsAdmin(admin.ModelAdmin):
    """Records of what happened: read in the admin, never added, edited or deleted there."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DownloadEvent)
class DownloadEventAdmin(RecordsAdmin):
    """Downloads are records: read here, never added, edited or deleted."""

    list_display = ["created_at", "username", "repo_id", "commit", "path", "status", "bytes_served", "ip"]
    list_filter = ["repo_id", "status"]


@admin.register(TracedCopy)
class TracedCopyAdmin(RecordsAdmin):
    """The copies issued of traceable revisions: records, read here only."""

    list_display = ["created_at", "username", "revision", "grant", "key_id"]
    exclude = ["signature", "recipient"]
