"""Who obtained which model, at scale: a million download events in PostgreSQL, and the report for
one repo timed side by side with the implementation it replaced, in one run:

  baseline    the report before the SQL aggregation: every event through Python, one query per file
              for its size (kept here, and only here, as `baseline_who_obtained`)
  weightgate  `portal.reports.who_obtained`: grouped in SQL, only ranged files merged in Python

The events mix what downloads leave behind: whole files served by the portal (counted, or sent by
sendfile and so uncounted), S3 redirects, downloads cut and resumed by byte range (once or twice),
cuts never resumed, and header peeks. Both arms must give the same rows; the run stops if not.

Usage: python -m bench.audit --database-url postgres://postgres@127.0.0.1:5432/weightgate_bench_audit
The database is created (dropped first when it exists) and dropped at the end unless --keep.
Target: the busiest repo's report in under one second.
"""

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.verify import publish_results

ROOT = Path(__file__).resolve().parent.parent
USERS = 5000
# (name, storage, share of the downloads); the busiest comes first and is the one timed.
REPOS = [
    ("frontier-70b", "local", 0.30),
    ("frontier-8b", "s3", 0.20),
    ("coder-34b", "local", 0.15),
    ("vision-11b", "s3", 0.15),
    ("tiny-1b", "local", 0.10),
    ("embed-300m", "local", 0.10),
]
REVISION_SHARES = [0.7, 0.2, 0.1]  # newest first
SMALL_FILES = [
    ("config.json", 700),
    ("generation_config.json", 180),
    ("tokenizer.json", 9_000_000),
    ("tokenizer_config.json", 50_000),
    ("model.safetensors.index.json", 30_000),
]
SHARD_BYTES = 4_900_000_000
COLUMNS = [
    "user_id",
    "username",
    "repo_id",
    "revision_id",
    "commit",
    "file_id",
    "path",
    "channel",
    "range_requested",
    "status",
    "bytes_expected",
    "bytes_served",
    "user_agent",
    "created_at",
]


# --- the baseline: the report as it was before this change ---------------------------------------


def baseline_served_window(event, size: int) -> tuple[int, int] | None:
    start = 0
    asked = event.range_requested.strip()
    if asked.startswith("bytes="):
        first, _, last = asked[6:].partition("-")
        if first.isdigit():
            start = int(first)
        elif last.isdigit():
            start = max(0, size - int(last))
    amount = event.bytes_served if event.bytes_served is not None else event.bytes_expected
    if amount is None:
        amount = size - start
    return (start, min(size, start + amount)) if amount > 0 else None


def baseline_who_obtained(repo_id: str | None = None, username: str | None = None) -> list:
    from distribution.models import DownloadEvent, RevisionFile
    from portal.reports import SERVED, Obtained, covered

    events = DownloadEvent.objects.filter(status__in=SERVED, revision__isnull=False, file__isnull=False)
    if repo_id:
        events = events.filter(repo_id=repo_id)
    if username:
        events = events.filter(username=username)
    events = events.order_by("created_at").values(
        "username",
        "repo_id",
        "commit",
        "revision_id",
        "file_id",
        "range_requested",
        "bytes_served",
        "bytes_expected",
        "created_at",
    )
    sizes, counts, groups = {}, {}, {}
    for row in events.iterator(chunk_size=5000):
        key = (row["username"], row["repo_id"], row["commit"], row["revision_id"])
        group = groups.setdefault(key, {"first": row["created_at"], "last": row["created_at"], "files": {}, "bytes": 0})
        group["last"] = row["created_at"]
        if row["file_id"] not in sizes:
            sizes[row["file_id"]] = RevisionFile.objects.filter(pk=row["file_id"]).values_list("size", flat=True)[0]
        event = DownloadEvent(
            range_requested=row["range_requested"],
            bytes_served=row["bytes_served"],
            bytes_expected=row["bytes_expected"],
        )
        window = baseline_served_window(event, sizes[row["file_id"]])
        if window:
            group["files"].setdefault(row["file_id"], []).append(window)
            group["bytes"] += window[1] - window[0]
    report = []
    for (user, repo, commit, revision_id), group in groups.items():
        if revision_id not in counts:
            counts[revision_id] = RevisionFile.objects.filter(revision_id=revision_id).count()
        whole = sum(1 for file_id, windows in group["files"].items() if covered(windows, sizes[file_id]))
        report.append(
            Obtained(
                username=user or "(anonymous)",
                repo=repo,
                revision=commit,
                first_download=group["first"].isoformat(),
                last_download=group["last"].isoformat(),
                files_served=len(group["files"]),
                files_in_revision=counts[revision_id],
                bytes_served=group["bytes"],
                complete=whole == counts[revision_id],
            )
        )
    return report


