"""A NUL character anywhere in a request's path or query is refused with 400 before any view runs, and in
a JSON body as it is read (PostgreSQL cannot compare text holding one: the lookup would fail as a server
error)."""

import pytest

from distribution.models import Repo
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "/acme/tiny/resolve/main%00/config.json",
        "/api/models/acme/ti%00ny/revision/main",
        "/acme/tiny%00",
        "/audit/downloads/?user=al%00ice",
        "/api/v1/repos/acme/tiny/revisions/main%00/manifest",
    ],
)
def test_a_nul_character_is_refused_before_the_database_sees_it(client, url):
    answer = client.get(url)
    assert answer.status_code == 400 and "NUL character" in answer["X-Error-Message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"user": "\\u0000", "status": "accepted"}',  # the fuzzing found this one: a 500 on PostgreSQL
        b'{"user": "fuzz", "status": "rejected", "rejectionReason": ["\\u0000"]}',
        b'{"user\\u0000": "fuzz", "status": "accepted"}',
    ],
)
def test_a_nul_character_in_a_json_body_is_refused_before_the_database_sees_it(client, body):
    repo = Repo.objects.create(org="acme", name="tiny")
    token = token_for(person("rita", reviews=[repo]))
    answer = client.post(
        "/api/models/acme/tiny/user-access-request/handle",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 400 and "NUL character" in answer["X-Error-Message"]


def test_a_json_body_nested_deeper_than_the_parser_goes_is_refused_as_not_json(client):
    repo = Repo.objects.create(org="acme", name="tiny")
    token = token_for(person("rita", reviews=[repo]))
    answer = client.post(
        "/api/models/acme/tiny/user-access-request/handle",
        data=b"[" * 100_000,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 400 and "nested too deeply" in answer["X-Error-Message"]
