"""The audit chain against a person who can write to the database: the chain is keyed (an edit cannot be
re-chained without the key), its head is anchored outside the database in signed statements (a re-chained
or cut log disagrees with them), addresses are checked against their keyed digest, and every break is
reported, not only the first. Each test makes the edit an attacker would, with direct database writes."""

import base64
import io
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command
from django.test import override_settings

from audit import anchors
from audit.chain import HEAD, breaks, record
from audit.models import GENESIS, AuditChainHead, AuditEvent, key_id
from distribution.storage import get_storage
from portal.anchors import anchor_head
from tests.support.personas import person
from tests.support.servers import wait_until


def emptied_anchors():
    """Anchors are files in the checkpoint storage, which outlives a test's database: none before or after."""
    storage = get_storage()
    storage.delete_prefix(anchors.PREFIX)
    yield storage
    storage.delete_prefix(anchors.PREFIX)


@pytest.fixture
def anchor_store():
    yield from emptied_anchors()


@pytest.fixture
def s3_anchor_store(s3_endpoint, settings):
    settings.STORAGE_BACKEND = "s3"  # as the workers the suite starts store (their S3_BUCKET is set)
    yield from emptied_anchors()


@pytest.fixture
def five_events(db, anchor_store):
    alice = person("alice")
    for number in range(5):
        record("access:request:submitted", actor=alice, subject=alice, number=number)
    return list(AuditEvent.objects.order_by("sequence"))


def verify(*arguments) -> str:
    out = io.StringIO()
    call_command("verify_audit_chain", *arguments, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*arguments) -> str:
    errors = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("verify_audit_chain", *arguments, stdout=io.StringIO(), stderr=errors)
    return str(raised.value) + "\n" + errors.getvalue()


def rechain(events: list[AuditEvent], *, keyed: bool) -> None:
    """What an attacker does after an edit: recompute every hash from the first event on, and the head."""
    previous = GENESIS
    for event in events:
        event.previous_hash = previous
        if not keyed:
            event.chain_key = ""  # the chain as it was before keys: plain sha256 anyone can recompute
        event.hash = previous = event.compute_hash()
        AuditEvent.objects.filter(pk=event.pk).update(
            data=event.data, previous_hash=event.previous_hash, hash=event.hash, chain_key=event.chain_key
        )
    AuditChainHead.objects.filter(pk=HEAD).update(sequence=events[-1].sequence, last_hash=previous)


def test_new_events_are_chained_with_the_key_from_the_environment(five_events, settings):
    old_key = settings.AUDIT_CHAIN_KEY
    assert {event.chain_key for event in five_events} == {key_id(old_key)}
    with override_settings(AUDIT_CHAIN_KEY="another key altogether"):
        assert any("neither AUDIT_CHAIN_KEY nor in AUDIT_CHAIN_KEY_FALLBACKS" in problem for problem in breaks())
        with override_settings(AUDIT_CHAIN_KEY_FALLBACKS=[old_key]):
            assert breaks() == []  # a rotated key keeps verifying the events it chained
            record("access:token:created")
            assert breaks() == []


def test_an_edit_rechained_without_the_key_is_caught(five_events):
    edited = five_events[2]
    edited.data = {"number": 99}
    rechain(five_events[2:], keyed=False)  # the old, unkeyed chain: this passed verification before
    assert "event 3 is chained without the key after keyed events" in refused()


def test_events_chained_before_the_key_existed_still_verify(db, anchor_store):
    record("access:token:created", number=1)
    legacy = list(AuditEvent.objects.all())
    rechain(legacy, keyed=False)  # as a portal before this version wrote them
    record("access:token:created", number=2)
    assert "intact (2 events); 1 of them were chained before the chain was keyed" in verify()


def test_an_edit_rechained_with_the_key_disagrees_with_the_anchor(five_events):
    assert anchor_head() == anchors.name_for(5)
    edited = five_events[1]
    edited.data = {"number": 42}
    rechain(five_events, keyed=True)  # someone who also holds the chain key
    assert breaks() == [
        f"event 5 is not the one anchored at {anchored_at(5)}: "
        "the chain up to it was rewritten and its hashes recomputed"
    ]


def test_a_cut_tail_disagrees_with_the_anchor(five_events):
    anchor_head()
    AuditEvent.objects.filter(sequence__gte=4).delete()
    AuditChainHead.objects.filter(pk=HEAD).update(sequence=3, last_hash=five_events[2].hash)
    assert "the chain ends at event 3, but event 5 was anchored" in refused()


def test_every_break_is_reported_not_only_the_first(five_events):
    AuditEvent.objects.filter(sequence=2).update(data={"number": 20})
    AuditEvent.objects.filter(sequence=4).update(data={"number": 40})
    message = refused()
    assert "2 problem(s)" in message
    assert "event 2 (access:request:submitted) was edited" in message
    assert "event 4 (access:request:submitted) was edited" in message


