"""Audit events of download links: a ticket issued, renewed, or given by the hub redirect (never its value)."""

import json

import pytest
from django.test import Client

from tests.support.audit import AGENT, events, only_event
from tests.support.flows import SHARD

pytestmark = pytest.mark.django_db


def test_asking_for_a_manifest_issues_a_link_and_asking_again_renews_it(release, chain_checked):
    revision, token = release
    url = "/api/v1/repos/acme/tiny/revisions/main/manifest"
    grantee = Client(HTTP_USER_AGENT=AGENT)
    assert grantee.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    issued = only_event("distribution:ticket:issued")
    first = revision.tickets.get()
    assert (issued.actor_username, issued.subject_username, issued.repo_id) == ("alice", "alice", "acme/tiny")
    assert issued.data["ticket"] == first.pk and issued.data["commit"] == revision.commit
    assert issued.data["max_uses"] == first.max_uses and issued.user_agent == AGENT

    assert grantee.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    renewed = only_event("distribution:ticket:renewed")
    assert renewed.data["renews"] == first.pk
    assert renewed.data["ticket"] == revision.tickets.exclude(pk=first.pk).get().pk
    assert len(events("distribution:ticket:issued")) == 1


def test_the_hub_redirect_records_the_short_lived_ticket_it_issues_but_not_its_value(release, chain_checked):
    revision, token = release
    answer = Client(HTTP_USER_AGENT=AGENT).get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 302
    issued = only_event("distribution:redirect-ticket:issued")
    assert (issued.subject_username, issued.data["channel"], issued.data["file"]) == ("alice", "hf-redirect", SHARD)
    assert issued.data["commit"] == revision.commit and issued.user_agent == AGENT
    ticket = answer["Location"].split("/")[2]
    assert ticket not in json.dumps(issued.data)
