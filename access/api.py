"""The REST API under /api/v1/ for access: requests without a browser, licenses, counts to monitor."""

from django.core.exceptions import ValidationError
from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from access.gate import AccessDenied, find_repo, in_reach, reviewed_repos
from access.models import AccessRequest
from access.second_factor import SecondFactorForSessions
from access.services import RequestRefused, accept_current_license, submit_request
from distribution.models import Repo, parse_repo_id
from hub.pages import NewestFirst


class AccessRequestUserThrottle(UserRateThrottle):
    scope = "access-request-user"


class AccessRequestIpThrottle(AnonRateThrottle):
    """Per client address, signed in or not."""

    scope = "access-request-ip"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def submission_throttled(request) -> int | None:
    """Seconds to wait when this person or address asked too often (shared by the API and the repo page)."""
    for throttle in (AccessRequestUserThrottle(), AccessRequestIpThrottle()):
        if not throttle.allow_request(request, None):
            return int(throttle.wait() or 1)
    return None


class AccessRequestSerializer(serializers.ModelSerializer):
    repo = serializers.CharField(source="repo.repo_id", read_only=True)

    class Meta:
        model = AccessRequest
        fields = ["id", "repo", "state", "fields", "license_version", "created_at", "decided_at", "rejection_reason"]
        read_only_fields = fields


class NewAccessRequestSerializer(serializers.Serializer):
    repo = serializers.CharField(help_text="the repo id, ORG/NAME")
    fields = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    accept_license = serializers.BooleanField()

    def validate_repo(self, value):
        try:
            return parse_repo_id(value)
        except ValidationError as error:
            raise serializers.ValidationError(error.messages[0]) from None


def refusal(error) -> Response:
    body = {"detail": error.message}
    if getattr(error, "errors", None):
        body["fields"] = error.errors
    return Response(body, status=error.status)


class AccessRequestList(APIView):
    """GET: my requests (a token limited to some repos: for those repos). POST: ask for access to a repo
    (answers to its form, license accepted)."""

    def get_throttles(self):
        if self.request.method == "POST":
            return [AccessRequestUserThrottle(), AccessRequestIpThrottle()]
        return super().get_throttles()

    pagination_class = NewestFirst

    @extend_schema(responses=AccessRequestSerializer(many=True))
    def get(self, request):
        repos = in_reach(request.auth, Repo.objects.all())
        mine = AccessRequest.objects.filter(user=request.user, repo__in=repos).select_related("repo")
        pages = self.pagination_class()
        page = pages.paginate_queryset(mine, request, view=self)
        return pages.get_paginated_response(AccessRequestSerializer(page, many=True).data)

    @extend_schema(request=NewAccessRequestSerializer, responses={201: AccessRequestSerializer})
    def post(self, request):
        incoming = NewAccessRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        org, name = incoming.validated_data["repo"]
        try:
            repo = find_repo(request.user, org, name, request.auth)
            created = submit_request(
                request.user,
                repo,
                fields=incoming.validated_data["fields"],
                accept_license=incoming.validated_data["accept_license"],
                request=request._request,
            )
        except (AccessDenied, RequestRefused) as error:
            return refusal(error)
        return Response(AccessRequestSerializer(created).data, status=status.HTTP_201_CREATED)


class LicenseAcceptanceSerializer(serializers.Serializer):
    license_version = serializers.CharField()


class LicenseAcceptance(APIView):
    """POST: a grantee accepts the repo's current license version, which their downloads wait for."""

    @extend_schema(request=LicenseAcceptanceSerializer, responses=LicenseAcceptanceSerializer)
    def post(self, request, org, name):
        incoming = LicenseAcceptanceSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            repo = find_repo(request.user, org, name, request.auth)
            grant = accept_current_license(
                request.user, repo, version=incoming.validated_data["license_version"], request=request._request
            )
        except (AccessDenied, RequestRefused) as error:
            return refusal(error)
        return Response({"repo": repo.repo_id, "license_version": grant.license_version})


class RequestCounts(APIView):
    """GET: how many requests each repo you review has in each state, for monitoring."""

    permission_classes = [IsAuthenticated, SecondFactorForSessions]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, description="{repo id: {state: count}}")
    def get(self, request):
        repos = reviewed_repos(request.user, request.auth)
        if not repos.exists():
            raise PermissionDenied("you review no repo")
        counts = {repo.repo_id: {state: 0 for state in AccessRequest.State.values} for repo in repos}
        rows = (
            AccessRequest.objects.filter(repo__in=repos)
            .values("repo__org", "repo__name", "state")
            .annotate(total=Count("id"))
        )
        for row in rows:
            counts[f"{row['repo__org']}/{row['repo__name']}"][row["state"]] = row["total"]
        return Response(counts)
