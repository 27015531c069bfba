"""Tasks live beside their domains; a message queued under a task's old name (`workers.tasks.*`, by a
web process or beat of an older version) still runs after the upgrade."""

import pytest

from distribution.models import Revision
from tests.support.flows import publish_undispatched, wait_for_verdict
from verification.core.tiny_llama import write_tiny_llama
from workers import tasks as old_names
from workers.celery import app

OLD_NAMES = {
    "workers.tasks.verify_revision",
    "workers.tasks.smoke_revision",
    "workers.tasks.requeue_stuck_verifications",
    "workers.tasks.send_review_digests",
    "workers.tasks.record_expired_grants",
    "workers.tasks.erase_old_origins",
    "workers.tasks.check_audit_chain",
    "workers.tasks.store_spooled_downloads",
}


def test_every_old_name_is_still_registered_and_passes_on_to_a_task_beside_its_domain():
    app.loader.import_default_modules()  # what a worker does at start: find every tasks module
    assert set(app.tasks) >= OLD_NAMES
    moved = {forwarder.name: task.name for forwarder, task in zip(old_names.FORWARDERS, old_names.MOVED, strict=True)}
    assert set(moved) == OLD_NAMES
    assert all(name.split(".")[0] in ("access", "audit", "distribution", "verification") for name in moved.values())
    routes = app.conf.task_routes
    assert routes["verification.tasks.verify_revision"] == {"queue": "verify"}
    assert routes["verification.tasks.smoke_revision"] == {"queue": "gpu"}


@pytest.mark.django_db(transaction=True)
def test_a_message_queued_under_the_old_name_still_verifies_the_revision(worker, tmp_path):
    revision = publish_undispatched(write_tiny_llama(tmp_path / "ckpt"), "acme/upgraded")
    # As the web process of the version before sent it: the old name, on the verify queue.
    app.send_task("workers.tasks.verify_revision", args=[revision.pk], queue="verify")
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED
