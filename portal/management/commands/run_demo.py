"""`make run`: migrate, start the web server and a worker, publish a demo checkpoint, release the demo.

Everything it starts is a child process, forked from this one once it has loaded the portal (so none imports
Django again); Ctrl-C (or SIGTERM) stops them all.
"""

import gc
import signal
import subprocess
import sys
import time
from functools import partial

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from access.services import assign_reviewer, create_token
from portal.forked_processes import ForkedProcess, load_portal, start_web_server
from portal.new_database import migrate_database
from verification.signing import current_key
from workers.celery import app as celery_app
from workers.celery import worker_arguments

# gunicorn's settings by name (as its command line spells them: --workers=2 --threads=4 ...).
WEB_SERVER_SETTINGS = {
    "workers": 2,
    "threads": 4,
    "accesslog": "-",
    "graceful_timeout": 5,
    "control_socket_disable": True,
}


def migrate_uncollected() -> None:
    """migrate_database in a process that ends with it: its model states are a great many short-lived objects
    and nothing that lasts, so looking for garbage among them (a fifth of its time) is left to the exit."""
    gc.disable()
    migrate_database()


def how_it_ended(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


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
            # Only now: the demo's imports (numpy, the verification core) would have held up the migrate's start.
            from portal import demo
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
            # Forked too: the worker starts with the portal loaded, ready for the demo's verification at once.
            worker = worker_arguments("verify,gpu,default,mail", "demo@%h", beat=True)
            children["celery"] = ForkedProcess("celery", partial(celery_app.worker_main, worker))
            admin, admin_password = demo.demo_account("admin", staff=True)
            applicant, applicant_password = demo.demo_account("alice", staff=False)
            totp_secret, recovery_code = demo.demo_second_factor(admin)
            revision = demo.demo_revision(admin, self.stdout)
            demo.wait_for_release(revision, children.values())
            assign_reviewer(admin, revision.repo, via="make run")
            token = create_token(applicant, "make run demo")[1]
            url = f"http://{'localhost' if bind in ('127.0.0.1', '0.0.0.0') else bind}:{port}"  # noqa: S104
            self.stdout.write(self.style.SUCCESS(f"\nWeightgate is running at {url}/"))
            self.stdout.write(
                f"  Demo repo:  {url}/{demo.DEMO_REPO} (revision {revision.commit[:12]}, released)\n"
                f"  Sign in as the reviewer: admin / {admin_password}   (staff; admin pages at {url}/admin/)\n"
                f"    then its second factor: a code from an authenticator app given the secret {totp_secret}\n"
                f"    (or `oathtool --totp -b {totp_secret}`), or the recovery code {recovery_code} (once)\n"
                f"  Sign in as an applicant: alice / {applicant_password}\n"
                f"  alice's API token:       {token}\n"
                f"  Ask for access with it:  curl -H 'Authorization: Bearer {token}' "
                f"-H 'Content-Type: application/json' "
                f'-d \'{{"repo": "{demo.DEMO_REPO}", "accept_license": true}}\' {url}/api/v1/access-requests/\n'
                f"  Releases are signed:     {url}/api/v1/signing-key.pem (key {signing_key.fingerprint[:16]}…)\n"
                "  Press Ctrl-C to stop the web server and the worker.\n"
            )
            while all(child.poll() is None for child in children.values()):
                time.sleep(0.5)
            stopped = [
                f"{name} ({how_it_ended(child.poll())})" for name, child in children.items() if child.poll() is not None
            ]
            raise CommandError(f"a process stopped unexpectedly: {', '.join(stopped)}; the others were stopped too")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            stop_all()
