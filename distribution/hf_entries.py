"""How a revision's files, folders, commits and refs are written in the Hub's JSON, for the listings
(tree, paths-info, commits, refs, model info). Who may see them is decided before these are called."""

from access.gate import needs_grant
from distribution.models import Repo, Revision, RevisionFile

NO_TREE_OID = "0" * 40  # folders have no git tree here: each revision is a whole snapshot


def hub_time(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def as_received(stored: RevisionFile, personal: dict) -> tuple[str, int]:
    """(sha256, size) of a file as this person receives it (`personal`: copies.digests_for)."""
    own = personal.get(stored.path)
    # before verification, the digest the upload was checked against (a revision its publisher describes)
    return (own["sha256"], own["size"]) if own else (stored.sha256 or stored.upload_sha256, stored.size)


def commit_title(revision: Revision) -> str:
    name = revision.tag or revision.commit[:12]
    if revision.state == Revision.State.RELEASED:
        return f"Release {name}"
    return f"Revision {name} ({revision.get_state_display().lower()}, not released)"


def commit_entry(revision: Revision) -> dict:
    """A revision as the Hub writes a commit: every revision is one commit, by the repo's organisation
    (who published it is for the audit, not for every recipient)."""
    return {
        "id": revision.commit,
        "title": commit_title(revision),
        "message": "",
        "authors": [{"user": revision.repo.org, "avatar": ""}],
        "date": hub_time(revision.released_at or revision.created_at),
    }


def last_commit(revision: Revision) -> dict:
    entry = commit_entry(revision)
    return {"id": entry["id"], "title": entry["title"], "date": entry["date"]}


def last_changes(history: list[Revision]) -> dict[str, Revision]:
    """path -> the revision that last changed it, for the newest of `history` (newest first): the oldest
    revision in the unbroken run back from it where the file had the same content."""
    if not history:
        return {}
    contents: dict[int, dict[str, str]] = {revision.pk: {} for revision in history}
    files = RevisionFile.objects.filter(revision__in=contents).values_list("revision_id", "path", "sha256")
    for revision_id, path, sha256 in files:
        contents[revision_id][path] = sha256
    changed = {}
    for path, sha256 in contents[history[0].pk].items():
        changed[path] = history[0]
        for older in history[1:]:
            if contents[older.pk].get(path) != sha256:
                break
            changed[path] = older
    return changed


def file_entry(stored: RevisionFile, personal: dict, changed: Revision | None = None) -> dict:
    """A file in the tree: every file is served as LFS, so `lfs.oid` (the sha256, the caller's own for a
    traceable revision) is what `hf cache verify` and the client's caches check the bytes against."""
    sha256, size = as_received(stored, personal)
    entry = {
        "type": "file",
        "oid": sha256[:40],
        "size": size,
        "path": stored.path,
        "lfs": {"oid": sha256, "size": size, "pointerSize": 0},
    }
    if changed is not None:
        entry["lastCommit"] = last_commit(changed)
    return entry


def folder_entry(path: str, changed: Revision | None = None) -> dict:
    entry = {"type": "directory", "oid": NO_TREE_OID, "size": 0, "path": path}
    if changed is not None:
        entry["lastCommit"] = last_commit(changed)
    return entry


def newest(revisions) -> Revision | None:
    """The newest of the revisions a folder's files last changed in."""
    return max(revisions, key=lambda revision: (revision.released_at or revision.created_at, revision.pk), default=None)


def tree_entries(files: list[RevisionFile], prefix: str, *, recursive: bool, personal: dict, changes: dict | None):
    """The entries under `prefix` (folders before the files they hold, as the Hub lists them); with
    `changes` (from last_changes) each carries its lastCommit."""
    entries, folders = [], set()
    for stored in files:
        if prefix and not stored.path.startswith(prefix + "/"):
            continue
        below = stored.path[len(prefix) + 1 :] if prefix else stored.path
        parts = below.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if folder not in folders and (recursive or depth == 1):
                folders.add(folder)
                entries.append(folder)
        if len(parts) == 1 or recursive:
            entries.append(stored)
    return [
        folder_from(entry, files, changes)
        if isinstance(entry, str)
        else file_entry(entry, personal, at(changes, entry))
        for entry in entries
    ]


def at(changes: dict | None, stored: RevisionFile) -> Revision | None:
    return changes.get(stored.path) if changes is not None else None


def folder_from(path: str, files: list[RevisionFile], changes: dict | None) -> dict:
    if changes is None:
        return folder_entry(path)
    return folder_entry(path, newest(changes[f.path] for f in files if f.path.startswith(path + "/")))


def path_entries(files: list[RevisionFile], paths: list[str], *, personal: dict, changes: dict | None) -> list[dict]:
    """paths-info: each asked path that is a file or a folder of the revision, in the order asked; the
    others are left out, as the Hub leaves them out."""
    by_path = {stored.path: stored for stored in files}
    found = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        if path in by_path:
            found.append(file_entry(by_path[path], personal, at(changes, by_path[path])))
        elif path and any(name.startswith(path + "/") for name in by_path):
            found.append(folder_from(path, files, changes))
    return found


def model_entry(repo: Repo, revision: Revision | None) -> dict:
    """A repo as the Hub describes a model; `sha` and `lastModified` from `revision` (the listings give
    `main`, when one is released; model info the revision asked for)."""
    entry = {
        "_id": f"{repo.pk:024x}",
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.org,
        "private": repo.private,
        "gated": "manual" if needs_grant(repo) else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "library_name": "transformers",
        "createdAt": hub_time(repo.created_at),
    }
    if revision is not None:
        entry.update(sha=revision.commit, lastModified=hub_time(revision.released_at or revision.created_at))
    return entry
