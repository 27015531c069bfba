"""Audit events for what django-allauth and Django's authentication do on their own pages."""

from allauth.account.internal.flows.login import record_authentication
from allauth.account.signals import email_confirmed, user_signed_up
from allauth.mfa.models import Authenticator
from allauth.mfa.signals import authentication_failed, authenticator_added, authenticator_removed
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.db.models import Q
from django.dispatch import receiver

from access.services import record_account_created, record_email_verified
from audit.chain import record
from audit.models import keyed_digest
from audit.tags import Tag


@receiver(user_signed_up, dispatch_uid="access-audit-signed-up")
def signed_up(sender, request, user, **kwargs):
    record_account_created(user, via="signup", actor=user, request=request)


@receiver(email_confirmed, dispatch_uid="access-audit-email-confirmed")
def confirmed(sender, request, email_address, **kwargs):
    # Staff confirming in allauth's admin act on someone else; whoever opens the link, signed out, is its owner.
    signed_in = getattr(request, "user", None)
    actor = signed_in if signed_in is not None and signed_in.is_authenticated else email_address.user
    record_email_verified(email_address.user, email=email_address.email, via="allauth", actor=actor, request=request)


@receiver(user_login_failed, dispatch_uid="access-audit-login-failed")
def login_failed(sender, credentials, request=None, **kwargs):
    # Only the name tried is kept: never the password, whatever key a login form sends it under.
    attempted = str(credentials.get("username") or credentials.get("email") or "")[:150]
    account = None
    if attempted:
        account = get_user_model().objects.filter(Q(username=attempted) | Q(email__iexact=attempted)).first()
    # A name that matches no account is often a password typed in the wrong box: keep only a keyed
    # digest of it, enough to see the same guess repeated without storing what was typed.
    tried = {"username": attempted} if account is not None else {"unknown_name_digest": keyed_digest(attempted)}
    record(Tag.LOGIN_FAILED, subject=account, request=request, **tried)


@receiver(authenticator_added, dispatch_uid="access-second-factor-added")
def second_factor_added(sender, request, user, authenticator, **kwargs):
    if authenticator.type != Authenticator.Type.TOTP:
        return  # the recovery codes made with it are part of the same enrolment
    # Confirming the app with one of its codes proves the factor in this session, as signing in with it
    # would: the person goes on to the page that sent them here without typing a second code.
    record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type, enrolled=True)
    record(Tag.SECOND_FACTOR_ADDED, actor=user, subject=user, request=request, type=authenticator.type)


@receiver(authenticator_removed, dispatch_uid="access-second-factor-removed")
def second_factor_removed(sender, request, user, authenticator, **kwargs):
    record(
        Tag.SECOND_FACTOR_REMOVED,
        actor=user,
        subject=authenticator.user,
        request=request,
        via="account page",
        types=[authenticator.type],
    )


@receiver(authentication_failed, dispatch_uid="access-second-factor-failed")
def second_factor_failed(sender, request, user, authenticator, **kwargs):
    # The password was right and the code was not: worth seeing beside the failed passwords.
    record(Tag.LOGIN_FAILED, subject=user, request=request, username=user.get_username(), second_factor=True)
