"""Audit events of a revision: published, verified or failed, released (with its tag), tagged, withdrawn."""

import io

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from distribution.models import Revision
from distribution.publishing import release_revision
from distribution.storage import get_storage
from tests.support.audit import events, only_event
from tests.support.flows import SHARD, flip_one_bit, publish, published_tiny_llama
from tests.support.personas import person
from verification.core.tiny_llama import write_tiny_llama
from verification.services import run_checks_stage, run_smoke_stage

pytestmark = pytest.mark.django_db


def test_a_checkpoint_leaves_one_event_per_step_from_publish_to_withdrawal(tmp_path, chain_checked):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    tags = ["distribution:revision:published", "verification:revision:verified", "distribution:revision:released"]
    recorded = list(AuditEvent.objects.filter(tag__in=tags).order_by("sequence"))
    assert [event.tag for event in recorded] == tags
    assert all(event.repo_id == "acme/tiny" and event.data["commit"] == revision.commit for event in recorded)
    published = [path for path in checkpoint.rglob("*") if path.is_file()]
    assert recorded[0].data["files"] == len(published)
    assert recorded[0].data["bytes"] == sum(path.stat().st_size for path in published)
    assert recorded[0].data["storage"] == "local"

    # Steps taken again move nothing and record nothing.
    assert run_smoke_stage(revision.pk) is None
    release_revision(revision)
    assert not revision.move(Revision.State.VERIFIED)
    assert [len(events(tag)) for tag in tags] == [1, 1, 1]

    stored = get_storage("local").path(f"{revision.storage_prefix}/{SHARD}")
    flip_one_bit(stored)
    with pytest.raises(CommandError, match="failed re-verification"):
        call_command("reverify", "acme/tiny", stdout=io.StringIO())
    withdrawn = only_event("distribution:revision:withdrawn")
    assert withdrawn.data["commit"] == revision.commit and SHARD in withdrawn.data["reason"]
    assert not events("verification:revision:failed")


def test_a_release_by_a_named_person_is_theirs(tmp_path, chain_checked):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True, release=False)
    carol = person("carol", staff=True)
    release_revision(revision, actor=carol)
    assert only_event("distribution:revision:released").actor_username == "carol"


def test_a_checkpoint_that_fails_its_checks_records_the_failure_once(tmp_path, chain_checked):
    checkpoint = write_tiny_llama(tmp_path / "checkpoint", shards=2)
    (checkpoint / SHARD).write_bytes(b"not a safetensors file")
    revision = publish(checkpoint, "acme/broken", "local")
    run_checks_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED
    failed = only_event("verification:revision:failed")
    assert failed.repo_id == "acme/broken" and failed.actor_username == ""
    assert failed.data["commit"] == revision.commit and failed.data["reason"] == revision.failure_reason
    assert not revision.move(Revision.State.FAILED, failure_reason="again")
    assert len(events("verification:revision:failed")) == 1
    assert not events("verification:revision:verified")


def test_a_tag_given_at_release_is_in_the_release_event_and_a_later_tag_is_its_own_event(tmp_path, chain_checked):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", release=False, verify_here=True)
    call_command("release", "acme/tiny", "--tag", "v1.0", stdout=io.StringIO())
    released = only_event("distribution:revision:released")
    assert released.data == {"commit": revision.commit, "revision_tag": "v1.0"}
    call_command("release", "acme/tiny", "--revision", revision.commit, "--tag", "v1", stdout=io.StringIO())
    retagged = only_event("distribution:revision:tagged")
    assert retagged.data == {"commit": revision.commit, "revision_tag": "v1"}
    revision.refresh_from_db()
    assert revision.tag == "v1"
