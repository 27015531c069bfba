"""The staff page that traces a leak: the same as `manage.py trace_leak`, with files uploaded from a
browser (a leaked shard, several, or GGUF), audited the same way."""

import tempfile
from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from access.gate import is_staff
from access.second_factor import second_factor_required
from distribution.copies import trace_leak, traceable_revisions
from tracing.errors import TracingInputError
from tracing.tracer import DEFAULT_THRESHOLD

MOST_FILES = 64


@login_required
@second_factor_required
@require_http_methods(["GET", "POST"])
def trace_leak_page(request):
    if not is_staff(request.user):
        raise PermissionDenied("tracing a leak is for staff")
    repos = sorted({revision.repo.repo_id for revision in traceable_revisions()})
    context = {"repos": repos, "threshold": DEFAULT_THRESHOLD, "verdicts": None, "error": ""}
    if request.method == "POST":
        uploads = request.FILES.getlist("leak")
        context["threshold"] = threshold = threshold_from(request.POST.get("threshold", ""))
        if not uploads or len(uploads) > MOST_FILES or threshold is None:
            context["error"] = f"choose 1 to {MOST_FILES} files, and a threshold above 0"
            return render(request, "portal/trace_leak.html", context, status=400)
        with tempfile.TemporaryDirectory(prefix="leak-") as scratch:
            paths = saved(uploads, Path(scratch))
            try:
                verdicts = trace_leak(
                    paths,
                    repo_id=request.POST.get("repo") or None,
                    threshold=threshold,
                    actor=request.user,
                    request=request,
                )
            except (TracingInputError, LookupError) as error:
                context["error"] = f"cannot trace these files: {error}"
                return render(request, "portal/trace_leak.html", context, status=400)
        context["verdicts"] = [{"verdict": verdict, "named": [shown(a) for a in verdict.named]} for verdict in verdicts]
    return render(request, "portal/trace_leak.html", context)


def shown(accused) -> dict:
    """What the page says of one recipient named (the upload's own name, never the scratch path)."""
    if accused.score is None:
        evidence = f"byte-exact copy of {Path(accused.exact_file).name}"
    else:
        evidence = f"score {accused.score:.1f}"
    return {"copy": accused.copy, "evidence": evidence}


def threshold_from(text: str) -> float | None:
    try:
        value = float(text or DEFAULT_THRESHOLD)
    except ValueError:
        return None
    return value if value > 0 else None


def saved(uploads, directory: Path) -> list[Path]:
    """The uploads as files under `directory`, by their base names only (a name cannot climb out)."""
    paths = []
    for number, upload in enumerate(uploads):
        # One folder per upload: two files of the same name stay apart, and each keeps the name it came with.
        path = directory / str(number) / (Path(upload.name).name or "leak")
        path.parent.mkdir()
        with path.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        paths.append(path)
    return paths
