"""`make run`'s migrate of a brand-new SQLite database (built beside its place, without waiting for the disk) makes
exactly the database `migrate` makes; an existing one is migrated where it is; one that cannot be made stops
`make run` with one clear line."""

import os
import sqlite3
import subprocess
import sys

from tests.support.commands import manage
from tests.support.servers import REPO_ROOT, free_port

# migrate_database twice: a new database, then the same one again (it exists now); the file's inode after each.
MIGRATE_TWICE = """
import os, django
django.setup()
from django.conf import settings
from portal.new_database import migrate_database
path = settings.DATABASES["default"]["NAME"]
for _ in range(2):
    migrate_database()
    print(os.stat(path).st_ino)
"""


def database_contents(path) -> dict:
    """The schema as SQLite stores it, the migrations recorded, and the rows post_migrate makes."""
    with sqlite3.connect(path) as database:
        return {
            "schema": sorted(database.execute("select type, name, tbl_name, sql from sqlite_master")),
            "migrations": sorted(database.execute("select app, name from django_migrations")),
            "content types": sorted(database.execute("select id, app_label, model from django_content_type")),
            "permissions": sorted(database.execute("select content_type_id, codename, name from auth_permission")),
            "journal": database.execute("pragma journal_mode").fetchone(),
        }


def environment(var_dir) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "DATABASE_URL", "CELERY_", "EMAIL_"))}
    return {**clean, "WEIGHTGATE_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings"}


def test_a_new_sqlite_database_is_the_one_migrate_makes_and_an_existing_one_stays_in_place(tmp_path):
    fast_var, plain_var = tmp_path / "fast", tmp_path / "plain"
    fast_var.mkdir()
    (fast_var / "weightgate.sqlite3.partial").write_bytes(b"left by a first start stopped half-way")
    # Side by side: each takes seconds.
    fast = subprocess.Popen(
        [sys.executable, "-c", MIGRATE_TWICE], cwd=REPO_ROOT, env=environment(fast_var), stdout=subprocess.PIPE
    )
    plain = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
        cwd=REPO_ROOT,
        env=environment(plain_var),
        capture_output=True,
        timeout=120,
    )
    inodes = fast.communicate(timeout=120)[0].split()
    assert fast.returncode == 0 and plain.returncode == 0, plain.stderr
    assert len(inodes) == 2 and inodes[0] == inodes[1]  # migrated again where it is, not rebuilt
    made = database_contents(fast_var / "weightgate.sqlite3")
    assert made == database_contents(plain_var / "weightgate.sqlite3")
    assert made["journal"] == ("delete",)  # an ordinary database: the connection's settings stayed behind
    assert len(made["schema"]) > 50 and len(made["migrations"]) > 40
    assert sorted(path.name for path in fast_var.glob("weightgate.sqlite3*")) == ["weightgate.sqlite3"]


def test_make_run_stops_with_one_clear_line_when_the_database_cannot_be_made(tmp_path):
    missing = tmp_path / "no-such-folder"
    result = manage(
        "run_demo",
        "--port",
        str(free_port()),
        env={"DATABASE_URL": f"sqlite:///{missing}/weightgate.sqlite3"},
        tmp_path=tmp_path / "var",
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == "CommandError: the database could not be migrated (the error is above)"
    assert "unable to open database file" in result.stderr
    assert not missing.exists()
    assert "Starting gunicorn" not in result.stderr + result.stdout
