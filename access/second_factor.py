"""Where a browser session that has not passed its second factor is sent instead of a staff page.

Whether it has is decided in access.gate (`check_second_factor`); here a refusal becomes a redirect to
allauth's pages (set up an authenticator app, or enter a code from it) with a message saying why, and
the way back to the page that was asked for.
"""

import functools

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission

from access.gate import SecondFactorRequired, check_second_factor

# The page the enrolment interrupted; the recovery codes page, where it ends, links back to it.
AFTER_ENROLMENT_KEY = "second_factor_next"
WHY = (
    "Staff and reviewers sign in with a second factor before the review queue, the admin and the audit pages; "
    "publishers before the publishing pages."
)


def sent_to_second_factor(request, missing: SecondFactorRequired) -> HttpResponseRedirect:
    # A refused POST is not replayed: the person sends it again once back on the page.
    back = request.get_full_path() if request.method == "GET" else request.path
    if not missing.enrolled:
        request.session[AFTER_ENROLMENT_KEY] = back
        messages.info(
            request,
            f"{WHY} Set up an authenticator app now (scan the code, enter the 6 digits it shows) and keep the "
            "recovery codes you are given; then continue to the page you asked for.",
        )
        return HttpResponseRedirect(reverse("mfa_activate_totp"))
    messages.info(
        request,
        f"{WHY} This session has not passed yours: enter a code from your authenticator app, or a recovery code.",
    )
    return HttpResponseRedirect(f"{reverse('mfa_reauthenticate')}?{urlencode({'next': back})}")


def second_factor_required(view):
    """A staff page: a staff member, reviewer or publisher reaches it only in a session that passed their
    second factor; anyone else goes on to the view, which decides as before."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            check_second_factor(request)
        except SecondFactorRequired as missing:
            return sent_to_second_factor(request, missing)
        return view(request, *args, **kwargs)

    return wrapper


class SecondFactorForSessions(BasePermission):
    """The same requirement on the API for a browser session; a bearer token is not a session and is
    left to the token rules."""

    message = (
        f"{WHY} This browser session has not passed yours: sign in again with your code, or call the API "
        "with a token (Authorization: Bearer <token>)."
    )

    def has_permission(self, request, view):
        if not isinstance(request.successful_authenticator, SessionAuthentication):
            return True
        try:
            check_second_factor(request._request)
        except SecondFactorRequired:
            return False
        return True
