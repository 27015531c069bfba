from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponseServerError
from django.shortcuts import redirect, render
from django.template import loader
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from access.api import submission_throttled
from access.forms import request_form
from access.gate import (
    AccessDenied,
    find_repo,
    is_reviewer,
    listed_revisions,
    may_publish,
    may_see_verification,
    visible_repos,
)
from access.models import AccessRequest, GatingPolicy, Grant
from access.services import RequestRefused, accept_current_license, submit_request
from hub import request_ids
from hub.errors import hf_error
from portal.model_card import card_html

TENSOR_ROWS = 200  # a page, not a dump: the full statistics are in the run's JSON report


def home(request):
    repos = visible_repos(request.user).prefetch_related("revisions")
    rows = [(repo, repo.latest_released()) for repo in repos]
    return render(request, "portal/home.html", {"rows": rows})


def revision_page(request, org, name, commit):
    """The verification of one revision, check by check: for staff, reviewers and its publisher."""
    try:
        repo = find_repo(request.user, org, name)
    except AccessDenied:
        raise Http404("no such repo") from None
    revision = repo.revisions.filter(commit=commit).first()
    if revision is None or not may_see_verification(request.user, repo, revision):
        raise Http404("no such revision")
    run = revision.runs.first()
    context = {
        "repo": repo,
        "revision": revision,
        "run": run,
        "checks": run.checks.all() if run else [],
        "tensors": (run.report.get("tensors") or [])[:TENSOR_ROWS] if run else [],
        "tensor_count": len(run.report.get("tensors") or []) if run else 0,
        "smoke": run.report.get("smoke") if run else None,
    }
    return render(request, "portal/revision.html", context)


@require_http_methods(["GET", "POST"])
def repo_page(request, org, name):
    try:
        repo = find_repo(request.user, org, name)
    except AccessDenied:
        raise Http404("no such repo") from None
    user = request.user
    policy = GatingPolicy.for_repo(repo)
    form = request_form(policy.form_fields)
    if request.method == "POST":
        if not user.is_authenticated:
            return redirect(f"/accounts/login/?next=/{repo.repo_id}")
        if request.POST.get("action") == "accept-license":
            try:
                accept_current_license(user, repo, version=request.POST.get("license_version", ""), request=request)
                messages.success(request, f"You accepted version {policy.license_version} of the license.")
            except RequestRefused as refused:
                messages.error(request, refused.message)
            return redirect("repo", org=repo.org, name=repo.name)
        wait = submission_throttled(request)
        if wait is not None:
            messages.error(request, f"Too many requests from you; try again in {wait} seconds.")
            return redirect("repo", org=repo.org, name=repo.name)
        form = request_form(policy.form_fields, request.POST)
        answers = {name: request.POST.get(name) for name in form.fields if name != "accept_license"}
        try:
            sent = submit_request(
                user, repo, fields=answers, accept_license=request.POST.get("accept_license") == "on", request=request
            )
            messages.success(
                request,
                f"Your request for {repo.repo_id} was sent."
                if sent.state == "pending"
                else f"Your request for {repo.repo_id} was {sent.state}.",
            )
            return redirect("repo", org=repo.org, name=repo.name)
        except RequestRefused as refused:
            messages.error(request, refused.message)
            for name, message in refused.errors.items():
                if name in form.fields:
                    form.add_error(name, message)
    grant = Grant.active().filter(user=user, repo=repo).first() if user.is_authenticated else None
    release = repo.latest_released()
    context = {
        "repo": repo,
        "policy": policy,
        "form": form,
        "license_outdated": bool(grant and grant.license_version and grant.license_version != policy.license_version),
        "release": release,
        "facts": release_facts(release) if release else None,
        "grant": grant,
        "my_request": AccessRequest.objects.filter(user=user, repo=repo).first() if user.is_authenticated else None,
        "revisions": listed_revisions(user, repo),
        "can_see_checks": is_reviewer(user, repo) or may_publish(user, repo),
        "can_publish": may_publish(user, repo),
        "base_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "portal/repo.html", context)


def release_facts(release) -> dict:
    """What a model hub shows of a release: its card, its files with sizes and digests, and what the
    verification found (each check's outcome and the smoke pass), which anyone who may see the repo sees."""
    run = release.runs.filter(ok=True).order_by("-finished_at").first()
    outcomes = {}
    for check in release.checks.filter(run=run) if run else ():
        worst = outcomes.get(check.name, "pass")
        outcomes[check.name] = check.status if SEVERITY[check.status] > SEVERITY[worst] else worst
    return {
        "card": card_html(release),
        "files": release.files.order_by("path"),
        "total_size": sum(release.files.values_list("size", flat=True)),
        "checks": sorted(outcomes.items()),
        "smoke": (run.report or {}).get("smoke") if run else None,
        "verified_at": run.finished_at if run else None,
    }


SEVERITY = {"pass": 0, "warn": 1, "fail": 2}


def admin_login(request):
    """Staff sign in through the account pages, so the login rate limits and lock-out cover them too."""
    return redirect_to_login(request.GET.get("next") or reverse("admin:index"), login_url=reverse("account_login"))


def not_found(request, exception):
    """404: the Hub's JSON error under /api/ (clients read it), a page for people elsewhere."""
    if request.path.startswith("/api/"):
        # Not the path itself: it may hold anything, a line break included, and goes into a header too.
        return hf_error(404, "nothing at this address: check the repo, revision and file names")
    return render(request, "404.html", {"request_path": request.path}, status=404)


def server_error(request):
    """500: a page that needs no database and no request context, with the id to quote to operators."""
    template = loader.get_template("500.html")
    return HttpResponseServerError(template.render({"request_id": request_ids.current.get()}))
