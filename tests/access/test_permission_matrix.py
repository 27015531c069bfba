"""Every endpoint and page against every role, on a public gated repo and on a private one.

Roles: anonymous, an unverified account, an applicant with a pending request, a grantee, a revoked
grantee, a rejected applicant, a reviewer of another repo, a reviewer of this repo, a publisher of this
repo, staff. Each calls
the API with a token that carries every scope (as tokens made before scopes did); the roles named
`<role>_<scope>` call it with a narrower token of that person: only that scope, or for `elsewhere` a
read token limited to another repo. Pages take the session, so there a token role is its person.
On the private repo, whoever may not see it gets exactly what they would get for a repo that does
not exist; so does a token limited to other repos, on either repo.

Staff, reviewers and publishers sign in with a second factor: the matrix is what they get once their
session passed it; `test_staff_pages_wait_for_the_second_factor` is the other side, enrolled or not.
"""

import copy

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from django.utils.http import urlencode

from access.models import AccessRequest, Grant, Scope
from access.services import decide, grant_access
from distribution.models import Repo, Revision, RevisionFile
from tests.support.personas import enrol_second_factor, person, sign_in, token_for

pytestmark = pytest.mark.django_db
PEOPLE = [
    "anonymous",
    "unverified",
    "pending",
    "grantee",
    "revoked",
    "rejected",
    "other_reviewer",
    "reviewer",
    "publisher",
    "staff",
]
# A narrower token: (its person, its scopes, whether it is limited to the other repo).
TOKEN_ROLES = {
    "grantee_read": ("grantee", [Scope.READ], False),
    "grantee_review": ("grantee", [Scope.REVIEW], False),
    "grantee_elsewhere": ("grantee", [Scope.READ], True),
    "reviewer_read": ("reviewer", [Scope.READ], False),
    "reviewer_review": ("reviewer", [Scope.REVIEW], False),
    "publisher_publish": ("publisher", [Scope.PUBLISH], False),
    "publisher_read": ("publisher", [Scope.READ], False),
    "staff_read": ("staff", [Scope.READ], False),
    "staff_admin_read": ("staff", [Scope.ADMIN, Scope.READ], False),
}
ROLES = PEOPLE + list(TOKEN_ROLES)
COMMIT = "c" * 40


def person_of(role: str) -> str:
    return TOKEN_ROLES[role][0] if role in TOKEN_ROLES else role


def build(private: bool, role: str):
    """The repos and the role's account; its API token, when the role names a narrower one, beside it."""
    user = build_person(private, person_of(role))
    if role in TOKEN_ROLES:
        _, scopes, elsewhere = TOKEN_ROLES[role]
        user.api_token = token_for(user, scopes=scopes, repos=[Repo.objects.get(name="other")] if elsewhere else None)
    return user


def build_person(private: bool, role: str):
    repo = Repo.objects.create(org="acme", name="tiny", private=private)
    other = Repo.objects.create(org="acme", name="other")
    revision = Revision.objects.create(
        repo=repo, commit=COMMIT, state=Revision.State.RELEASED, storage_backend="local", released_at=timezone.now()
    )
    RevisionFile.objects.create(revision=revision, path="config.json", size=2, sha256="ab" * 32)
    person("target")  # someone reviewers can act on
    AccessRequest.objects.create(user=person("waiting"), repo=repo, license_version="1")
    if role == "anonymous":
        return None
    user = {
        "unverified": lambda: person("user", verified=False),
        "other_reviewer": lambda: person("user", reviews=[other]),
        "reviewer": lambda: person("user", reviews=[repo]),
        "publisher": lambda: person("user", publishes=[repo]),
        "staff": lambda: person("user", staff=True),
    }.get(role, lambda: person("user"))()
    if role == "pending":
        AccessRequest.objects.create(user=user, repo=repo, license_version="1")
    elif role in ("grantee", "revoked"):
        grant_access(user, repo, granted_by=None)
        if role == "revoked":
            Grant.objects.filter(user=user).update(revoked_at=timezone.now())
    elif role == "rejected":
        decide(
            AccessRequest.objects.create(user=user, repo=repo, license_version="1"),
            status="rejected",
            reviewer=None,
            reason="no",
        )
    return user


