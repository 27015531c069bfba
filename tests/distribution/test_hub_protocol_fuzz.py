"""The Hub-protocol endpoints under generated requests: malformed paths, revisions, ranges, bodies and
credentials. Whatever arrives, no answer is a server error, and nobody without a grant gets a byte
or a link to one."""

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.models import AccessRequest
from access.services import grant_access
from tests.support.flows import SHARD, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db
SERVED = {200, 206, 302, 307}
ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
REVISIONS = st.one_of(st.sampled_from(["main", "v1", "0" * 40, "..", "%2e%2e", "main%00", "-", "a" * 300]), ODD_TEXT)
PATHS = st.one_of(
    st.sampled_from([SHARD, "config.json", "../config.json", "a/../../etc/passwd", "%2F", "x" * 600, ".", ""]),
    ODD_TEXT,
)
RANGES = st.one_of(
    st.none(),
    st.sampled_from(["bytes=0-", "bytes=-1", "bytes=5-1", "bytes=0-0,2-3", "bytes=99999999999999999999-", "items=1-2"]),
    ODD_TEXT.map(lambda text: f"bytes={text}"),
)
QUIET = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def release(tmp_path):
    """acme/fuzz released, a grantee and a stranger: their tokens, once for all of a test's examples."""
    revision, _ = published_tiny_llama(tmp_path, "acme/fuzz", verify_here=True)
    grantee, stranger = person("fuzz-grantee"), person("fuzz-stranger")
    reviewer = person("fuzz-reviewer", reviews=[revision.repo])
    grant_access(grantee, revision.repo, granted_by=None)
    AccessRequest.objects.create(user=stranger, repo=revision.repo, license_version="1")
    return {
        "grantee": token_for(grantee),
        "stranger": token_for(stranger),
        "reviewer": token_for(reviewer),
        "anonymous": None,
    }


def request_as(caller_token, method: str, path: str, **headers):
    credentials = {"HTTP_AUTHORIZATION": f"Bearer {caller_token}"} if caller_token else {}
    return getattr(Client(), method)(path, **credentials, **headers)


@QUIET
@given(caller=st.sampled_from(["grantee", "stranger", "anonymous"]), rev=REVISIONS, path=PATHS, asked=RANGES)
def test_resolve_never_fails_and_serves_only_grantees(release, caller, rev, path, asked):
    headers = {"HTTP_RANGE": asked} if asked is not None else {}
    for method in ("get", "head"):
        answer = request_as(release[caller], method, f"/acme/fuzz/resolve/{rev}/{path}", **headers)
        assert answer.status_code < 500, answer.content[:300]
        if caller != "grantee":
            assert answer.status_code not in SERVED, (caller, rev, path, answer.status_code)


@QUIET
@given(
    caller=st.sampled_from(["grantee", "stranger", "anonymous"]),
    endpoint=st.sampled_from(["revision/{rev}", "tree/{rev}", "tree/{rev}/{path}", "revision/{rev}?blobs=true"]),
    rev=REVISIONS,
    path=PATHS,
)
def test_the_metadata_calls_never_fail(release, caller, endpoint, rev, path):
    answer = request_as(release[caller], "get", "/api/models/acme/fuzz/" + endpoint.format(rev=rev, path=path))
    assert answer.status_code < 500, answer.content[:300]


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=8,
)
# The Hub client's own shape, with values of any type where it sends strings.
HUB_SHAPED = st.fixed_dictionaries(
    {
        "user": st.sampled_from(["fuzz-stranger", "fuzz-stranger", "nobody"]) | ANY_JSON,
        "status": st.sampled_from(["accepted", "rejected", "pending"]) | ANY_JSON,
        "rejectionReason": ANY_JSON,
    }
)


@settings(QUIET, max_examples=400)
@given(action=st.sampled_from(["handle", "grant"]), body=HUB_SHAPED.map(lambda value: json.dumps(value).encode()))
def test_a_reviewers_access_request_calls_never_fail_on_any_values(release, action, body):
    answer = post(release["reviewer"], action, body, "application/json")
    assert answer.status_code < 500, answer.content[:300]


@QUIET
@given(
    caller=st.sampled_from(["grantee", "stranger", "anonymous"]),
    action=st.sampled_from(["handle", "grant"]),
    body=st.binary(max_size=200) | ANY_JSON.map(lambda value: json.dumps(value).encode()),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_the_access_request_calls_refuse_everyone_else_whatever_the_body(release, caller, action, body, content_type):
    answer = post(release[caller], action, body, content_type)
    assert answer.status_code in (400, 401, 403, 404, 415), answer.content[:300]


def post(token, action: str, body: bytes, content_type: str):
    credentials = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().post(
        f"/api/models/acme/fuzz/user-access-request/{action}", data=body, content_type=content_type, **credentials
    )
