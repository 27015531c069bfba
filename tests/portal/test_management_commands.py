"""The operator commands: what they do, and one clear line and a non-zero exit for bad input."""

import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.django_db


def test_a_failing_command_exits_non_zero_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "publish_checkpoint", str(tmp_path / "nowhere"), "--repo", "acme/x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "is not a directory" in result.stderr


def test_the_demo_reviewer_passes_the_second_factor_with_what_make_run_prints(settings, tmp_path):
    from django.test import Client

    from portal.demo import demo_account, demo_second_factor
    from tests.support.personas import totp_code

    settings.VAR_DIR = tmp_path  # where the demo keeps its passwords
    admin, password = demo_account("admin", staff=True)
    secret, recovery = demo_second_factor(admin)
    assert demo_second_factor(admin) == (secret, recovery)  # the same, run after run, until it is used
    for code in (totp_code(secret), recovery):
        client = Client()
        assert client.post("/accounts/login/", {"login": "admin", "password": password})["Location"].endswith(
            "/2fa/authenticate/"
        )
        assert client.post("/accounts/2fa/authenticate/", {"code": code})["Location"] == "/"
        assert client.get("/admin/").status_code == 200
    assert demo_second_factor(admin)[1] != recovery  # the next start prints an unused one
