"""The pages a person uses for access: my requests, the review queue, the account page with tokens."""

from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from access.activity import activity
from access.forms import TokenForm
from access.gate import reviewed_repos
from access.models import AccessRequest, ApiToken, Reviewer
from access.second_factor import second_factor_required
from access.services import RequestRefused, create_token, decide
from audit.chain import record
from audit.tags import Tag
from hub.charts import svg
from hub.pages import without_page

QUEUE_PAGE = 100


@login_required
def my_requests(request):
    mine = AccessRequest.objects.filter(user=request.user).select_related("repo")
    return render(request, "access/my_requests.html", {"requests": mine})


@login_required
@second_factor_required
@require_http_methods(["GET", "POST"])
def review_queue(request):
    repos = reviewed_repos(request.user)
    if not repos.exists():
        raise PermissionDenied("you review no repo")
    if request.method == "POST":
        return bulk_decide(request, repos)
    queue = AccessRequest.objects.filter(repo__in=repos).select_related("repo", "user")
    filters = {key: request.GET.get(key, "").strip() for key in ("repo", "state", "since", "until", "q")}
    if filters["repo"]:
        org, _, name = filters["repo"].partition("/")
        queue = queue.filter(repo__org=org, repo__name=name)
    queue = queue.filter(state=filters["state"] or AccessRequest.State.PENDING) if filters["state"] != "all" else queue
    for key, lookup in (("since", "created_at__date__gte"), ("until", "created_at__date__lte")):
        if filters[key]:
            try:
                queue = queue.filter(**{lookup: datetime.strptime(filters[key], "%Y-%m-%d").date()})
            except ValueError:
                messages.error(request, f"{key} must be a date written YYYY-MM-DD")
    if filters["q"]:
        # Answers are stored as JSON; a text search over them finds any answer that contains the words.
        queue = queue.filter(
            Q(fields__icontains=filters["q"])
            | Q(user__email__icontains=filters["q"])
            | Q(user__username__icontains=filters["q"])
        )
    page = Paginator(queue.order_by("created_at", "pk"), QUEUE_PAGE).get_page(request.GET.get("page"))
    for row in page:
        row.email_domain = row.user.email.rpartition("@")[2]
    return render(
        request,
        "access/review_queue.html",
        {
            "rows": page.object_list,
            "page": page,
            "query_string": without_page(request),
            "activity": svg(activity(repos)),
            "repos": repos,
            "filters": filters,
            "states": ["pending", "accepted", "rejected", "all"],
        },
    )


def bulk_decide(request, repos):
    status = request.POST.get("decision")
    ids = [value for value in request.POST.getlist("request") if value.isdigit()]  # request ids, nothing else
    reason = request.POST.get("reason", "").strip()
    if status not in (AccessRequest.State.ACCEPTED, AccessRequest.State.REJECTED) or not ids:
        messages.error(request, "choose requests and a decision")
        return redirect(request.get_full_path())
    if status == AccessRequest.State.REJECTED and not reason:
        messages.error(request, "give a reason when rejecting: the applicants will read it")
        return redirect(request.get_full_path())
    chosen = AccessRequest.objects.filter(pk__in=ids, repo__in=repos).select_related("user", "repo")
    done = 0
    for access_request in chosen:
        if access_request.state != status:
            try:
                decide(access_request, status=status, reviewer=request.user, reason=reason, request=request)
                done += 1
            except RequestRefused as refused:
                messages.error(request, refused.message)
    messages.success(request, f"{done} request(s) {status}")
    return redirect(request.get_full_path())


@login_required
@require_http_methods(["GET", "POST"])
def account(request):
    new_token, token_form = None, TokenForm(request.user)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create-token":
            token_form = TokenForm(request.user, request.POST)
            if not token_form.is_valid():
                return account_page(request, token_form, None)
            _token, new_token = create_token(
                request.user,
                token_form.cleaned_data["name"].strip() or "token",
                scopes=token_form.cleaned_data["scopes"],
                expires_at=token_form.expires_at,
                repos=token_form.chosen_repos,
                actor=request.user,
                request=request,
            )
            token_form = TokenForm(request.user)
        elif action == "revoke-token":
            revoked = ApiToken.objects.filter(
                pk=request.POST.get("token"), user=request.user, revoked_at__isnull=True
            ).update(revoked_at=timezone.now())
            if revoked:
                record(
                    Tag.TOKEN_REVOKED,
                    actor=request.user,
                    subject=request.user,
                    request=request,
                    token=request.POST.get("token"),
                )
                messages.success(request, "the token was revoked; it stops working at once")
        elif action == "notify":
            choice = request.POST.get("notify")
            if choice in Reviewer.Notify.values:
                Reviewer.objects.filter(user=request.user).update(notify=choice)
                messages.success(request, "notification preference saved")
        if new_token is None:
            return redirect("account")
    return account_page(request, token_form, new_token)


def account_page(request, token_form: TokenForm, new_token: str | None):
    tokens = ApiToken.objects.filter(user=request.user, revoked_at__isnull=True).prefetch_related("repos")
    context = {
        "tokens": tokens,
        "now": timezone.now(),
        "new_token": new_token,
        "token_form": token_form,
        "reviews": Reviewer.objects.filter(user=request.user).select_related("repo"),
        "notify_choices": Reviewer.Notify.choices,
    }
    return render(request, "access/account.html", context, status=400 if token_form.errors else 200)