def call(client: Client, user, method: str, path: str, body=None, api=True):
    headers = {}
    if user is not None:
        if api:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {getattr(user, 'api_token', None) or token_for(user)}"
        else:
            sign_in(client, user)
    if body is not None:
        # A JSON body for the calls that take one; the Hub's paths-info takes a form.
        content_type = "application/json" if body.startswith("{") else "application/x-www-form-urlencoded"
        return getattr(client, method)(path, data=body, content_type=content_type, **headers)
    return getattr(client, method)(path, **headers)


OK, CREATED, PINNED = 200, 201, 307  # PINNED: a HEAD of `main` redirected to the same file at its commit
DONE = 302  # a form that did what it was asked: back to its page
ANON, DENIED, HIDDEN, CONFLICT, LATER, LOGIN = 401, 403, 404, 409, 429, 302


def roles(default: int, **exceptions: int) -> dict[str, int]:
    return {role: exceptions.get(role, default) for role in ROLES}


def page(default: int, **exceptions: int) -> dict[str, int]:
    """A page's statuses: with the session, each token role gets what its person gets."""
    by_person = roles(default, **exceptions)
    return {role: by_person[person_of(role)] for role in ROLES}


# What the narrower tokens get where their person could: reviewing takes the review scope, downloading
# the read scope, staff powers the admin scope; a token limited to another repo finds no acme/tiny.
DOWNLOADS = {"grantee_read": OK, "staff_admin_read": OK, "grantee_elsewhere": HIDDEN}
REVIEWS = {"reviewer_review": OK, "grantee_elsewhere": HIDDEN}
AUDITS = {"reviewer_review": OK, "staff_admin_read": OK}
# Publishing takes the publish scope, of a publisher of the repo or of staff; creating a repo in acme, of
# a publisher of any acme repo or of staff (acme/tiny exists: they get the Hub's 409 with its URL).
PUBLISHES = {"publisher": OK, "staff": OK, "publisher_publish": OK, "grantee_elsewhere": HIDDEN}
CREATES = {"publisher": CONFLICT, "staff": CONFLICT, "publisher_publish": CONFLICT}
A_COMMIT = (
    '{"key": "header", "value": {"summary": "matrix"}}\n{"key": "deletedFile", "value": {"path": "config.json"}}\n'
    '{"key": "file", "value": {"path": "README.md", "content": "aGk=", "encoding": "base64"}}\n'
)


