"""Schemathesis fuzzes every operation of the REST API from the OpenAPI schema the portal serves, on a
real server, as a staff member and as an applicant: no request may cause a server error."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def callers(tmp_path):
    """A released repo to talk about, and the two kinds of caller the API has."""
    published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    return {"staff": token_for(person("fuzz-staff", staff=True)), "applicant": token_for(person("fuzz-applicant"))}


def test_no_operation_of_the_rest_api_answers_a_server_error(live_server, callers):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def no_server_error(case):
            for token in callers.values():
                headers = {"Authorization": f"Bearer {token}"}
                case.call_and_validate(base_url=live_server.url, headers=headers, checks=[not_a_server_error])

        no_server_error()


def test_every_rest_endpoint_is_in_the_schema(client):
    documented = set(client.get("/api/v1/schema/?format=json").json()["paths"])
    assert documented == {
        "/api/v1/access-requests/",
        "/api/v1/counts/",
        "/api/v1/audit/downloads/",
        "/api/v1/audit/anchors/",
        "/api/v1/me/downloads/",
        "/api/v1/repos/{org}/{name}/license-acceptance/",
        "/api/v1/repos/{org}/{name}/revisions/{rev}/manifest",
        "/api/v1/repos/{org}/{name}/revisions/{rev}/SHA256SUMS",
        "/api/v1/repos/{org}/{name}/revisions/{rev}/download.sh",
        "/api/v1/repos/{org}/{name}/revisions/{commit}/progress",
        "/api/v1/signing-key.pem",
        "/api/v1/signing-keys/",
        "/api/v1/signing-keys/{fingerprint}.pem",
    }
