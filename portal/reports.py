"""Who obtained which model: per person and revision, first and last download, files and bytes
served, and whether every file arrived whole (in one go or pieced together from resumed ranges).

The database does the work: it groups the events by person, revision and file, and settles every
file whose requests all asked for the whole file (their windows all start at 0, so the longest one
decides). For a file someone fetched in byte ranges, Python gets a summary of the whole-file
requests and the ranged requests themselves, and merges their windows with `served_window` and
`covered`, which define what was served.
"""

import csv
import io
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta

from django import forms
from django.db import connection
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from distribution.models import DownloadEvent, Revision

SERVED = (200, 206, 302)
# Every event whose window may not start at 0 contains this; the rest are whole-file requests.
RANGE_MARK = "bytes="
PERSON = ("repo_id", "username", "revision_id")


@dataclass
class Obtained:
    username: str
    repo: str
    revision: str
    first_download: str
    last_download: str
    files_served: int
    files_in_revision: int
    bytes_served: int
    complete: bool


FIELDS = [field.name for field in fields(Obtained)]


@dataclass(frozen=True)
class DownloadQuery:
    """Which download events a report covers; a field left empty does not filter."""

    repos: tuple[str, ...] | None = None  # repo ids (ORG/NAME); None: every repo
    revision: str = ""  # a commit, or its first characters
    username: str = ""  # as recorded, so the history of a deleted account stays reachable
    user_id: int | None = None  # one account's own events, whatever its name was then
    since: datetime | None = None  # from this moment on
    until: datetime | None = None  # before this moment


class DownloadFilters(forms.Form):
    """The filters as people write them: on the page, in the API's query string, on the command line."""

    repo = forms.CharField(required=False, max_length=200, help_text="ORG/NAME")
    revision = forms.RegexField(
        r"^[0-9a-fA-F]{7,40}$",
        required=False,
        error_messages={"invalid": "give the commit, or at least its first 7 characters"},
    )
    user = forms.CharField(required=False, max_length=150, help_text="a username, as recorded with the downloads")
    since = forms.DateTimeField(required=False, help_text="from this day (YYYY-MM-DD) or moment (ISO 8601) on")
    until = forms.DateTimeField(required=False, help_text="up to this day, included, or before this moment")

    def clean_until(self):
        until = self.cleaned_data["until"]
        # A bare day, as the page's date field sends it, includes that day.
        if until is not None and len(str(self.data.get("until", "")).strip()) == len("YYYY-MM-DD"):
            until += timedelta(days=1)
        return until

    def query(self, repos: tuple[str, ...] | None) -> DownloadQuery:
        """The query for valid filters, over `repos` (which the caller narrows to what its user may see)."""
        data = self.cleaned_data
        return DownloadQuery(
            repos=repos,
            revision=data["revision"],
            username=data["user"],
            since=data["since"],
            until=data["until"],
        )


def served_window(range_requested: str, bytes_served, bytes_expected, size: int) -> tuple[int, int] | None:
    """The [start, end) of the file one event delivered; sent by others (S3, sendfile): as authorized."""
    start = 0
    asked = range_requested.strip()
    if asked.startswith(RANGE_MARK):
        first, _, last = asked[len(RANGE_MARK) :].partition("-")
        if first.isdigit():
            start = int(first)
        elif last.isdigit():
            start = max(0, size - int(last))
    amount = bytes_served if bytes_served is not None else bytes_expected
    if amount is None:
        amount = size - start
    return (start, min(size, start + amount)) if amount > 0 else None


def covered(windows: list[tuple[int, int]], size: int) -> bool:
    reach = 0
    for start, end in sorted(windows):
        if start > reach:
            return False
        reach = max(reach, end)
    return reach >= size


def served_events(query: DownloadQuery):
    """The requests that served bytes or redirected to them, of a known revision and file."""
    events = DownloadEvent.objects.filter(status__in=SERVED, revision__isnull=False, file__isnull=False).order_by()
    if query.repos is not None:
        events = events.filter(repo_id__in=query.repos)
    if query.revision:
        commit = query.revision.lower()
        lookup = {"commit": commit} if len(commit) == 40 else {"commit__startswith": commit}
        # By the revision's id, which the events are indexed by, rather than by the commit copied into each.
        events = events.filter(revision__in=Revision.objects.filter(**lookup))
    if query.username:
        events = events.filter(username=query.username)
    if query.user_id is not None:
        events = events.filter(user_id=query.user_id)
    if query.since is not None:
        events = events.filter(created_at__gte=query.since)
    if query.until is not None:
        events = events.filter(created_at__lt=query.until)
    return events


# A request's amount: what the portal counted, or what it authorized when others sent the bytes.
AMOUNT = Coalesce("bytes_served", "bytes_expected")
RANGED = Case(When(range_requested__contains=RANGE_MARK, then=Value(1)), default=Value(0), output_field=IntegerField())

