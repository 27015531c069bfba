"""The shipped deployment (deploy/), read as the tests run it on this machine: the systemd units with
their paths moved from the runbook's layout (/srv/weightgate/...) to this checkout and its Python."""

import configparser
import contextlib
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import servers
from tests.support.servers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").iterdir())
# The runbook's layout (README, "Running in production") -> this machine.
APP, VENV_BIN = "/srv/weightgate/app", "/srv/weightgate/venv/bin/"
VAR, ENV_FILE = "/srv/weightgate/var", "/etc/weightgate"


def here(text: str, *, var: Path | None = None, etc: Path | None = None) -> str:
    """`text` with the runbook's paths replaced by this checkout, this Python's bin folder and, when
    given, a data folder and a folder for the environment file and secrets."""
    text = text.replace(VENV_BIN, f"{Path(sys.executable).parent}/").replace(APP, str(REPO_ROOT))
    if var is not None:
        text = text.replace(VAR, str(var))
    if etc is not None:
        text = text.replace(ENV_FILE, str(etc))
    return text


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def exec_start(name: str) -> list[str]:
    """The unit's ExecStart as a command line here: systemd's %H is this host's name, %% a percent sign."""
    line = here(unit(name)["Service"]["ExecStart"]).replace("%H", socket.gethostname()).replace("%%", "%")
    return shlex.split(line)


SITE = DEPLOY / "nginx" / "weightgate.conf"


def start_nginx(portal: str, storage_root: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    """Debian's nginx with the shipped site, moved to a loopback port, in front of the portal at `portal`
    (its Unix socket, as shipped: `unix:PATH`; or its base URL) and aliasing `storage_root`: (the process,
    nginx's base URL) once it answers /livez."""
    if not shutil.which("nginx"):
        servers.unavailable("nginx", "Debian's nginx is not installed (apt-get install nginx)")
    port = servers.free_port()
    site = SITE.read_text()
    for shipped, moved in (
        ("server unix:/run/weightgate/web.sock;", f"server {portal.removeprefix('http://')};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("alias /srv/weightgate/var/storage/;", f"alias {storage_root}/;"),
    ):
        assert shipped in site, f"the shipped site no longer has {shipped!r}"
        site = site.replace(shipped, moved)
    (workdir / "site.conf").write_text(site)
    (workdir / "nginx.conf").write_text(
        f"daemon off; user root; pid {workdir}/nginx.pid; error_log {workdir}/error.log;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;\n"
        f"  fastcgi_temp_path {workdir}/fcgi; uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;\n"
        f"  include {workdir}/site.conf; }}\n"
    )
    log = (workdir / "nginx.log").open("wb")
    process = subprocess.Popen(
        ["nginx", "-c", str(workdir / "nginx.conf")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    servers.wait_for_answer(process, f"{url}/livez", "nginx", lambda: (workdir / "error.log").read_text())
    return process, url


@contextlib.contextmanager
def behind_nginx(worker_env: dict[str, str], workdir: Path, *, workers: int = 1, **settings: str):
    """gunicorn (shipped config) with `settings` added to the worker environment, and nginx with the
    shipped site in front of it: yields (nginx's base URL, gunicorn's base URL); both stop after."""
    # As shipped, nginx reaches gunicorn by a Unix socket; under /tmp, as a socket's path has 107 bytes at most.
    upstream = Path(tempfile.mkdtemp(prefix="wg-web-")) / "web.sock"
    portal, portal_url = servers.start_gunicorn(
        {**worker_env, **settings}, workdir / "gunicorn.log", workers=workers, unix_socket=upstream
    )
    try:
        proxy, url = start_nginx(f"unix:{upstream}", Path(worker_env["LOCAL_STORAGE_ROOT"]), workdir)
    except BaseException:
        servers.stop_process(portal)
        raise
    try:
        yield url, portal_url
    finally:
        servers.stop_process(proxy)
        servers.stop_process(portal)
        shutil.rmtree(upstream.parent, ignore_errors=True)