# (method, path, JSON body, is a page) and the status each role gets on the public repo.
ENDPOINTS = {
    ("get", "/", None, True): page(OK),
    ("get", "/acme/tiny", None, True): page(OK),
    ("get", f"/acme/tiny/revisions/{COMMIT}", None, True): page(HIDDEN, reviewer=OK, publisher=OK, staff=OK),
    ("get", "/acme/tiny/revisions/", None, True): page(DENIED, anonymous=LOGIN, publisher=OK, staff=OK),
    ("post", f"/acme/tiny/revisions/{COMMIT}/release", "tag=v2", True): page(
        DENIED, anonymous=LOGIN, publisher=DONE, staff=DONE
    ),
    ("get", f"/api/v1/repos/acme/tiny/revisions/{COMMIT}/progress", None, False): roles(
        DENIED, anonymous=ANON, publisher=OK, staff=OK, publisher_publish=OK, grantee_elsewhere=HIDDEN
    ),
    ("get", "/requests/", None, True): page(OK, anonymous=LOGIN),
    ("get", "/account/", None, True): page(OK, anonymous=LOGIN),
    ("get", "/review/", None, True): page(DENIED, anonymous=LOGIN, other_reviewer=OK, reviewer=OK, staff=OK),
    ("get", "/admin/", None, True): page(LOGIN, staff=OK),
    ("get", "/api/v1/access-requests/", None, False): roles(OK, anonymous=ANON),
    ("post", "/api/v1/access-requests/", '{"repo": "acme/tiny", "accept_license": true}', False): roles(
        CREATED,
        anonymous=ANON,
        unverified=DENIED,
        pending=CONFLICT,
        grantee=CONFLICT,
        rejected=LATER,
        grantee_read=CONFLICT,
        grantee_review=CONFLICT,
        grantee_elsewhere=HIDDEN,
    ),
    ("get", "/api/v1/counts/", None, False): roles(
        DENIED, anonymous=ANON, other_reviewer=OK, reviewer=OK, staff=OK, reviewer_review=OK
    ),
    ("get", "/audit/downloads/", None, True): page(DENIED, anonymous=LOGIN, other_reviewer=OK, reviewer=OK, staff=OK),
    ("get", "/audit/downloads/?repo=acme/tiny", None, True): page(HIDDEN, anonymous=LOGIN, reviewer=OK, staff=OK),
    ("get", "/audit/downloads.csv", None, True): page(
        DENIED, anonymous=LOGIN, other_reviewer=OK, reviewer=OK, staff=OK
    ),
    ("get", "/account/downloads.json", None, True): page(OK, anonymous=LOGIN),
    ("get", "/api/v1/audit/downloads/", None, False): roles(
        DENIED, anonymous=ANON, other_reviewer=OK, reviewer=OK, staff=OK, **AUDITS
    ),
    ("get", "/api/v1/audit/downloads/?repo=acme/tiny&format=csv", None, False): roles(
        HIDDEN, anonymous=ANON, reviewer=OK, staff=OK, **AUDITS
    ),
    ("get", "/api/v1/me/downloads/", None, False): roles(OK, anonymous=ANON),
    ("post", "/api/v1/repos/acme/tiny/license-acceptance/", '{"license_version": "1"}', False): roles(
        HIDDEN, anonymous=ANON, grantee=OK, grantee_read=OK, grantee_review=OK
    ),
    ("get", "/api/whoami-v2", None, False): roles(OK, anonymous=ANON),
    ("get", "/api/models/acme/tiny/revision/main", None, False): roles(OK, grantee_elsewhere=HIDDEN),
    ("get", f"/api/models/acme/tiny/tree/{COMMIT}", None, False): roles(OK, grantee_elsewhere=HIDDEN),
    ("get", "/api/models/acme/tiny/tree/main?recursive=true&expand=true", None, False): roles(
        OK, grantee_elsewhere=HIDDEN
    ),
    ("post", "/api/models/acme/tiny/paths-info/main", "paths=config.json&expand=true", False): roles(
        OK, grantee_elsewhere=HIDDEN
    ),
    ("get", "/api/models/acme/tiny/refs", None, False): roles(OK, grantee_elsewhere=HIDDEN),
    ("get", "/api/models/acme/tiny/commits/main", None, False): roles(OK, grantee_elsewhere=HIDDEN),
    ("get", "/api/models?author=acme", None, False): roles(OK),
    ("get", "/api/models/acme/tiny/auth-check", None, False): roles(
        DENIED, anonymous=ANON, grantee=OK, staff=OK, **DOWNLOADS
    ),
    ("head", "/acme/tiny/resolve/main/config.json", None, False): roles(
        DENIED,
        anonymous=ANON,
        grantee=PINNED,
        staff=PINNED,
        **{**DOWNLOADS, "grantee_read": PINNED, "staff_admin_read": PINNED},
    ),
    ("head", f"/acme/tiny/resolve/{COMMIT}/config.json", None, False): roles(
        DENIED, anonymous=ANON, grantee=OK, staff=OK, **DOWNLOADS
    ),
    ("get", "/api/models/acme/tiny/user-access-request/pending", None, False): roles(
        DENIED, anonymous=ANON, reviewer=OK, staff=OK, **REVIEWS
    ),
    ("post", "/api/models/acme/tiny/user-access-request/handle", '{"user": "waiting", "status": "accepted"}', False): (
        roles(DENIED, anonymous=ANON, reviewer=OK, staff=OK, **REVIEWS)
    ),
    ("get", "/api/v1/repos/acme/tiny/revisions/main/manifest", None, False): roles(
        DENIED, anonymous=ANON, grantee=OK, staff=OK, **DOWNLOADS
    ),
    ("get", "/api/v1/repos/acme/tiny/revisions/main/SHA256SUMS", None, False): roles(
        DENIED, anonymous=ANON, grantee=OK, staff=OK, **DOWNLOADS
    ),
    ("get", "/api/v1/repos/acme/tiny/revisions/main/download.sh", None, False): roles(
        DENIED, anonymous=ANON, grantee=OK, staff=OK, **DOWNLOADS
    ),
    ("post", "/api/models/acme/tiny/user-access-request/grant", '{"user": "target"}', False): roles(
        DENIED, anonymous=ANON, reviewer=OK, staff=OK, **REVIEWS
    ),
    ("post", "/api/repos/create", '{"organization": "acme", "name": "tiny"}', False): roles(
        DENIED, anonymous=ANON, **CREATES
    ),
    (
        "post",
        "/api/models/acme/tiny/preupload/main",
        '{"files": [{"path": "a.json", "sample": "", "size": 2}]}',
        False,
    ): (roles(DENIED, anonymous=ANON, **PUBLISHES)),
    ("post", "/acme/tiny.git/info/lfs/objects/batch", '{"operation": "upload", "objects": []}', False): roles(
        DENIED, anonymous=ANON, **PUBLISHES
    ),
    ("post", "/api/models/acme/tiny/commit/main", A_COMMIT, False): roles(DENIED, anonymous=ANON, **PUBLISHES),
    ("get", "/api/models/acme/tiny/xet-write-token/main", None, False): roles(DENIED, anonymous=ANON, **PUBLISHES),
    # The CAS calls take only the Xet token xet-write-token gives (tests/distribution/test_hub_xet.py): a
    # portal API token, whoever holds it, is no credential there.
    ("post", f"/xet/acme/tiny/v1/xorbs/default/{'ab' * 32}", "xorb", False): roles(ANON),
    ("post", "/xet/acme/tiny/v1/shards", "shard", False): roles(ANON),
    ("get", f"/xet/acme/tiny/v1/chunks/default-merkledb/{'cd' * 32}", None, False): roles(ANON),
}
SEES_PRIVATE = {
    "grantee",
    "reviewer",
    "staff",
    "grantee_read",
    "reviewer_read",
    "reviewer_review",
    "staff_admin_read",
    "publisher",
    "publisher_publish",
}
DOWNLOAD_CALLS = ("/resolve/", "/auth-check")
# Pages and calls about no repo in particular answer the same whatever the private repo is.
SITE_WIDE = {
    ("get", path)
    for path in (
        "/",
        "/requests/",
        "/account/",
        "/review/",
        "/admin/",
        "/api/v1/access-requests/",
        "/api/v1/counts/",
        "/api/whoami-v2",
        "/api/models?author=acme",
        "/audit/downloads/",
        "/audit/downloads.csv",
        "/account/downloads.json",
        "/api/v1/audit/downloads/",
        "/api/v1/me/downloads/",
    )
} | {("post", "/api/repos/create")}


