"""Requests that carry a NUL character are refused at the door: no URL the portal answers contains one,
and PostgreSQL can store or compare no text that does (the query would fail as a server error)."""

from hub.errors import hf_error


class RefuseNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # A query value holds a NUL only where the raw query string has %00: nothing is parsed here.
        if "\x00" in request.path_info or "%00" in request.META.get("QUERY_STRING", ""):
            return hf_error(400, "the request contains a NUL character, which no name, path or filter may hold")
        return self.get_response(request)
