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
