"""The demo `make run` serves: two accounts (a staff reviewer with a second factor, an applicant) and a tiny
LLaMA-architecture checkpoint published, verified by the worker and released."""

import secrets
import time

from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from allauth.mfa.utils import decrypt
from django.conf import settings
from django.core.management.base import CommandError

from access.models import User
from access.services import record_account_created, verify_email_address
from distribution.models import Repo, Revision
from distribution.publishing import publish_checkpoint, release_revision
from verification.core.tiny_llama import write_tiny_llama
from verification.tasks import verify_revision

DEMO_REPO = "demo/tiny-llama"
VERIFY_WAIT_SECONDS = 300


def demo_password(name: str) -> str:
    """A password made once per machine and kept in var/, so the printed sign-in keeps working."""
    path = settings.VAR_DIR / f"demo-{name}-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def demo_account(username: str, *, staff: bool) -> tuple[User, str]:
    password = demo_password(username)
    user, created = User.objects.get_or_create(
        username=username, defaults={"email": f"{username}@example.org", "is_staff": staff, "is_superuser": staff}
    )
    if created or not user.check_password(password):
        user.set_password(password)
    user.save()
    if created:
        record_account_created(user, via="run_demo")
    verify_email_address(user, via="run_demo")
    return user, password


def demo_second_factor(user: User) -> tuple[str, str]:
    """The demo reviewer's authenticator secret and an unused recovery code: staff sign in with a second
    factor here as anywhere (the requirement has no off switch), so the demo enrols them once and prints
    how to pass it without a phone."""
    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    secret = decrypt(totp.data["secret"]) if totp else generate_totp_secret()
    if totp is None:
        TOTP.activate(user, secret)
    unused = RecoveryCodes.activate(user).get_unused_codes()
    if not unused:  # every code printed so far was used: a new set
        Authenticator.objects.filter(user=user, type=Authenticator.Type.RECOVERY_CODES).delete()
        unused = RecoveryCodes.activate(user).get_unused_codes()
    return secret, unused[0]


def demo_revision(admin: User, stdout) -> Revision:
    """The demo repo's revision: published now (its verification queued) unless an earlier start did."""
    org, name = DEMO_REPO.split("/")
    repo = Repo.objects.filter(org=org, name=name).first()
    # A draft (a `make run` stopped while publishing) is finished below rather than waited on.
    existing = repo.revisions.exclude(state__in=[Revision.State.FAILED, Revision.State.DRAFT]).first() if repo else None
    if existing is not None:
        return existing
    checkpoint = write_tiny_llama(settings.VAR_DIR / "demo-checkpoint", shards=2)
    revision = publish_checkpoint(checkpoint, DEMO_REPO, publisher=admin).revision
    verify_revision.delay_on_commit(revision.pk)
    revision.repo.description = "A tiny LLaMA-architecture model with random weights, published by `make run`."
    revision.repo.save(update_fields=["description"])
    stdout.write(f"Published the demo checkpoint as {DEMO_REPO}@{revision.commit[:12]}; verifying…")
    return revision


def wait_for_release(revision: Revision, children) -> None:
    """Release the demo revision once the worker has verified it; stop if it failed or a child stopped."""
    deadline = time.monotonic() + VERIFY_WAIT_SECONDS
    while time.monotonic() < deadline:
        revision.refresh_from_db()
        if revision.state == Revision.State.VERIFIED:
            release_revision(revision)
            return
        if revision.state == Revision.State.RELEASED:
            return
        if revision.state == Revision.State.FAILED:
            raise CommandError(f"the demo revision failed verification: {revision.failure_reason}")
        if any(child.poll() is not None for child in children):
            raise CommandError("the worker or the web server stopped before the demo was verified")
        time.sleep(0.5)
    raise CommandError(f"the demo revision was not verified within {VERIFY_WAIT_SECONDS} s; see the worker log")