def test_an_address_changed_beside_the_chain_is_caught(db, anchor_store):
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_USER_AGENT="curl/8", REMOTE_ADDR="203.0.113.9")
    event = record("access:token:created", request=request)
    assert breaks() == []
    AuditEvent.objects.filter(pk=event.pk).update(ip="198.51.100.7")  # blame someone else
    assert "event 1 (access:token:created): its address or user agent was changed" in refused()


def test_a_forged_anchor_is_named(five_events, anchor_store):
    anchor_head()
    name = f"{anchors.PREFIX}/{anchors.name_for(5)}"
    with anchor_store.open(name) as handle:
        document = json.loads(handle.read())
    statement = json.loads(document["payload"])
    statement["hash"] = "f" * 64
    document["payload"] = json.dumps(statement, sort_keys=True)  # the signature no longer covers it
    anchor_store.put_bytes(name, json.dumps(document).encode())
    assert f"anchor {anchors.name_for(5)} is not signed by a key of this portal" in refused()


def test_the_head_is_anchored_once_until_it_moves(five_events, anchor_store):
    assert anchor_head() == anchors.name_for(5)
    assert anchor_head() is None
    record("access:token:created")
    assert anchor_head() == anchors.name_for(6)
    assert sorted(anchor_store.stored_objects(anchors.PREFIX)) == [anchors.name_for(5), anchors.name_for(6)]
    assert "it agrees with the 2 anchors in storage" in verify()


def test_auditors_fetch_anchors_and_check_them_with_the_published_key(five_events, client):
    anchor_head()
    record("access:token:created")
    anchor_head()
    page = client.get("/api/v1/audit/anchors/").json()
    assert [anchor["sequence"] for anchor in page["anchors"]] == [5, 6] and page["next"] is None
    for anchor in page["anchors"]:
        document = json.loads(anchor["document"])
        pem = client.get(f"/api/v1/signing-keys/{document['key']}.pem").content
        public_key = serialization.load_pem_public_key(pem)
        signature = base64.b64decode(document["signature"])
        public_key.verify(signature, document["payload"].encode(), ec.ECDSA(hashes.SHA256()))  # raises if forged
        statement = json.loads(document["payload"])
        assert statement["hash"] == AuditEvent.objects.get(sequence=statement["sequence"]).hash
    assert [a["sequence"] for a in client.get("/api/v1/audit/anchors/?after=5").json()["anchors"]] == [6]
    refused_page = client.get("/api/v1/audit/anchors/?after=-1")
    assert refused_page.status_code == 400 and "is not an event sequence number" in refused_page.json()["error"]


def test_an_auditors_copies_catch_what_was_cut_from_storage_too(five_events, anchor_store, client, tmp_path):
    anchor_head()
    for anchor in client.get("/api/v1/audit/anchors/").json()["anchors"]:
        (tmp_path / anchor["name"]).write_text(anchor["document"])
    # Someone who can write to the database and to storage cuts the tail and the anchors that name it.
    AuditEvent.objects.filter(sequence__gte=4).delete()
    AuditChainHead.objects.filter(pk=HEAD).update(sequence=3, last_hash=five_events[2].hash)
    anchor_store.delete_prefix(anchors.PREFIX)
    assert "intact" in verify()
    assert "the chain ends at event 3, but event 5 was anchored" in refused("--anchors", str(tmp_path))


def test_the_daily_check_mails_breaks_the_anchors_find(five_events, mailoutbox):
    from audit.tasks import check_audit_chain

    person("root", staff=True)
    anchor_head()
    five_events[0].data = {"number": -1}
    rechain(five_events, keyed=True)
    problem = check_audit_chain.apply().get()
    assert "event 5 is not the one anchored" in problem
    assert "event 5 is not the one anchored" in mailoutbox[0].body


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_worker_anchors_the_head_in_s3_on_the_queue_that_holds_the_signing_key(worker, s3_anchor_store):
    from portal.tasks import anchor_audit_chain
    from workers.celery import app

    assert app.amqp.router.route({}, anchor_audit_chain.name)["queue"].name == "gpu"
    record("access:token:created")
    record("access:token:created")
    anchor_audit_chain.delay()
    wait_until(lambda: s3_anchor_store.stored_objects(anchors.PREFIX), timeout=60, what="the worker's anchor")
    assert sorted(s3_anchor_store.stored_objects(anchors.PREFIX)) == [anchors.name_for(2)]
    assert breaks() == []


def anchored_at(sequence: int) -> str:
    with get_storage().open(f"{anchors.PREFIX}/{anchors.name_for(sequence)}") as handle:
        return json.loads(json.loads(handle.read())["payload"])["at"]
