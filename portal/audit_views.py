"""Who obtained which model, for the people who answer for it: a page with CSV and JSON exports and
an API for staff and reviewers (a reviewer sees the repos they review), and each person's own history."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from access import gate
from access.activity import activity
from access.gate import is_staff, reviewed_repos
from access.second_factor import SecondFactorForSessions, second_factor_required
from hub.charts import svg
from hub.pages import ReportPages, without_page
from portal.reports import DownloadFilters, DownloadQuery, as_csv, as_json, as_rows, who_obtained

PAGE_ROWS = 100  # a page, not a dump: the exports carry every row
EXPORTS = {"csv": ("text/csv; charset=utf-8", as_csv), "json": ("application/json", as_json)}


def audited_repos(user, wanted: str, token=None) -> tuple[str, ...] | None:
    """The repo ids `user` may audit (through `token`, if one was used), narrowed to `wanted` when given;
    None is every repo (staff).

    A repo they may not audit answers as one that does not exist; someone who audits none is refused.
    """
    repos = gate.audited_repos(user, token)
    if repos is None:
        return (wanted,) if wanted else None
    mine = tuple(repo.repo_id for repo in repos)
    if wanted:
        if wanted not in mine:
            raise Http404(f"no repo {wanted} among the repos you review")
        return (wanted,)
    if not mine:
        raise PermissionDenied("you review no repo")
    return mine


def export(rows: list[dict], format: str, filename: str) -> HttpResponse:
    content_type, serialise = EXPORTS[format]
    response = HttpResponse(serialise(rows), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}.{format}"'
    return response


@login_required
@second_factor_required
def downloads(request, format=None):
    """The page, or (with `format`) the same filtered rows as a file."""
    filters = DownloadFilters(request.GET)
    repos = audited_repos(request.user, request.GET.get("repo", "").strip())
    if format and not filters.is_valid():
        return HttpResponseBadRequest(filters.errors.as_text(), content_type="text/plain; charset=utf-8")
    rows = as_rows(who_obtained(filters.query(repos))) if filters.is_valid() else []  # the page shows the errors
    if format:
        return export(rows, format, "downloads")
    page = Paginator(rows, PAGE_ROWS).get_page(request.GET.get("page"))
    context = {
        "filters": filters,
        "repos": reviewed_repos(request.user),
        "rows": page.object_list,
        "page": page,
        "total": len(rows),
        "activity": svg(activity(None if is_staff(request.user) else reviewed_repos(request.user))),
        "query_string": without_page(request),
    }
    return render(request, "portal/audit_downloads.html", context)


@login_required
def my_downloads(request, format):
    return export(as_rows(who_obtained(DownloadQuery(user_id=request.user.pk))), format, "my-downloads")


class ObtainedSerializer(serializers.Serializer):
    """One row of the report (documents the API; the rows come from portal.reports.as_rows)."""

    username = serializers.CharField(help_text="as recorded with the downloads; (anonymous) for open repos")
    repo = serializers.CharField(help_text="ORG/NAME")
    revision = serializers.CharField(help_text="the commit")
    first_download = serializers.DateTimeField()
    last_download = serializers.DateTimeField()
    files_served = serializers.IntegerField(help_text="files of the revision of which at least one byte was served")
    files_in_revision = serializers.IntegerField()
    bytes_served = serializers.IntegerField(help_text="the sum over requests: bytes sent twice count twice")
    complete = serializers.BooleanField(
        help_text="every file fully served, in one request or pieced together from byte ranges"
    )


class CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return as_csv(data)


class ReportView(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    pagination_class = ReportPages

    def rows(self, rows: list[dict]) -> Response:
        """JSON in pages (`page`, `page_size`); CSV whole, as a file to keep."""
        if self.request.accepted_renderer.format == "csv":
            return Response(rows)
        pages = self.pagination_class()
        return pages.get_paginated_response(pages.paginate_queryset(rows, self.request, view=self))

    def perform_content_negotiation(self, request, force=False):
        # Only GET answers rows; OPTIONS describes the endpoint, an object a CSV of rows cannot carry.
        if request.method != "GET":
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force)

    def handle_exception(self, exc):
        # An error is a JSON object whatever format was asked for: a CSV of rows cannot carry it.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().handle_exception(exc)


FILTER_PARAMETERS = [
    OpenApiParameter(name, OpenApiTypes.STR, description=text)
    for name, text in (
        ("repo", "ORG/NAME; without it, every repo you review (staff: every repo)"),
        ("revision", "a commit, or at least its first 7 characters"),
        ("user", "a username, as recorded with the downloads"),
        ("since", "from this day (YYYY-MM-DD) or moment (ISO 8601) on"),
        ("until", "up to this day, included, or before this moment"),
    )
]
FORMAT_PARAMETER = OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], description="default json")


class DownloadAudit(ReportView):
    """GET: who obtained which model, per person and revision, in the repos you review."""

    permission_classes = [IsAuthenticated, SecondFactorForSessions]

    @extend_schema(
        parameters=[*FILTER_PARAMETERS, FORMAT_PARAMETER],
        responses=ObtainedSerializer(many=True),
        description="Staff see every repo, a reviewer the repos they review; 404 for a repo you may not audit.",
    )
    def get(self, request):
        filters = DownloadFilters(request.query_params)
        repos = audited_repos(request.user, request.query_params.get("repo", "").strip(), request.auth)
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        return self.rows(as_rows(who_obtained(filters.query(repos))))


class MyDownloads(ReportView):
    """GET: your own downloads, per revision, as the reviewers see them (a token limited to some repos:
    those repos' only)."""

    @extend_schema(parameters=[FORMAT_PARAMETER], responses=ObtainedSerializer(many=True))
    def get(self, request):
        reached = gate.repos_reached(request.auth)
        repos = None if reached is None else tuple(repo.repo_id for repo in reached)
        return self.rows(as_rows(who_obtained(DownloadQuery(user_id=request.user.pk, repos=repos))))
