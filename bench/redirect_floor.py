"""The floor of any audited redirect design: the rate-limit count (one cache round trip, the portal's
own `count_request`) and the portal's presign, with nothing looked up and nothing written. Whatever
caching or batching the portal adopted, its redirects could not be faster than this."""

import os

from django.http import HttpResponseRedirect
from django.urls import re_path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def redirect(request, rest):
    from distribution.storage import get_storage
    from portal.rate_limits import count_request

    count_request("floor:bench", 60)
    return HttpResponseRedirect(
        get_storage("s3").presigned_get(f"floor/{rest}", filename="weights.bin", expires_in=600)
    )


urlpatterns = [re_path(r"^(?P<rest>.*)$", redirect)]

from django.conf import settings  # noqa: E402

settings.ROOT_URLCONF = __name__

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
