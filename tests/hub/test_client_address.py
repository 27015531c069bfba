"""Which address a request came from, given the proxies a deployment trusts (TRUSTED_PROXIES)."""

import ipaddress

import pytest
from django.core.exceptions import ImproperlyConfigured

from hub.clients import client_address
from portal.env import env_proxies

NGINX = "127.0.0.1"
RANGES = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "client"),
    [
        ("203.0.113.5", "198.51.100.1", 0, "203.0.113.5"),  # nothing trusted: the header is ignored
        (NGINX, "203.0.113.5", 1, "203.0.113.5"),  # one nginx: the entry it added
        (NGINX, "6.6.6.6, 203.0.113.5", 1, "203.0.113.5"),  # what the client wrote comes first
        (NGINX, "6.6.6.6, 203.0.113.5, 10.1.1.1", 2, "203.0.113.5"),  # a balancer, then nginx
        (NGINX, "", 1, NGINX),  # no header: nothing to believe
        (NGINX, "not-an-address", 1, NGINX),  # garbage: never believed
        (NGINX, "6.6.6.6, 203.0.113.5, 10.1.1.1", RANGES, "203.0.113.5"),  # by ranges: past every proxy
        ("203.0.113.9", "6.6.6.6", RANGES, "203.0.113.9"),  # a peer outside the ranges is the client
        (NGINX, "6.6.6.6, junk, 10.1.1.1", RANGES, "10.1.1.1"),  # garbled: the last proxy's peer
    ],
)
def test_only_what_trusted_proxies_added_is_believed(remote, forwarded, trusted, client):
    assert client_address(remote, forwarded, trusted) == client


def test_the_setting_takes_a_count_or_ranges_and_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "1")
    assert env_proxies("TRUSTED_PROXIES") == 1
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert env_proxies("TRUSTED_PROXIES") == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1"))
    monkeypatch.setenv("TRUSTED_PROXIES", "nginx")
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES must be a number of proxies"):
        env_proxies("TRUSTED_PROXIES")
