"""`make run`'s migrate: a brand-new SQLite database is built beside its place, without waiting for the disk.

`migrate` commits once per migration (some sixty on a first start) and SQLite waits for the disk at each
commit: on a new machine's first start those waits were a quarter of the migrate. A database that does not
exist yet is migrated into a file beside its place with those waits off, written to the disk once, then moved
into place. The same migrations run, so the schema is the one `migrate` makes; a start stopped half-way leaves
no database rather than a damaged one. Any other database (one that exists, PostgreSQL) is migrated as is.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from django.core.management import call_command
from django.db import connection

# Settings of the connection, not of the file: the database moved into place is an ordinary one.
WITHOUT_DISK_WAITS = "PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF"


def new_sqlite_file() -> Path | None:
    """The database's file, when the database is SQLite and that file does not exist yet."""
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    path = Path(connection.settings_dict["NAME"])
    return None if path.exists() else path


def migrate_database() -> None:
    """Bring the database up to the latest migrations, building a new SQLite one beside its place."""
    path = new_sqlite_file()
    if path is None:
        call_command("migrate", interactive=False, verbosity=0)
        return
    partial = path.with_name(f"{path.name}.partial")
    partial.unlink(missing_ok=True)  # left by a first start stopped half-way
    with connected_to(partial, init_command=WITHOUT_DISK_WAITS):
        call_command("migrate", interactive=False, verbosity=0)
    write_to_disk(partial)
    os.replace(partial, path)
    write_to_disk(path.parent)  # the move itself


@contextmanager
def connected_to(path: Path, *, init_command: str):
    """The default connection opened on another SQLite file, with commands run as it opens, for a while."""
    saved = {name: connection.settings_dict[name] for name in ("NAME", "OPTIONS")}
    connection.close()
    connection.settings_dict.update(NAME=str(path), OPTIONS={**saved["OPTIONS"], "init_command": init_command})
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)


def write_to_disk(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
