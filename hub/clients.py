"""The address a request came from, behind the proxies the deployment trusts (TRUSTED_PROXIES).

Each proxy appends the address it received the request from to X-Forwarded-For, so only the entries
the trusted proxies added can be believed; whatever the client wrote itself comes before them.
"""

import ipaddress

from django.conf import settings


def parsed(address: str):
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        return None


def client_address(remote_addr: str, forwarded_for: str, trusted: int | tuple) -> str:
    """The client's address: `remote_addr` itself unless it is a trusted proxy, then the address that
    proxy saw (and so on, for as many proxies as are trusted)."""
    if not trusted or not forwarded_for:
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    if isinstance(trusted, int):
        # The last `trusted` entries were added by the proxies; fewer means one was bypassed.
        return hops[-trusted] if len(hops) >= trusted and parsed(hops[-trusted]) else remote_addr
    address = remote_addr
    for hop in reversed(hops):
        current = parsed(address)
        if current is None or not any(current in network for network in trusted):
            break  # `address` is not a proxy of ours: it is the client
        if parsed(hop) is None:
            break  # a garbled entry: the last proxy's own peer is all that can be believed
        address = hop
    return address


class ClientAddressMiddleware:
    """Puts the client's address in REMOTE_ADDR before anything reads it, so allauth's limits, the API's
    throttles, the download rate limits and every audit and download event see the same one."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.trusted = settings.TRUSTED_PROXIES

    def __call__(self, request):
        if self.trusted:
            meta = request.META
            meta["REMOTE_ADDR"] = client_address(
                meta.get("REMOTE_ADDR", ""), meta.get("HTTP_X_FORWARDED_FOR", ""), self.trusted
            )
        return self.get_response(request)
