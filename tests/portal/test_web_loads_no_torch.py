"""A web process loads every view, middleware and app of the portal without torch, transformers or
accelerate: web machines need not install the worker's dependencies."""

import json
import os
import subprocess
import sys

from tests.support.servers import REPO_ROOT

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
