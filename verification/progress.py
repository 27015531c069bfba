"""How far the verification of a revision has got, for the publisher watching it: each file waiting,
being checked (and by which worker) or checked, the stage, each check's outcome and the smoke pass.

A state this module does not know (one added later) is shown by its name and counted as still moving,
so a page following it keeps asking rather than stopping early.
"""

from dataclasses import dataclass, field

from django.db.models import F

from distribution.models import Revision
from verification.models import CheckResult, FileCheck, VerificationRun

State = Revision.State
# States a revision stays in until a person acts: nothing more to follow (an incomplete one never
# moves: the commit that brings its missing files is a new revision).
SETTLED = frozenset({State.INCOMPLETE, State.VERIFIED, State.FAILED, State.RELEASED, State.WITHDRAWN})
# What each stage of a verifying revision is doing, in words for the publisher.
STAGE_WORDS = {
    Revision.Stage.CHECKS: "checking its files",
    Revision.Stage.JUDGING: "checking the whole checkpoint (index, config, signature)",
    Revision.Stage.SMOKE_QUEUED: "waiting for a GPU worker to run the smoke pass",
    Revision.Stage.SMOKE: "running the smoke pass",
}


@dataclass
class Progress:
    revision: Revision
    files: list[FileCheck] = field(default_factory=list)
    run: VerificationRun | None = None
    checks: list[CheckResult] = field(default_factory=list)
    refused: str = ""  # why a release of it was just refused, for the page to say on its card

    @property
    def settled(self) -> bool:
        return self.revision.state in SETTLED

    @property
    def state_label(self) -> str:
        return self.revision.get_state_display()

    @property
    def stage_words(self) -> str:
        stage = self.revision.verification_stage
        return STAGE_WORDS.get(stage, stage) if self.revision.state == State.VERIFYING else ""

    @property
    def file_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(FileCheck.State.values, 0)
        for check in self.files:
            counts[check.state] = counts.get(check.state, 0) + 1
        return counts

    @property
    def problems(self) -> list[CheckResult]:
        """The checks that failed or warned, failures first: what the publisher has to read."""
        found = [check for check in self.checks if check.status != CheckResult.Status.PASS]
        return sorted(found, key=lambda check: check.status != CheckResult.Status.FAIL)

    @property
    def passed(self) -> int:
        return sum(check.status == CheckResult.Status.PASS for check in self.checks)

    @property
    def smoke(self) -> dict | None:
        return getattr(self.run, "smoke", None) or None

    @property
    def releasable(self) -> bool:
        return self.revision.state == State.VERIFIED

    @property
    def step(self) -> str:
        """A short text that changes whenever anything shown of the progress does."""
        counts = self.file_counts
        holders = ",".join(sorted(check.checked_by for check in self.files if check.state == FileCheck.State.CHECKING))
        return "/".join(
            map(
                str,
                (
                    self.revision.state,
                    self.revision.verification_stage,
                    counts.get(FileCheck.State.PENDING, 0),
                    counts.get(FileCheck.State.CHECKING, 0),
                    counts.get(FileCheck.State.DONE, 0),
                    holders,
                    self.run.pk if self.run else "",
                    len(self.checks),
                    self.revision.tag,
                ),
            )
        )


def progress_of(revisions) -> list[Progress]:
    """The progress of each revision, in the order given, in three queries whatever their number: a
    run's report (every tensor's statistics) is never loaded, only what its smoke pass saw."""
    found = {revision.pk: Progress(revision) for revision in revisions}
    files = FileCheck.objects.filter(revision_id__in=found).defer("scan").annotate(unreadable=F("scan__unreadable"))
    for check in files.order_by("path"):
        found[check.revision_id].files.append(check)
    runs = VerificationRun.objects.filter(revision_id__in=found).defer("report").annotate(smoke=F("report__smoke"))
    for run in runs.order_by("-started_at", "-id"):
        found[run.revision_id].run = found[run.revision_id].run or run
    latest = {progress.run.pk: progress for progress in found.values() if progress.run is not None}
    for check in CheckResult.objects.filter(run_id__in=latest).order_by("id"):
        latest[check.run_id].checks.append(check)
    return list(found.values())


def as_dict(progress: Progress) -> dict:
    """The progress as the JSON endpoint answers it."""
    revision = progress.revision
    return {
        "repo": revision.repo.repo_id,
        "commit": revision.commit,
        "tag": revision.tag,
        "state": revision.state,
        "state_label": progress.state_label,
        "stage": revision.verification_stage,
        "stage_words": progress.stage_words,
        "settled": progress.settled,
        "releasable": progress.releasable,
        "failure_reason": revision.failure_reason,
        "published_at": moment(revision.created_at),
        "verification_started_at": moment(revision.verification_started_at),
        "verified_at": moment(revision.verified_at),
        "released_at": moment(revision.released_at),
        "files": {
            "counts": progress.file_counts,
            "list": [
                {
                    "path": check.path,
                    "size": check.size,
                    "state": check.state,
                    "worker": check.checked_by,
                    "claims": check.claims,
                    "sha256": check.sha256,
                    "finished_at": moment(check.finished_at),
                    "unreadable": check.unreadable or "",
                }
                for check in progress.files
            ],
        },
        "checks": [
            {"name": c.name, "status": c.status, "code": c.code, "file": c.file, "message": c.message}
            for c in progress.checks
        ],
        "run": {"kind": progress.run.kind, "started_at": moment(progress.run.started_at)} if progress.run else None,
        "smoke": progress.smoke,
        "step": progress.step,
    }


def moment(value) -> str | None:
    return value.isoformat() if value else None
