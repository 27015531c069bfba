"""Running the portal's management commands: in this process, or as `manage.py` in a process of its own."""

import io
import os
import subprocess
import sys

from django.core.management import call_command

from tests.support.servers import REPO_ROOT


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def manage(*args, env: dict, tmp_path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "DATABASE_URL", "CELERY_", "EMAIL_"))}
    clean.update(WEIGHTGATE_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=120
    )
