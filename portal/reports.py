"""Who obtained which model: per person and revision, first and last download, files and bytes
served, and whether every file arrived whole (in one go or pieced together from resumed ranges)."""

from dataclasses import asdict, dataclass

from distribution.models import DownloadEvent, RevisionFile

SERVED = (200, 206, 302)


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


def served_window(event: DownloadEvent, size: int) -> tuple[int, int] | None:
    """The [start, end) of the file this event delivered; sent by others (S3, sendfile): as authorized."""
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


def covered(windows: list[tuple[int, int]], size: int) -> bool:
    reach = 0
    for start, end in sorted(windows):
        if start > reach:
            return False
        reach = max(reach, end)
    return reach >= size


def who_obtained(repo_id: str | None = None, username: str | None = None) -> list[Obtained]:
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
        window = served_window(event, sizes[row["file_id"]])
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


def as_rows(report: list[Obtained]) -> list[dict]:
    return [asdict(entry) for entry in report]
