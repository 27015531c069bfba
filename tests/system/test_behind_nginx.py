"""Behind Debian's nginx with the shipped site (deploy/nginx/weightgate.conf): the portal sees each
client's own address, whatever X-Forwarded-For the client sends. Two clients (curl bound to
127.0.0.2 and 127.0.0.3) are limited and recorded apart; a forged header escapes no limit."""

import re
import shutil
import subprocess
import sys

import pytest

from access.models import AccessRequest
from access.services import grant_access
from audit.models import AuditEvent
from distribution.models import DownloadEvent
from tests.support import servers
from tests.support.flows import http, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
SITE = servers.REPO_ROOT / "deploy" / "nginx" / "weightgate.conf"
LIMITS = {
    "TRUSTED_PROXIES": "1",
    "DOWNLOAD_RATE_LIMIT": "3/60",
    "RATE_LIMIT_LOGIN_FAILED": "3/m/ip",
    "RATE_LIMIT_ACCESS_REQUEST_IP": "2/hour",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
}


def start(command, env, log, answers):
    process = subprocess.Popen(
        command, cwd=servers.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    servers.wait_until(lambda: process.poll() is None and answers(), timeout=60, what=command[0])
    return process


@pytest.fixture
def front(worker_env, tmp_path):
    """gunicorn with the limits above, and nginx with the shipped site in front of it: nginx's URL."""
    if not shutil.which("nginx"):
        servers.unavailable("nginx", "Debian's nginx is not installed (apt-get install nginx)")
    portal_port, nginx_port = servers.free_ports(2)
    site = SITE.read_text()
    for shipped, here in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{portal_port};"),
        ("listen 80;", f"listen 127.0.0.1:{nginx_port};"),
        ("alias /srv/weightgate/var/storage/;", f"alias {worker_env['LOCAL_STORAGE_ROOT']}/;"),
    ):
        assert shipped in site, f"the shipped site no longer has {shipped!r}"
        site = site.replace(shipped, here)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; user root; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;\n"
        f"  include {tmp_path}/site.conf; }}\n"
    )
    url = f"http://127.0.0.1:{nginx_port}"
    env = {**worker_env, **LIMITS}
    with (tmp_path / "servers.log").open("wb") as log:
        portal = start(
            [sys.executable, "-m", "gunicorn", "portal.wsgi:application", f"--bind=127.0.0.1:{portal_port}"],
            env,
            log,
            lambda: reachable(f"http://127.0.0.1:{portal_port}/health"),
        )
        proxy = start(["nginx", "-c", str(tmp_path / "nginx.conf")], env, log, lambda: reachable(f"{url}/health"))
    yield url
    servers.stop_process(proxy)
    servers.stop_process(portal)


def reachable(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


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