# One row per person and revision (kind 0), then one per file that SQL leaves to Python (kind 1):
# a file with a ranged request, or with a request counted for more than the file. The grouping
# follows the order of the index `download_audit_by_repo`, so PostgreSQL reads it without sorting.
# Whole-file requests are windows from 0, so the longest decides; no count means all of it.
GROUPED_SQL = """
WITH served AS ({events}),
files AS (
    SELECT repo_id, username, revision_id, file_id, MIN(created_at) AS first_at, MAX(created_at) AS last_at,
           MAX(ranged) AS ranged,
           CAST(SUM(CASE WHEN ranged = 0 AND amount > 0 THEN amount ELSE 0 END) AS BIGINT) AS total,
           MAX(CASE WHEN ranged = 0 THEN amount END) AS top,
           SUM(CASE WHEN ranged = 0 AND amount IS NULL THEN 1 ELSE 0 END) AS uncounted
    FROM served
    GROUP BY repo_id, username, revision_id, file_id
),
sized AS (
    SELECT files.*, stored.size,
           CASE WHEN ranged = 0 AND (top IS NULL OR top <= stored.size) THEN 1 ELSE 0 END AS settled,
           CASE WHEN top > 0 OR (uncounted > 0 AND stored.size > 0) THEN 1 ELSE 0 END AS served,
           CASE WHEN (uncounted > 0 AND stored.size > 0) OR (top > 0 AND top >= stored.size) THEN 1 ELSE 0 END AS whole
    FROM files JOIN distribution_revisionfile stored ON stored.id = files.file_id
),
people AS (
    SELECT repo_id, username, revision_id, MIN(first_at) AS first_at, MAX(last_at) AS last_at,
           CAST(SUM(CASE WHEN settled = 1 THEN total + uncounted * size ELSE 0 END) AS BIGINT) AS bytes,
           SUM(settled * served) AS files_served, SUM(settled * whole) AS whole
    FROM sized
    GROUP BY repo_id, username, revision_id
)
SELECT 0 AS kind, people.repo_id, username, people.revision_id, revision.{commit}, first_at, last_at, bytes,
       files_served, whole, counts.files, NULL AS file_id, NULL AS size, NULL AS total, NULL AS top, NULL AS uncounted
FROM people
JOIN distribution_revision revision ON revision.id = people.revision_id
JOIN (SELECT revision_id, COUNT(*) AS files FROM distribution_revisionfile GROUP BY revision_id) counts
    ON counts.revision_id = people.revision_id
UNION ALL
SELECT 1, repo_id, username, revision_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, file_id, size, total, top, uncounted
FROM sized WHERE settled = 0
ORDER BY 1, 6, 3, 2, 4
"""


@dataclass
class Pieced:
    """A file SQL could not settle: its windows are merged here."""

    size: int
    bytes: int
    windows: list[tuple[int, int]]


def grouped(query: DownloadQuery) -> tuple[list[tuple], dict[tuple, Pieced]]:
    """Rows per person and revision, and the files left to Python keyed by (repo, username, revision, file)."""
    events = served_events(query).values(*PERSON, "file_id", "created_at").annotate(amount=AMOUNT, ranged=RANGED)
    events_sql, params = events.query.sql_with_params()
    sql = GROUPED_SQL.format(events=events_sql, commit=connection.ops.quote_name("commit"))
    people, pieced = [], {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            if row[0] == 0:
                people.append(row[1:11])
                continue
            file_id, size, total, top, uncounted = row[11:]
            # The whole-file requests' windows all start at 0: the longest of them stands for them all.
            ends = [min(size, top)] if top is not None and top > 0 else []
            ends += [size] if uncounted and size > 0 else []
            windows = [(0, max(ends))] if ends else []
            pieced[(*row[1:4], file_id)] = Pieced(size, total + uncounted * size, windows)
    return people, pieced


def add_ranged_requests(query: DownloadQuery, pieced: dict[tuple, Pieced]) -> None:
    """The requests of the files SQL left to Python: ranged ones, and whole ones counted for more than the file."""
    events = (
        served_events(query)
        .annotate(size=F("file__size"), amount=AMOUNT, ranged=RANGED)
        .filter(Q(ranged=1) | Q(amount__gt=F("size")))
        .values_list(*PERSON, "file_id", "ranged", "range_requested", "bytes_served", "bytes_expected", "amount")
    )
    with connection.cursor() as cursor:
        cursor.execute(*events.query.sql_with_params())
        for *person, file_id, ranged, range_requested, bytes_served, bytes_expected, amount in cursor:
            piece = pieced.get((*person, file_id))
            if piece is None:
                continue  # written after the grouping query read the events: the next report counts it
            if not ranged:
                piece.bytes -= amount - piece.size  # its window stops at the end of the file
                continue
            window = served_window(range_requested, bytes_served, bytes_expected, piece.size)
            if window:
                piece.windows.append(window)
                piece.bytes += window[1] - window[0]


def moment(value) -> datetime:
    # PostgreSQL hands an aggregate back as an aware datetime, SQLite as the text it stores in UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def who_obtained(query: DownloadQuery) -> list[Obtained]:
    """One row per person and revision, ordered by first download."""
    people, pieced = grouped(query)
    add_ranged_requests(query, pieced)
    by_person = defaultdict(list)
    for (*person, _), piece in pieced.items():
        by_person[tuple(person)].append(piece)
    report = []
    for repo, username, revision_id, commit, first, last, total_bytes, files_served, whole, files_in_revision in people:
        total_bytes, files_served, whole = int(total_bytes), int(files_served), int(whole)
        for piece in by_person[repo, username, revision_id]:
            total_bytes += piece.bytes
            files_served += bool(piece.windows)
            whole += bool(piece.windows) and covered(piece.windows, piece.size)
        report.append(
            Obtained(
                username=username or "(anonymous)",
                repo=repo,
                revision=commit,
                first_download=moment(first).isoformat(),
                last_download=moment(last).isoformat(),
                files_served=files_served,
                files_in_revision=int(files_in_revision),
                bytes_served=total_bytes,
                complete=whole == files_in_revision,
            )
        )
    return report


def as_rows(report: list[Obtained]) -> list[dict]:
    return [asdict(entry) for entry in report]


# A cell starting with one of these is a formula to a spreadsheet: a username like `=HYPERLINK(...)`
# would run when staff open the export.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({name: spreadsheet_safe(value) for name, value in row.items()} for row in rows)
    return out.getvalue()


def as_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)
