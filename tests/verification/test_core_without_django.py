"""The verification core (verification.core) runs with Django, Celery and every app of the project
made impossible to import: it is the same code in the CLI, a worker and a test."""

import json
import subprocess
import sys

from tests.support.servers import REPO_ROOT

BLOCKED = ("django", "celery", "rest_framework", "portal", "workers", "distribution", "access", "audit", "hub")

SCRIPT = """
import importlib, json, pkgutil, runpy, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be imported by the verification core")
        return None

sys.meta_path.insert(0, Blocked())
import verification.core
for module in pkgutil.walk_packages(verification.core.__path__, "verification.core."):
    importlib.import_module(module.name)
from verification.core.tiny_llama import write_tiny_llama
checkpoint = write_tiny_llama(sys.argv[1], shards=2)
sys.argv = ["verification", str(checkpoint), "--json"]
try:
    runpy.run_module("verification", run_name="__main__")
except SystemExit as done:
    print("exit", done.code)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)))
"""


def test_the_core_and_its_cli_run_with_django_and_the_apps_blocked(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", f"BLOCKED = {BLOCKED!r}\n{SCRIPT}", str(tmp_path / "checkpoint")],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *report, verdict, loaded = result.stdout.strip().splitlines()
    assert verdict == "exit 0", result.stdout[-3000:]
    assert json.loads("\n".join(report))["ok"] is True
    assert json.loads(loaded) == []


def test_the_blocker_would_catch_an_import_of_django(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", f"BLOCKED = {BLOCKED!r}\n{SCRIPT.split('import verification.core')[0]}import django"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "must not be imported by the verification core" in result.stderr