def expected(endpoint, role: str, private: bool) -> int:
    status = ENDPOINTS[endpoint][role]
    method, path, _, is_page = endpoint
    sees = (person_of(role) if is_page else role) in SEES_PRIVATE
    if not private or sees or (method, path) in SITE_WIDE or status == LOGIN:
        return status
    # Calls that need an account refuse the anonymous before looking at any repo; download calls (and
    # auth-check, which answers what a download would), open to the anonymous on public repos, answer as
    # for a repo that does not exist.
    if status == ANON and not any(call in path for call in DOWNLOAD_CALLS):
        return ANON
    return HIDDEN


class Caller:
    """One role's calls, each as if it were the only one: the role's world is built once, and every call
    runs in a savepoint rolled back after it, with the throttles' counts cleared and a new client
    holding the role's session."""

    def __init__(self, user):
        self.user = user
        self.signed_in = sign_in(Client(), user) if user is not None else None
        if user is not None and not hasattr(user, "api_token"):
            user.api_token = token_for(user)

    def __call__(self, method: str, path: str, body=None, api=True):
        from django.core.cache import cache

        from hub.rate_limits import reservations

        cache.clear()
        reservations.clear()
        client = Client()
        if not api and self.signed_in is not None:
            client.cookies = copy.deepcopy(self.signed_in.cookies)
        with transaction.atomic():
            response = call(client, None if not api and self.signed_in else self.user, method, path, body, api)
            transaction.set_rollback(True)
        return response


