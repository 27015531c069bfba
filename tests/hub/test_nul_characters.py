"""A NUL character anywhere in a request's path or query is refused with 400 before any view runs
(PostgreSQL cannot compare text holding one: the lookup would fail as a server error)."""

import pytest

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
