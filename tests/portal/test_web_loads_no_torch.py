"""A web process loads every view, middleware and app of the portal without torch, transformers or
accelerate: web machines need not install the worker's dependencies (`pip install .`, without the
`worker` extra). One test looks at what the web process imported; the other takes the packages away
and runs the web tier: `manage.py check`, gunicorn with the shipped config, /readyz and a download."""

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.request

import pytest

from tests.support import servers
from tests.support.flows import SHARD, http
from tests.support.servers import REPO_ROOT

WORKER_ONLY = ("torch", "transformers", "accelerate")  # the `worker` extra in pyproject.toml
# Loaded at start-up by every Python process given its folder on PYTHONPATH (and so by gunicorn's
# workers, forked from it): the worker's packages cannot be found, as on a machine that lacks them.
# Every attempt is written down, so one that is caught and passed over is seen too.
NOT_INSTALLED = f"""
import os, sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {WORKER_ONLY!r}:
            with open(os.environ["WEIGHTGATE_IMPORT_ATTEMPTS"], "a") as attempts:
                attempts.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed on a web machine)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""

SCRIPT = """
import json, sys
import django
django.setup()
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.module_loading import import_string
import portal.wsgi

def views(resolver):
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from views(pattern)
        elif isinstance(pattern, URLPattern):
            yield pattern.callback

loaded = {f"{view.__module__}.{getattr(view, '__name__', type(view).__name__)}" for view in views(get_resolver())}
named = settings.MIDDLEWARE + settings.AUTHENTICATION_BACKENDS
for path in named + settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]:
    import_string(path)
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers", "accelerate"))
print(json.dumps({"views": sorted(loaded), "heavy": heavy}))
"""


def test_importing_every_view_of_every_url_loads_no_torch():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(found["views"]) > 30  # every page and API, admin and accounts included
    assert found["heavy"] == []


@pytest.fixture
def web_machine(tmp_path, worker_env):
    """The environment of a process for which torch, transformers and accelerate are not installed."""
    site = tmp_path / "web-machine"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NOT_INSTALLED)
    attempts = tmp_path / "attempts.txt"
    attempts.touch()
    env = {**worker_env, "PYTHONPATH": f"{site}{os.pathsep}{REPO_ROOT}", "WEIGHTGATE_IMPORT_ATTEMPTS": str(attempts)}
    # The stand-in works: a plain import fails as it would on such a machine.
    tried = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True, timeout=60)
    assert tried.returncode == 1 and "not installed on a web machine" in tried.stderr, tried.stderr
    attempts.write_text("")
    return env, attempts


@pytest.mark.django_db(transaction=True)
def test_the_web_tier_checks_serves_a_download_and_is_ready_without_the_worker_packages(web_machine, release, tmp_path):
    env, attempts = web_machine
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    revision, token = release
    server, base = servers.start_gunicorn(env, tmp_path / "gunicorn.log", workers=2)
    try:
        status, _, body = http("GET", f"{base}/readyz")
        assert status == 200, body
        status, headers, _ = http("GET", f"{base}/acme/tiny/resolve/{revision.commit}/{SHARD}", token=token)
        assert status == 302
        with urllib.request.urlopen(f"{base}{headers['Location']}", timeout=60) as answer:
            served = answer.read()
    finally:
        servers.stop_process(server)
    assert hashlib.sha256(served).hexdigest() == revision.files.get(path=SHARD).sha256
    assert attempts.read_text() == "", f"the web tier tried to import: {attempts.read_text()}"


def test_the_worker_extra_holds_what_the_web_tier_goes_without_and_the_contract_forbids():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    name = re.compile(r"[A-Za-z0-9_.-]+")
    worker = {name.match(spec).group() for spec in project["project"]["optional-dependencies"]["worker"]}
    web = {name.match(spec).group() for spec in project["project"]["dependencies"]}
    assert worker == set(WORKER_ONLY) and not worker & web
    (contract,) = (c for c in project["tool"]["importlinter"]["contracts"] if c["id"] == "web-without-torch")
    assert set(contract["forbidden_modules"]) == set(WORKER_ONLY)
    assert "portal.probes" in contract["source_modules"]  # named in MIDDLEWARE, so loaded by every web process
