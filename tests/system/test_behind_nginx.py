"""Behind Debian's nginx with the shipped site (deploy/nginx/weightgate.conf), in front of gunicorn with
the shipped config (deploy/gunicorn.conf.py): the portal sees each client's own address, whatever
X-Forwarded-For the client sends. Two clients (curl bound to 127.0.0.2 and 127.0.0.3) are limited and
recorded apart; a forged header escapes no limit."""

import re
import subprocess

import pytest

from access.models import AccessRequest
from access.services import grant_access
from audit.models import AuditEvent
from distribution.models import DownloadEvent
from tests.support.deployment import behind_nginx
from tests.support.downloads import early_in_a_window
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
LIMITS = {
    "TRUSTED_PROXIES": "1",
    "DOWNLOAD_RATE_LIMIT": "3/60",
    "RATE_LIMIT_LOGIN_FAILED": "3/m/ip",
    "RATE_LIMIT_ACCESS_REQUEST_IP": "2/hour",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
}


@pytest.fixture
def front(worker_env, tmp_path):
    """gunicorn (shipped config) with the limits above, and nginx with the shipped site in front of it:
    nginx's URL."""
    with behind_nginx(worker_env, tmp_path, **LIMITS) as (url, _):
        yield url


def curl(source: str, url: str, *options: str) -> tuple[int, str]:
    """(status, body) of a request sent from `source`, one of this machine's loopback addresses."""
    done = subprocess.run(
        ["curl", "-sS", "--interface", source, "-o", "-", "-w", "\n%{http_code}", *options, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_a_forged_forwarded_for_escapes_no_limit_and_two_clients_are_limited_apart(front, tmp_path):
    published_tiny_llama(tmp_path / "release", "acme/tiny", verify_here=True)
    info = f"{front}/api/models/acme/tiny/revision/main"
    early_in_a_window(60)  # four requests across a window's end would be counted apart
    forged = [curl("127.0.0.2", info, "-H", f"X-Forwarded-For: 198.51.100.{n}")[0] for n in range(4)]
    assert forged == [200, 200, 200, 429]  # one client, however it names itself
    assert curl("127.0.0.3", info)[0] == 200  # another client, its own count


def test_downloads_and_audit_events_record_each_clients_own_address(front, tmp_path):
    revision, _ = published_tiny_llama(tmp_path / "release", "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    for source in ("127.0.0.2", "127.0.0.3"):
        status, _ = curl(
            source,
            f"{front}/acme/tiny/resolve/main/config.json",
            "-L",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "X-Forwarded-For: 203.0.113.66",
        )
        assert status == 200
    assert sorted(DownloadEvent.objects.values_list("ip", flat=True)) == ["127.0.0.2", "127.0.0.3"]
    issued = AuditEvent.objects.filter(tag="distribution:redirect-ticket:issued")
    assert sorted(issued.values_list("ip", flat=True)) == ["127.0.0.2", "127.0.0.3"]


LOCKED_OUT = "Too many failed login attempts"


def sign_in(source: str, front: str, jar, password: str) -> str:
    """The page a wrong password leads to, sent from `source` with a forged X-Forwarded-For."""
    _, page = curl(source, f"{front}/accounts/login/", "-c", str(jar), "-b", str(jar))
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    _, answer = curl(
        source,
        f"{front}/accounts/login/",
        "-c",
        str(jar),
        "-b",
        str(jar),
        "-H",
        "X-Forwarded-For: 192.0.2.1",
        "--data-urlencode",
        f"csrfmiddlewaretoken={csrf}",
        "--data-urlencode",
        "login=mallory",
        "--data-urlencode",
        f"password={password}",
    )
    return answer


def test_failed_sign_ins_lock_out_the_address_that_made_them_and_no_other(front, tmp_path):
    person("mallory")
    guesses = [LOCKED_OUT in sign_in("127.0.0.2", front, tmp_path / "jar-2", f"guess-{n}") for n in range(4)]
    assert guesses == [False, False, False, True]
    assert LOCKED_OUT not in sign_in("127.0.0.3", front, tmp_path / "jar-3", "guess-x")  # another address
    failed = AuditEvent.objects.filter(tag="access:login:failed")
    assert set(failed.values_list("ip", flat=True)) == {"127.0.0.2", "127.0.0.3"}


def test_access_requests_are_throttled_by_address_whatever_header_is_forged(front, tmp_path):
    published_tiny_llama(tmp_path / "release", "acme/tiny", verify_here=True)
    body = '{"repo": "acme/tiny", "accept_license": true}'
    statuses = [
        curl(
            "127.0.0.2",
            f"{front}/api/v1/access-requests/",
            "-H",
            f"Authorization: Bearer {token_for(person(f'asker{n}'))}",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"X-Forwarded-For: 198.51.100.{n}",
            "--data",
            body,
        )[0]
        for n in range(3)
    ]
    assert statuses == [201, 201, 429]
    assert AccessRequest.objects.count() == 2
