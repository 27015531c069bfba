"""Bearer tokens, as the Hugging Face client sends them: `Authorization: Bearer <token>`."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from access.models import ApiToken, hash_token

# Writing last_used_at on every request would turn each download into a write; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


class InvalidToken(Exception):
    """A token was sent but it is unknown, revoked or expired; never treated as anonymous."""


def bearer_from_header(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def token_from_request(request) -> ApiToken | None:
    """The live token a request carries, None when it carries none; InvalidToken for a bad one.

    Recording when it was last used also tells its owner on the account page whether a token is still in use."""
    raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
    if raw is None:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=hash_token(raw), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        raise InvalidToken("the token is unknown or was revoked: create a new one on your account page")
    now = timezone.now()
    if token.expired(now):
        raise InvalidToken(
            f"this token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC: "
            "create a new one on your account page, /account/"
        )
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def authenticate(request):
    """(user, token) for the request: a Bearer token first, then the browser session."""
    token = token_from_request(request)
    if token is not None:
        return token.user, token
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user, None
    return None, None


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        try:
            token = token_from_request(request._request)
        except InvalidToken as error:
            raise exceptions.AuthenticationFailed(str(error)) from None
        if token is None:
            return None
        return token.user, token

    def authenticate_header(self, request):
        return "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the tokens: HTTP bearer, as the Hugging Face client sends them."""

    target_class = "access.tokens.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A portal API token (wg_...), made on the account page. It does what its scopes allow (read: "
                "download; review: decide and count the requests of the repos you review, audit their downloads; "
                "publish; admin: a staff member's powers), within the repos it is limited to, until it expires; "
                "never more than its owner may. An expired token is refused with 401."
            ),
        }
