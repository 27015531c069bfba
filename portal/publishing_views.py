"""The publishing page of a repo, for its publishers and staff: its revisions, newest first, each check's
outcome as the workers get through them, and the release of a verified revision with a tag. Its JSON
twin answers one revision's progress, to the page's script (which follows a revision until it settles)
or to a publisher's own tools through a token with the publish scope."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from access.gate import AccessDenied, SecondFactorRequired, check_second_factor, find_repo, permit_publish
from access.second_factor import WHY, second_factor_required
from access.tokens import InvalidToken, authenticate
from distribution.models import Repo, validate_tag_for
from distribution.publishing import PublishError, release_revision
from hub.errors import hf_error
from hub.pages import without_page
from verification.progress import as_dict, progress_of

PAGE_REVISIONS = 20


def published_repo(user, org: str, name: str, token=None) -> Repo:
    """The repo, when the caller may publish to it; AccessDenied (404 for a repo out of sight) otherwise."""
    repo = find_repo(user, org, name, token)
    permit_publish(user, repo, token)
    return repo


def page_repo(request, org: str, name: str) -> Repo:
    try:
        return published_repo(request.user, org, name)
    except AccessDenied as denied:
        if denied.status == 404:
            raise Http404(denied.message) from None
        raise PermissionDenied(denied.message) from None


@login_required
@second_factor_required
@require_GET
def revisions_page(request, org, name):
    return render_revisions(request, page_repo(request, org, name), request.GET.get("page"))


@login_required
@second_factor_required
@require_POST
def release(request, org, name, commit):
    """Release a verified revision, with the tag the publisher typed (if any), as `manage.py release` does."""
    repo = page_repo(request, org, name)
    revision = repo.revisions.filter(commit=commit).first()
    if revision is None:
        raise Http404(f"{repo.repo_id} has no revision {commit}")
    tag = request.POST.get("tag", "").strip()
    page = request.POST.get("page", "")
    try:
        if tag:
            validate_tag_for(revision, tag)
        release_revision(revision, actor=request.user, tag=tag, request=request)
    except ValidationError as error:
        reason = error.messages[0]
    except PublishError as error:
        reason = str(error)
    else:
        named = f" as {revision.tag}" if revision.tag else ""
        messages.success(
            request, f"Released {repo.repo_id}@{revision.commit[:12]}{named}: grantees can download it now."
        )
        back = reverse("repo-revisions", kwargs={"org": repo.org, "name": repo.name})
        return redirect(f"{back}?page={page}#revision-{revision.commit}" if page.isdigit() else back)
    return render_revisions(request, repo, page, refused={revision.pk: reason})


def render_revisions(request, repo: Repo, page_number, *, refused: dict | None = None):
    """The page; `refused` holds, by revision id, why a release was refused (the answer is then a 400)."""
    page = Paginator(repo.revisions.all(), PAGE_REVISIONS).get_page(page_number)
    shown = progress_of(page.object_list)
    for progress in shown:
        progress.refused = (refused or {}).get(progress.revision.pk, "")
    context = {
        "repo": repo,
        "page": page,
        "shown": shown,
        "query_string": without_page(request),
        "following": any(not progress.settled for progress in shown),
        "tag_typed": request.POST.get("tag", "") if refused else "",
    }
    return render(request, "portal/repo_revisions.html", context, status=400 if refused else 200)


@require_GET
def revision_progress(request, org, name, commit):
    """One revision's progress as JSON: for a browser session past its second factor, or a token with
    the publish scope."""
    try:
        user, token = authenticate(request)
    except InvalidToken as error:
        return hf_error(401, str(error))
    if user is None:
        return hf_error(401, "sign in, or send a token with the publish scope: Authorization: Bearer <token>")
    if token is None:
        try:
            check_second_factor(request)
        except SecondFactorRequired:
            return hf_error(403, f"{WHY} This session has not passed yours: send a token with the publish scope.")
    try:
        repo = published_repo(user, org, name, token)
    except AccessDenied as denied:
        return hf_error(denied.status, denied.message, denied.code)
    revision = repo.revisions.filter(commit=commit).first()
    if revision is None:
        return hf_error(404, f"{repo.repo_id} has no revision {commit}", "RevisionNotFound")
    return JsonResponse(as_dict(progress_of([revision])[0]))
