"""The repo page shows what model hubs show: the model card (the checkpoint's README.md, rendered and
sanitized), the files with sizes and sha256, what the verification found, and the license."""

import pytest

from access.models import GatingPolicy
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db

CARD = """---
license: other
tags: [llama]
---
# Tiny LLaMA

A model for **tests**.

| layers | hidden |
| --- | --- |
| 2 | 64 |

<script>fetch("/account/").then(r => r.text()).then(steal)</script>
<img src="x" onerror="steal()">
[click me](javascript:steal())
<a href="https://example.org/paper" onclick="steal()">the paper</a>
"""


@pytest.fixture
def page(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True, extra_files={"README.md": CARD})
    policy = GatingPolicy.for_repo(revision.repo)
    policy.license_text, policy.license_version = "Use it for research only.", "2"
    policy.save()
    return revision, client.get("/acme/tiny").content.decode()


def test_the_model_card_is_rendered_without_anything_that_runs(page):
    _, html = page
    card = html[html.index('id="model-card"') : html.index('id="files"')]
    assert "<h1>Tiny LLaMA</h1>" in card and "<strong>tests</strong>" in card and "<table>" in card
    assert "license: other" not in card  # the metadata block is for tools
    for dangerous in ("<script", "onerror", "javascript:", "onclick", "steal()"):
        assert dangerous not in card
    assert 'href="https://example.org/paper"' in card and 'rel="nofollow noopener"' in card


def test_the_files_show_their_sizes_and_digests_and_the_checks_their_outcomes(page):
    revision, html = page
    for stored in revision.files.all():
        assert f"<code>{stored.path}</code>" in html and stored.sha256[:16] in html
    verification = html[html.index('id="verification"') : html.index('id="license"')]
    for check in ("files", "safetensors", "index", "config", "tensors", "smoke"):
        assert f"<td>{check}</td>" in verification
    assert "Smoke inference:" in verification and "<code>cpu</code>" in verification
    assert "Use it for research only." in html[html.index('id="license"') :]


def test_a_missing_page_is_styled_for_people_and_json_for_clients(client):
    page = client.get("/acme/no-such-model")
    assert page.status_code == 404 and 'id="not-found"' in page.content.decode()
    assert "<code>/acme/no-such-model</code>" in page.content.decode()
    api = client.get("/api/v1/no-such-endpoint/")
    assert api.status_code == 404 and "nothing at this address" in api.json()["error"]
    bearer = f"Bearer {token_for(person('alice'))}"
    odd = client.get("/api/v1/repos/a\nb/c/revisions/main/manifest", HTTP_AUTHORIZATION=bearer)
    assert odd.status_code == 404  # the path never reaches a header, where a line break would be a 500


def test_a_server_error_page_needs_no_database_and_names_the_request(rf, django_db_blocker):
    from hub.request_ids import current
    from portal.views import server_error

    token = current.set("req-5e7a1b2c")
    try:
        with django_db_blocker.block():  # the database may be what broke
            response = server_error(rf.get("/acme/tiny"))
    finally:
        current.reset(token)
    assert response.status_code == 500
    assert 'id="server-error"' in response.content.decode() and "req-5e7a1b2c" in response.content.decode()