def mismatches(answers: dict[str, tuple[int, int, bytes]]) -> str:
    """Every call whose status differs from the matrix's, one line each."""
    return "\n".join(
        f"{what}: expected {wanted}, got {got}: {content[:200]!r}"
        for what, (wanted, got, content) in answers.items()
        if wanted != got
    )


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_what_it_may(role, private):
    caller = Caller(build(private, role))
    answers = {}
    for endpoint in ENDPOINTS:
        method, path, body, page = endpoint
        response = caller(method, path, body, api=not page)
        answers[f"{method} {path}"] = (expected(endpoint, role, private), response.status_code, response.content)
    assert not mismatches(answers), mismatches(answers)


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("role", ROLES)
def test_the_model_list_names_the_repo_only_to_whoever_may_see_it(role, private):
    user = build(private, role)
    listed = [model["id"] for model in call(Client(), user, "get", "/api/models").json()]
    sees = (role in SEES_PRIVATE or not private) and role != "grantee_elsewhere"
    assert listed == (["acme/other", "acme/tiny"] if sees else ["acme/other"])


# Who may not see acme/tiny, on which repo, and the calls about it they make (pages: the people only).
UNSEEN = [(role, True) for role in ROLES if role not in SEES_PRIVATE] + [("grantee_elsewhere", False)]


@pytest.mark.parametrize(
    ("role", "private"), UNSEEN, ids=[f"{role}-{'private' if private else 'public'}" for role, private in UNSEEN]
)
def test_a_repo_out_of_sight_answers_like_a_missing_one(role, private):
    caller = Caller(build(private, role))
    for method, path, body, page in ENDPOINTS:
        if (method, path) in SITE_WIDE or (page and role in TOKEN_ROLES):
            continue
        hidden = caller(method, path, body, api=not page)
        elsewhere = body.replace("acme/tiny", "acme/nothing") if body else body
        missing = caller(method, path.replace("acme/tiny", "acme/nothing"), elsewhere, api=not page)
        what = f"{method} {path}"
        assert hidden.status_code == missing.status_code, what
        assert hidden.content.replace(b"tiny", b"X") == missing.content.replace(b"nothing", b"X"), what
        assert hidden.get("X-Error-Code") == missing.get("X-Error-Code"), what


# The pages only staff and reviewers use, and the calls a browser session makes to the same data.
STAFF_PAGES = [
    "/review/",
    "/admin/",
    "/audit/downloads/",
    "/audit/downloads/?repo=acme/tiny",
    "/audit/downloads.csv",
    "/acme/tiny/revisions/",
]
STAFF_CALLS = [
    "/api/v1/counts/",
    "/api/v1/audit/downloads/",
    "/api/models/acme/tiny/user-access-request/pending",
    f"/api/v1/repos/acme/tiny/revisions/{COMMIT}/progress",
]
SETUP, CODE = "/accounts/2fa/totp/activate/", "/accounts/2fa/reauthenticate/"
NEEDS_FACTOR = ["other_reviewer", "reviewer", "publisher", "staff"]


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("factor", ["not enrolled", "enrolled, not passed"])
@pytest.mark.parametrize("role", NEEDS_FACTOR)
@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_wait_for_the_second_factor(path, role, factor, private):
    user = build(private, role)
    if factor == "enrolled, not passed":
        enrol_second_factor(user)
    response = sign_in(Client(), user, second_factor=False).get(path)
    if path == "/admin/" and role != "staff":
        # the admin turns away whoever is not staff before any factor is asked for
        assert response.status_code == LOGIN and response["Location"].startswith("/admin/login/")
        return
    assert response.status_code == LOGIN
    if factor == "not enrolled":
        assert response["Location"] == SETUP
    else:
        assert response["Location"] == f"{CODE}?{urlencode({'next': path})}"


