"""The tracing library imports no Django, no Celery, no app of the project and no torch: the web tier
serves copies with it and a command traces leaks with it, with nothing else loaded."""

import json
import subprocess
import sys

from tests.support.servers import REPO_ROOT

BLOCKED = ("django", "celery", "rest_framework", "portal", "workers", "distribution", "access", "audit", "hub",
           "verification", "torch", "transformers", "accelerate")  # fmt: skip

SCRIPT = """
import importlib, json, pkgutil, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be imported by tracing")
        return None

sys.meta_path.insert(0, Blocked())
import tracing
for module in pkgutil.walk_packages(tracing.__path__, "tracing."):
    importlib.import_module(module.name)
import tracing.leaks, gguf  # the GGUF reader is imported when a GGUF leak is read
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)))
"""


def test_every_tracing_module_imports_with_django_the_apps_and_torch_blocked(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", f"BLOCKED = {BLOCKED!r}\n{SCRIPT}"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
