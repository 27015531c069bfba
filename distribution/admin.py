from django.contrib import admin

from distribution.models import DownloadEvent, Repo, Revision


@admin.register(Repo)
class RepoAdmin(admin.ModelAdmin):
    list_display = ["org", "name", "private", "gated", "created_at"]


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["repo", "commit", "state", "verification_stage", "created_at", "released_at"]
    list_filter = ["state"]
    # States move only through the pipeline and the release command, never by hand.
    readonly_fields = ["state", "verification_stage", "commit", "storage_backend"]


@admin.register(DownloadEvent)
class DownloadEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "username", "repo_id", "commit", "path", "status", "bytes_served", "ip"]
    list_filter = ["repo_id", "status"]

    def has_change_permission(self, request, obj=None):
        return False
