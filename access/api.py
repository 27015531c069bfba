"""The REST API under /api/v1/ for access: requests without a browser."""

from django.core.exceptions import ValidationError
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.gate import AccessDenied, find_repo
from access.models import AccessRequest
from access.services import RequestRefused, submit_request
from distribution.models import parse_repo_id


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


class AccessRequestList(APIView):
    def get(self, request):
        mine = AccessRequest.objects.filter(user=request.user).select_related("repo")
        return Response(AccessRequestSerializer(mine, many=True).data)

    def post(self, request):
        incoming = NewAccessRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        org, name = incoming.validated_data["repo"]
        try:
            repo = find_repo(request.user, org, name)
            created = submit_request(
                request.user,
                repo,
                fields=incoming.validated_data["fields"],
                accept_license=incoming.validated_data["accept_license"],
            )
        except AccessDenied as denied:
            return Response({"detail": denied.message}, status=denied.status)
        except RequestRefused as refused:
            return Response({"detail": refused.message}, status=refused.status)
        created.refresh_from_db()
        return Response(AccessRequestSerializer(created).data, status=status.HTTP_201_CREATED)
