"""Audit events for what django-allauth and Django's authentication do on their own pages."""

from allauth.account.signals import email_confirmed, user_signed_up
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