# --- the database and its events --------------------------------------------------------------------


def recreate_database(url: str, *, drop_only: bool = False) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not drop_only:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def django_on_new_database(url: str) -> None:
    """Django set up on a new database at `url` (dropped first when it exists), migrated."""
    recreate_database(url)
    os.environ.update(
        DATABASE_URL=url,
        WEIGHTGATE_VAR_DIR=tempfile.mkdtemp(prefix="weightgate-bench-"),
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def catalogue(rng: random.Random) -> list[dict]:
    """Repos, their revisions and files, in the database; a list of revisions with what they hold."""
    from distribution.models import Repo, Revision, RevisionFile

    revisions = []
    for number, (name, storage, share) in enumerate(REPOS):
        repo = Repo.objects.create(org="bench", name=name)
        shards = 2 + number % 5
        for age in range(len(REVISION_SHARES)):
            revision = Revision.objects.create(
                repo=repo, commit=f"{number:02x}{age:02x}".ljust(40, "0"), state="released", storage_backend=storage
            )
            paths = [
                *SMALL_FILES,
                *((f"model-{i:05d}-of-{shards:05d}.safetensors", SHARD_BYTES) for i in range(shards)),
            ]
            files = RevisionFile.objects.bulk_create(
                RevisionFile(revision=revision, path=path, size=size + rng.randrange(1000), sha256="0" * 64)
                for path, size in paths
            )
            revisions.append(
                {
                    "revision": revision,
                    "repo_id": repo.repo_id,
                    "files": files,
                    "weight": share * REVISION_SHARES[age],
                    "s3": storage == "s3",
                }
            )
    return revisions


def session_events(rng: random.Random, revision: dict, user: tuple, moment: datetime):
    """The events one person's download of a revision leaves: (range, status, expected, served) per file."""
    files = revision["files"]
    if rng.random() < 0.15:  # a look at the config and the index only
        files = files[:1] + files[4:5]
    for stored in files:
        size, roll = stored.size, rng.random()
        cut = rng.randrange(1, size)
        if revision["s3"]:
            pieces = [("", 302, size, None)]
            if roll < 0.10:  # resumed through the portal, which redirects again with the range
                pieces.append((f"bytes={cut}-", 302, size, None))
        elif roll < 0.70:
            pieces = [("", 200, size, size)]
        elif roll < 0.78:  # sent by sendfile: the count is unknown
            pieces = [("", 200, size, None)]
        elif roll < 0.88:  # cut, then resumed (once, sometimes twice)
            pieces = [("", 200, size, cut)]
            if rng.random() < 0.3:
                second = rng.randrange(cut, size)
                pieces.append((f"bytes={cut}-", 206, size - cut, second - cut))
                cut = second
            pieces.append((f"bytes={cut}-", 206, size - cut, size - cut))
        elif roll < 0.93:  # cut and never resumed
            pieces = [("", 200, size, cut)]
        elif roll < 0.97:  # a header peek, then the whole file
            pieces = [("bytes=0-99999", 206, 100000, min(100000, size)), ("", 200, size, size)]
        else:  # a suffix range and a resume that leaves a gap
            pieces = [(f"bytes=-{size // 3}", 206, size // 3, size // 3), ("", 200, size, cut // 2)]
        for asked, status, expected, served in pieces:
            moment += timedelta(seconds=rng.randrange(1, 30))
            yield (
                *user,
                revision["repo_id"],
                revision["revision"].pk,
                revision["revision"].commit,
                stored.pk,
                stored.path,
                "s3-redirect" if revision["s3"] else "local",
                asked,
                status,
                expected,
                served,
                "huggingface_hub/0.30",
                moment,
            )


def fill(count: int, seed: int = 0) -> int:
    """About `count` download events (whole sessions), written by COPY; how many were written."""
    from django.db import connection

    from access.models import User

    rng = random.Random(seed)
    User.objects.bulk_create(
        User(username=f"user{i:05d}", email=f"user{i:05d}@example.org", password="!") for i in range(USERS)
    )
    users = list(User.objects.values_list("pk", "username"))
    revisions = catalogue(rng)
    weights = [revision["weight"] for revision in revisions]
    started = datetime(2025, 1, 1, tzinfo=UTC)
    spacing = 365 * 24 * 3600 / (count / 9)  # about nine events a session, spread over a year
    written = 0
    with connection.cursor() as cursor:
        columns = ", ".join(connection.ops.quote_name(column) for column in COLUMNS)
        with cursor.cursor.copy(f"COPY distribution_downloadevent ({columns}) FROM STDIN") as copy:
            while written < count:
                user = users[int(len(users) * rng.random() ** 2)]  # a few people download a lot
                revision = rng.choices(revisions, weights)[0]
                moment = started + timedelta(seconds=written / 9 * spacing)
                for row in session_events(rng, revision, user, moment):
                    copy.write_row(row)
                    written += 1
        cursor.execute("VACUUM ANALYZE distribution_downloadevent")
    return written


# --- timing ------------------------------------------------------------------------------------------


def timed(action, runs: int) -> tuple[list[float], list]:
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def same_rows(ours: list, theirs: list) -> bool:
    def key(row):
        return row["username"], row["repo"], row["revision"]

    return sorted(map(asdict, ours), key=key) == sorted(map(asdict, theirs), key=key)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit")
    parser.add_argument("--database-url", required=True, help="postgres://...; the database is created and dropped")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="runs of weightgate's report per measure")
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)

    django_on_new_database(args.database_url)
    from django.db import connection

    from portal.reports import DownloadQuery, who_obtained

    try:
        started = time.perf_counter()
        written = fill(args.events)
        fill_seconds = time.perf_counter() - started
        print(f"{written} events written and analysed in {fill_seconds:.1f} s", flush=True)
        busiest = f"bench/{REPOS[0][0]}"
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM distribution_downloadevent WHERE repo_id = %s", [busiest])
            in_repo = cursor.fetchone()[0]
            cursor.execute(
                "SELECT username FROM distribution_downloadevent GROUP BY username ORDER BY count(*) DESC LIMIT 1"
            )
            keen = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM distribution_downloadevent WHERE username = %s", [keen])
            keen_events = cursor.fetchone()[0]
            cursor.execute("SELECT version()")
            server = cursor.fetchone()[0].split(" on ")[0]
        measures = [
            (
                f"one repo ({busiest}, {in_repo} events)",
                lambda: who_obtained(DownloadQuery(repos=(busiest,))),
                lambda: baseline_who_obtained(repo_id=busiest),
            ),
            (
                f"one person ({keen}, {keen_events} events, every repo)",
                lambda: who_obtained(DownloadQuery(username=keen)),
                lambda: baseline_who_obtained(username=keen),
            ),
            (
                f"every repo ({written} events)",
                lambda: who_obtained(DownloadQuery()),
                lambda: baseline_who_obtained(),
            ),
        ]
        lines = []
        for name, ours, theirs in measures:
            print(f"timing {name} …", flush=True)
            our_seconds, our_rows = timed(ours, args.runs)
            their_seconds, their_rows = timed(theirs, args.baseline_runs)
            if not same_rows(our_rows, their_rows):
                sys.exit(f"{name}: weightgate and the baseline disagree; the timing would mean nothing")
            best, median = min(our_seconds), statistics.median(our_seconds)
            their_best, their_median = min(their_seconds), statistics.median(their_seconds)
            lines.append(
                f"| {name} | {len(our_rows)} | {best:.3f} / {median:.3f} | {their_best:.3f} / {their_median:.3f} "
                f"| {their_median / median:.1f}x |"
            )
    finally:
        connection.close()
        if not args.keep:
            recreate_database(args.database_url, drop_only=True)
    publish_results(
        "audit.md",
        [
            "# Who obtained which model: the report over a million download events",
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {server}, default "
            f"settings, on the same machine; {written} events ({USERS} people, {len(REPOS)} repos, "
            f"{len(REPOS) * len(REVISION_SHARES)} revisions) written by COPY in {fill_seconds:.0f} s, then "
            "VACUUM ANALYZE",
            f"weightgate: best / median of {args.runs} runs; baseline (every event through Python, a query per "
            f"file): of {args.baseline_runs}; both arms gave the same rows in every measure",
            "",
            "| report | rows | weightgate s (best / median) | baseline s (best / median) | baseline / weightgate |",
            "| --- | --- | --- | --- | --- |",
            *lines,
            "",
            "target: one repo in under 1 s",
        ],
    )


if __name__ == "__main__":
    main()
