"""The baseline for the redirect benchmark: a bare Django view that answers 302, nothing checked or
recorded, under the same settings and WSGI server as the portal."""

import os

from django.http import HttpResponseRedirect
from django.urls import re_path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def redirect(request, rest):
    return HttpResponseRedirect("http://127.0.0.1:9/elsewhere")


urlpatterns = [re_path(r"^(?P<rest>.*)$", redirect)]

from django.conf import settings  # noqa: E402

settings.ROOT_URLCONF = __name__

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
