"""What verification concluded about a revision, for those who decide on it (a release) or show it."""

from verification.core.report import REQUIRED_CHECKS
from verification.models import CheckResult


def missing_or_failed_checks(revision) -> list[str]:
    """What stands between a revision and its release: required checks that failed or never ran."""
    run = revision.runs.first()
    if run is None:
        return ["it was never verified"]
    statuses = {}
    for check in run.checks.all():
        statuses.setdefault(check.name, set()).add(check.status)
    problems = [f"{name} failed" for name, found in statuses.items() if CheckResult.Status.FAIL in found]
    problems += [f"{name} never ran" for name in REQUIRED_CHECKS if name not in statuses]
    return sorted(problems)