@pytest.mark.parametrize("factor", ["not enrolled", "enrolled, not passed"])
@pytest.mark.parametrize("role", NEEDS_FACTOR)
@pytest.mark.parametrize("path", STAFF_CALLS)
def test_a_session_without_the_second_factor_gets_no_staff_data_but_a_token_does(path, role, factor):
    user = build(False, role)
    if factor == "enrolled, not passed":
        enrol_second_factor(user)
    by_session = sign_in(Client(), user, second_factor=False).get(path)
    assert by_session.status_code == DENIED and b"second factor" in by_session.content
    by_token = Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    assert by_token.status_code == ENDPOINTS[("get", path, None, False)][role]


@pytest.mark.parametrize(
    "role", [r for r in ROLES if r not in NEEDS_FACTOR and r != "anonymous" and r not in TOKEN_ROLES]
)
@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e[3]], ids=lambda e: f"{e[0]} {e[1]}")
def test_applicants_are_never_asked_for_a_second_factor(endpoint, role):
    user = build(False, role)
    method, path, _, _ = endpoint
    response = getattr(sign_in(Client(), user, second_factor=False), method)(path)
    assert response.status_code == ENDPOINTS[endpoint][role]
    assert "/accounts/2fa/" not in response.get("Location", "")


# The upload links a batch answer gives (local storage) are capabilities, as S3's presigned links are: the
# bytes and the completion answer to the link, whoever sends them; the verify step is a publishing call.
PUBLISHING_CALL = ("post", "/api/models/acme/tiny/commit/main", A_COMMIT, False)


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("role", ROLES)
def test_upload_links_answer_to_the_link_and_verify_to_the_publisher(role, private, settings, tmp_path):
    import hashlib

    from distribution import lfs
    from distribution.models import LfsObject
    from distribution.storage import get_storage

    settings.STORAGE_BACKEND, settings.LOCAL_STORAGE_ROOT = "local", tmp_path
    caller = Caller(build(private, role))
    data = b"weights"
    obj = lfs.pending_object(
        Repo.objects.get(name="tiny"), None, hashlib.sha256(data).hexdigest(), len(data), get_storage(), False
    )
    signed = lfs.sign(obj)
    altered = signed[:-1] + ("A" if signed[-1] != "A" else "B")
    publishes = expected(PUBLISHING_CALL, role, private) == OK
    refused = expected(PUBLISHING_CALL, role, private)
    answers = {}

    def ask(what: str, wanted: int, method: str, path: str, body: str) -> None:
        response = caller(method, path, body)
        answers[what] = (wanted, response.status_code, response.content)

    ask("altered link", DENIED, "put", f"/api/lfs/{altered}/object", "weights")
    ask("complete of a one-PUT upload", 400, "post", f"/api/lfs/{signed}/complete", '{"oid": "x", "parts": []}')
    ask("verify before the bytes", HIDDEN if publishes else refused, "post", f"/api/lfs/{signed}/verify", "{}")
    ask("the bytes", OK, "put", f"/api/lfs/{signed}/object", "weights")
    assert not mismatches(answers), mismatches(answers)
    # the bytes were taken (outside the rolled-back savepoint: the call's writes are undone, its file is not)
    assert (tmp_path / obj.key).read_bytes() == data
    assert LfsObject.objects.get(pk=obj.pk).state == LfsObject.State.PENDING
