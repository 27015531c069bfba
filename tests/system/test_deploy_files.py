"""The shipped deployment files say what the code reads and are what systemd accepts.

- deploy/systemd/: `systemd-analyze verify` on the units, moved to this machine's paths (it checks
  their syntax, every key, the units they name and that each command exists and is executable; it
  does not look up the user or read the environment file, which only the running units need).
- deploy/weightgate.env.example: names every variable the code reads, and nothing else; the README's
  Configuration section names each too; and the portal starts from it, read as the runbook reads it
  (`set -a; . weightgate.env`), with `check --deploy` asking only for the signing key that web hosts
  never hold.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.deployment import DEPLOY, SITE, UNITS, exec_start, here, unit
from tests.support.servers import REPO_ROOT

TEMPLATE = DEPLOY / "weightgate.env.example"
# What the code reads from the environment: the settings' typed readers, the generated secrets, the
# smoke pass's memory cap and gunicorn's config.
READ = re.compile(r"""(?:env_\w+|_generated_secret|os\.environ\.get|_whole)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE", "PYTEST_VERSION"}


def names_the_code_reads() -> set[str]:
    sources = [REPO_ROOT / "deploy" / "gunicorn.conf.py"]
    for package in ("portal", "access", "audit", "distribution", "hub", "verification", "workers"):
        sources += (REPO_ROOT / package).rglob("*.py")
    names = {name for source in sources for name in READ.findall(source.read_text())}
    return names - NOT_SETTINGS


def names_in_template() -> set[str]:
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", TEMPLATE.read_text(), re.MULTILINE))


def test_the_environment_template_names_every_variable_the_code_reads_and_no_other():
    read, listed = names_the_code_reads(), names_in_template()
    assert len(read) > 50
    missing = sorted(name for name in read - listed if f"{name}_FILE" not in listed)  # secrets: from files
    assert not missing, f"add these to deploy/weightgate.env.example (and the README's table): {missing}"
    unknown = sorted(name for name in listed - read if name.removesuffix("_FILE") not in read)
    assert not unknown, f"deploy/weightgate.env.example names variables nothing reads: {unknown}"


def test_the_readmes_configuration_table_names_every_variable_of_the_template():
    readme = (REPO_ROOT / "README.md").read_text()
    configuration = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = sorted(name for name in names_in_template() if name.removesuffix("_FILE") not in configuration)
    assert not missing, f"the README's Configuration table does not name {missing}"


def test_the_portal_starts_from_the_template_as_the_runbook_reads_it(tmp_path):
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    for secret in ("secret_key", "audit-chain-key", "smtp-password", "metrics-token"):
        (etc / secret).write_text(secrets.token_urlsafe(50))
    (etc / "trace-key").write_text(secrets.token_hex(32))
    environment = etc / "weightgate.env"
    environment.write_text(here(TEMPLATE.read_text(), var=var, etc=etc))
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    done = subprocess.run(
        ["sh", "-c", f'set -a; . "{environment}"; set +a; exec "{sys.executable}" manage.py check --deploy'],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    raised = sorted(set(re.findall(r"\(([\w.]+\.[EW]\d{3})\)", done.stdout + done.stderr)))
    # Left to be decided: HSTS for subdomains and preloading (the operator's call), and the signing key,
    # which GPU workers hold and web hosts never do.
    assert raised == ["security.W005", "security.W021", "weightgate.W006"], done.stdout + done.stderr


def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        servers.unavailable("systemd", "systemd-analyze is not installed (apt-get install systemd)")
    names = [path.name for path in UNITS]
    assert set(names) == {
        "weightgate.target",
        "weightgate-web.service",
        "weightgate-worker.service",
        "weightgate-gpu-worker.service",
        "weightgate-beat.service",
    }
    for path in UNITS:
        (tmp_path / path.name).write_text(here(path.read_text()))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify warns about an unknown key or a bad value and still exits 0: any word from it is a failure.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize(
    ("name", "queues", "concurrency"),
    [("weightgate-worker.service", "verify,default,mail", None), ("weightgate-gpu-worker.service", "gpu", "1")],
)
def test_each_worker_unit_consumes_its_queues(name, queues, concurrency):
    command = exec_start(name)
    assert command[:4] == [str(Path(sys.executable).parent / "celery"), "--app=workers", "worker", f"--queues={queues}"]
    assert (f"--concurrency={concurrency}" in command) if concurrency else not any("concurrency" in c for c in command)
    assert unit(name)["Service"]["EnvironmentFile"] == "/etc/weightgate/weightgate.env"
    assert unit(name)["Service"]["User"] == "weightgate"


def test_the_web_unit_binds_the_socket_the_nginx_site_names_in_a_directory_made_for_it():
    upstream = re.search(r"^\s*server (unix:\S+);", SITE.read_text(), re.MULTILINE)
    assert upstream, "the shipped site's upstream is no longer a Unix socket"
    service = unit("weightgate-web.service")["Service"]
    assert service["Environment"] == f"GUNICORN_BIND={upstream.group(1)}"
    assert upstream.group(1).startswith(f"unix:/run/{service['RuntimeDirectory']}/")
    # The file read after the unit's default must not point gunicorn elsewhere unasked.
    assert not re.search(r"^GUNICORN_BIND=", TEMPLATE.read_text(), re.MULTILINE)


def test_the_web_unit_runs_gunicorn_with_the_shipped_config_and_reloads_gracefully():
    service = unit("weightgate-web.service")["Service"]
    assert exec_start("weightgate-web.service") == [
        str(Path(sys.executable).parent / "gunicorn"),
        "--config",
        str(REPO_ROOT / "deploy" / "gunicorn.conf.py"),
    ]
    assert service["Type"] == "notify" and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"
