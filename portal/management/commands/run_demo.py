"""`make run`: migrate, publish a demo checkpoint, start a worker and the web server, release the demo.

Everything it starts is a child process; Ctrl-C (or SIGTERM) stops them all.
"""

import gc
import secrets
import signal
import subprocess
import sys
import time

from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from allauth.mfa.utils import decrypt
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from access.models import User
from access.services import assign_reviewer, create_token, record_account_created, verify_email_address
from distribution.models import Repo, Revision
from distribution.publishing import publish_checkpoint, release_revision
from portal.forked_web import ForkedProcess, load_portal, start_web_server
from portal.new_database import migrate_database
from verification.core.tiny_llama import write_tiny_llama
from verification.signing import current_key
from verification.tasks import verify_revision
from workers.celery import worker_command

DEMO_REPO = "demo/tiny-llama"
VERIFY_WAIT_SECONDS = 300
# gunicorn's settings by name (as its command line spells them: --workers=2 --threads=4 ...).
WEB_SERVER_SETTINGS = {
    "workers": 2,
    "threads": 4,
    "accesslog": "-",
    "graceful_timeout": 5,
    "control_socket_disable": True,
}


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


def migrate_uncollected() -> None:
    """migrate_database in a process that ends with it: its model states are a great many short-lived objects
    and nothing that lasts, so looking for garbage among them (a fifth of its time) is left to the exit."""
    gc.disable()
    migrate_database()


class Command(BaseCommand):
    help = "Run the portal on this machine with a worker and a released demo repo (what `make run` does)."
    requires_system_checks = []  # run in handle, while the database is migrated

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--bind", default="127.0.0.1")

    def handle(self, *args, port, bind, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        # The longest step of a first start, in a child, while this process loads the portal it will serve.
        migration = ForkedProcess("migrate", migrate_uncollected)
        try:
            self.check()  # the system checks (requires_system_checks), now beside the migrate
            call_command("collectstatic", interactive=False, verbosity=0)
            application = load_portal()
        finally:
            migration.wait()
        if migration.poll() != 0:
            raise CommandError("the database could not be migrated (the error is above)")
        _, signing_key = current_key()  # made under var/ on the first start, published before anything is signed

        children = {}

        def stop_all(*_):
            for child in children.values():
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 10
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()

        signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
        try:
            # The web server first: the portal answers while the demo accounts and repo are being made.
            children["gunicorn"] = start_web_server(application, bind, port, **WEB_SERVER_SETTINGS)
            children["celery"] = subprocess.Popen(worker_command("verify,gpu,default,mail", "demo@%h", beat=True))
            admin, admin_password = demo_account("admin", staff=True)
            applicant, applicant_password = demo_account("alice", staff=False)
            totp_secret, recovery_code = demo_second_factor(admin)
            revision = self.demo_revision(admin)
            self.wait_for_release(revision, children.values())
            assign_reviewer(admin, revision.repo, via="make run")
            token = create_token(applicant, "make run demo")[1]
            url = f"http://{'localhost' if bind in ('127.0.0.1', '0.0.0.0') else bind}:{port}"  # noqa: S104
            self.stdout.write(self.style.SUCCESS(f"\nWeightgate is running at {url}/"))
            self.stdout.write(
                f"  Demo repo:  {url}/{DEMO_REPO} (revision {revision.commit[:12]}, released)\n"
                f"  Sign in as the reviewer: admin / {admin_password}   (staff; admin pages at {url}/admin/)\n"
                f"    then its second factor: a code from an authenticator app given the secret {totp_secret}\n"
                f"    (or `oathtool --totp -b {totp_secret}`), or the recovery code {recovery_code} (once)\n"
                f"  Sign in as an applicant: alice / {applicant_password}\n"
                f"  alice's API token:       {token}\n"
                f"  Ask for access with it:  curl -H 'Authorization: Bearer {token}' "
                f"-H 'Content-Type: application/json' "
                f'-d \'{{"repo": "{DEMO_REPO}", "accept_license": true}}\' {url}/api/v1/access-requests/\n'
                f"  Releases are signed:     {url}/api/v1/signing-key.pem (key {signing_key.fingerprint[:16]}…)\n"
                "  Press Ctrl-C to stop the web server and the worker.\n"
            )
            while all(child.poll() is None for child in children.values()):
                time.sleep(0.5)
            failed = [name for name, child in children.items() if child.poll() not in (None, 0)]
            raise CommandError(f"a process stopped unexpectedly: {', '.join(failed) or 'unknown'}")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            stop_all()

    def demo_revision(self, admin) -> Revision:
        org, name = DEMO_REPO.split("/")
        repo = Repo.objects.filter(org=org, name=name).first()
        # A draft (a `make run` stopped while publishing) is finished below rather than waited on.
        existing = (
            repo.revisions.exclude(state__in=[Revision.State.FAILED, Revision.State.DRAFT]).first() if repo else None
        )
        if existing is not None:
            return existing
        checkpoint = write_tiny_llama(settings.VAR_DIR / "demo-checkpoint", shards=2)
        revision = publish_checkpoint(checkpoint, DEMO_REPO, publisher=admin).revision
        verify_revision.delay_on_commit(revision.pk)
        revision.repo.description = "A tiny LLaMA-architecture model with random weights, published by `make run`."
        revision.repo.save(update_fields=["description"])
        self.stdout.write(f"Published the demo checkpoint as {DEMO_REPO}@{revision.commit[:12]}; verifying…")
        return revision

    def wait_for_release(self, revision: Revision, children) -> None:
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
