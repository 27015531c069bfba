"""The verification pipeline around the checks: stages, claims, dead workers, release rules, re-verification."""

import hashlib
import io
import os
import signal
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from access.services import grant_access
from distribution.models import DownloadEvent, Revision
from distribution.publishing import PublishError, release_revision
from distribution.storage import get_storage
from tests.support import servers
from tests.support.flows import flip_one_bit, publish, publish_undispatched, published_tiny_llama, wait_for_verdict
from tests.support.personas import person, token_for
from verification import services as verification_services
from verification import tasks
from verification.core.model_checks import smoke_sink
from verification.core.report import REQUIRED_CHECKS
from verification.core.tiny_llama import write_tiny_llama
from verification.models import FileCheck
from verification.services import run_checks_stage, run_smoke_stage

SHARD = "model-00001-of-00002.safetensors"
# Big enough (about 1 GB) that checking it takes a few seconds, in which the worker is killed.
LARGE = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 10,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
}


def passed_checks(revision) -> set[str]:
    run = revision.runs.filter(finished_at__isnull=False).first()
    return {check.name for check in run.checks.all()} if run else set()


@pytest.fixture
def file_workers(worker_env, tmp_path_factory):
    """Three verify workers on a queue of their own, which notice a dead one within seconds."""
    env = {**worker_env, "VERIFY_HEARTBEAT_SECONDS": "1", "VERIFY_STALE_SECONDS": "3"}
    names = ("files-a", "files-b", "files-c")
    runs = [servers.worker_run("spread", tmp_path_factory.mktemp(name) / "worker.log", name=name) for name in names]
    started = dict(zip(names, servers.start_celery_workers(runs, env), strict=True))
    yield started
    for process in started.values():
        if process.poll() is None:
            servers.stop_process(process)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_halfway_through_a_file_costs_that_file_alone(worker, file_workers, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "large", shards=4, config_overrides=LARGE)
    revision = publish_undispatched(checkpoint, "acme/large")
    pending = verification_services.start_checks(revision.pk)
    for path in pending:  # what verify_revision sends, to the three workers' queue
        tasks.check_file.apply_async((revision.pk, path), queue="spread")

    def a_shard_being_checked():
        checking = FileCheck.objects.filter(
            revision=revision, state=FileCheck.State.CHECKING, path__endswith=".safetensors"
        )
        return checking.first()

    held = servers.wait_until(a_shard_being_checked, timeout=120, interval=0.01, what="a worker to take a shard")
    doomed = held.checked_by.rsplit("-", 1)[0]  # files-a, files-b or files-c (then "-<pid>@<host>")
    os.killpg(file_workers[doomed].pid, signal.SIGKILL)
    file_workers[doomed].wait()
    held.refresh_from_db()
    assert held.state == FileCheck.State.CHECKING, "the kill came too late to test anything"
    revision.refresh_from_db()
    assert revision.state == Revision.State.VERIFYING
    with pytest.raises(PublishError):
        release_revision(revision)

    def others_done():
        return not FileCheck.objects.filter(revision=revision).exclude(pk=held.pk).exclude(state="done").exists()

    servers.wait_until(others_done, timeout=180, interval=0.2, what="the live workers to check the other files")
    time.sleep(4)  # the dead worker's heartbeat goes silent
    with override_settings(VERIFY_STALE_SECONDS=3):
        assert [(work.stage, work.path) for work in tasks.requeue_stalled()] == [("file", held.path)]
    revision = wait_for_verdict(revision, timeout=180)
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason
    checks = {check.path: check for check in FileCheck.objects.filter(revision=revision)}
    assert set(checks) == {path.relative_to(checkpoint).as_posix() for path in checkpoint.iterdir()}
    assert all(check.state == FileCheck.State.DONE and check.finished_at for check in checks.values())
    # Every file checked to the end once: the dead worker's file was taken twice, the others once.
    assert {path: check.claims for path, check in checks.items()} == {
        path: 2 if path == held.path else 1 for path in checks
    }
    assert not checks[held.path].checked_by.startswith(doomed)
    assert passed_checks(revision) >= set(REQUIRED_CHECKS)
    release_revision(revision)


@pytest.mark.django_db
def test_each_file_is_stored_as_it_is_checked_and_the_last_one_judges_the_checkpoint(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=2)
    revision = publish_undispatched(checkpoint, "acme/per-file")
    pending = verification_services.start_checks(revision.pk)
    assert sorted(pending) == sorted(path.name for path in checkpoint.iterdir())
    first, *rest = pending
    verification_services.check_stored_file(revision.pk, first, worker="one")
    stored = FileCheck.objects.get(revision=revision, path=first)
    assert stored.state == FileCheck.State.DONE
    assert stored.sha256 == hashlib.sha256((checkpoint / first).read_bytes()).hexdigest()
    assert verification_services.finish_checks(revision.pk) is None  # files remain
    assert verification_services.check_stored_file(revision.pk, first, worker="two") is None  # never twice
    for path in rest:
        verification_services.check_stored_file(revision.pk, path, worker="one")
    judged = verification_services.finish_checks(revision.pk)
    assert judged.verification_stage == Revision.Stage.SMOKE_QUEUED
    assert verification_services.finish_checks(revision.pk) is None  # judged once
    assert set(FileCheck.objects.filter(revision=revision).values_list("claims", flat=True)) == {1}
    run = revision.runs.get()
    assert {check.name for check in run.checks.all()} >= {"files", "safetensors", "index", "tensors", "config"}


@pytest.mark.django_db(transaction=True)
def test_the_periodic_job_resends_an_upload_whose_message_was_lost(worker, tmp_path):
    revision = publish_undispatched(write_tiny_llama(tmp_path / "ckpt"), "acme/lost")
    Revision.objects.filter(pk=revision.pk).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    assert [(work.revision.pk, work.stage) for work in tasks.requeue_stalled()] == [(revision.pk, "checks")]
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED


@pytest.mark.django_db
def test_release_refuses_a_revision_with_a_check_that_never_ran(tmp_path):
    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/halfway", "local")
    run_checks_stage(revision.pk)  # the smoke pass never runs
    revision.refresh_from_db()
    assert revision.verification_stage == Revision.Stage.SMOKE_QUEUED
    Revision.objects.filter(pk=revision.pk).update(state=Revision.State.VERIFIED)  # as a careless edit would
    revision.refresh_from_db()
    with pytest.raises(CommandError, match="smoke never ran"):
        call_command("release", "acme/halfway", stdout=io.StringIO())
    revision.refresh_from_db()
    assert revision.state == Revision.State.VERIFIED


@pytest.mark.django_db
def test_a_claimed_stage_is_not_taken_twice(tmp_path):
    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/claimed", "local")
    assert verification_services.claim(revision.pk, Revision.Stage.CHECKS) is not None
    assert verification_services.claim(revision.pk, Revision.Stage.CHECKS) is None
    assert run_checks_stage(revision.pk) is None


@pytest.mark.django_db
def test_reverify_withdraws_a_released_revision_whose_stored_bytes_changed(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tampered", verify_here=True)
    out, progress = io.StringIO(), io.StringIO()
    call_command("reverify", "acme/tampered", stdout=out, stderr=progress)
    assert "every check passed" in out.getvalue()
    # Not a terminal: a plain line per file read, never a status line rewritten in place.
    assert f"read {SHARD}: " in progress.getvalue() and "\x1b[K" not in progress.getvalue()

    stored = get_storage("local").path(f"{revision.storage_prefix}/{SHARD}")
    flip_one_bit(stored)
    with pytest.raises(CommandError, match="failed re-verification"):
        call_command("reverify", "acme/tampered", stdout=io.StringIO())
    revision.refresh_from_db()
    assert revision.state == Revision.State.WITHDRAWN
    assert "ContentChanged" in set(revision.checks.values_list("code", flat=True))
    assert SHARD in revision.failure_reason
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    response = client.get(
        f"/acme/tampered/resolve/{revision.commit}/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}"
    )
    assert response.status_code == 404 and response["X-Error-Code"] == "RevisionNotFound"
    assert not DownloadEvent.objects.exists()


@pytest.mark.django_db
def test_reverify_all_checks_every_released_revision_of_every_repo(tmp_path):
    """After a restore every released revision needs checking: --all does them all in one run, and a
    failure in one withdraws that one only."""
    tampered, _ = published_tiny_llama(tmp_path / "a", "acme/tampered-all", verify_here=True)
    intact, _ = published_tiny_llama(tmp_path / "b", "zeta/intact-all", verify_here=True)
    draft = publish(write_tiny_llama(tmp_path / "c"), "acme/draft-all", "local")  # never verified: not a target
    flip_one_bit(get_storage("local").path(f"{tampered.storage_prefix}/{SHARD}"))
    draft_before = (draft.state, draft.runs.count())
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 revision"):
        call_command("reverify", "--all", stdout=out, stderr=io.StringIO())
    tampered.refresh_from_db()
    assert out.getvalue().splitlines() == [
        f"acme/tampered-all@{tampered.commit}: FAILED, now withdrawn: {tampered.failure_reason}",
        f"zeta/intact-all@{intact.commit}: every check passed (released)",
    ]
    states = dict(Revision.objects.values_list("pk", "state"))
    assert (states[tampered.pk], states[intact.pk]) == (Revision.State.WITHDRAWN, Revision.State.RELEASED)
    assert (states[draft.pk], draft.runs.count()) == draft_before


@pytest.mark.django_db
@pytest.mark.parametrize("arguments", [[], ["--all", "acme/tiny"], ["--all", "--revision", "abcdef1"]])
def test_reverify_needs_a_repo_or_all_alone(arguments):
    with pytest.raises(CommandError, match=r"name a repo .* or give --all alone"):
        call_command("reverify", *arguments, stdout=io.StringIO())


@pytest.mark.django_db
def test_reverify_all_with_nothing_released_says_so():
    with pytest.raises(CommandError, match="no revision is released"):
        call_command("reverify", "--all", stdout=io.StringIO())


@pytest.mark.django_db
def test_a_file_gone_while_reverify_reads_names_that_file_not_every_file_unread(tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/vanishing", verify_here=True)
    storage = get_storage("local")
    gone = "model-00002-of-00002.safetensors"

    listed_and_reading = threading.Lock()

    def take_one_away(item, read):
        # Listed, then gone before any read opens it (each read reports its start here, before it opens).
        with listed_and_reading:
            storage.path(f"{revision.storage_prefix}/{gone}").unlink(missing_ok=True)

    run = verification_services.reverify(revision, progress=take_one_away)
    failures = list(run.checks.filter(status="fail").values_list("code", "file"))
    # The one file that went is named; those still there are not called missing because the read stopped.
    assert failures == [("Unreadable", gone)]
    assert run.finished_at is not None and run.ok is False
    revision.refresh_from_db()
    assert revision.state == Revision.State.WITHDRAWN and gone in revision.failure_reason


@pytest.mark.django_db
@pytest.mark.parametrize("placement", ["whole", "streamed"])
def test_a_file_gone_between_the_checks_and_the_smoke_pass_fails_the_revision_naming_it(
    monkeypatch, tmp_path, placement
):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", config_overrides={"num_hidden_layers": 8})
    if placement == "streamed":  # the planner opens the files before the hashing read does
        weights = sum(path.stat().st_size for path in checkpoint.glob("model*.safetensors"))
        monkeypatch.setenv("WEIGHTGATE_SMOKE_MAX_BYTES", str(weights // 3))
    revision = publish(checkpoint, "acme/gone-before-smoke", "local")
    run_checks_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.verification_stage == Revision.Stage.SMOKE_QUEUED, revision.failure_reason
    gone = "model-00002-of-00002.safetensors"
    listed = verification_services.stored_files

    def listed_then_gone(*args):
        # Listed by the smoke stage, then gone before its read opens it: a file deleted mid-stage.
        files = listed(*args)
        get_storage("local").path(f"{revision.storage_prefix}/{gone}").unlink()
        return files

    planned = []
    monkeypatch.setattr(verification_services, "stored_files", listed_then_gone)
    monkeypatch.setattr(verification_services, "smoke_sink", lambda *a: planned.append(smoke_sink(*a)) or planned[0])
    run_smoke_stage(revision.pk)
    assert planned[0].placement.kind == placement
    revision.refresh_from_db()
    # A verdict, not a stage left claimed for the requeue job to retry for ever.
    assert (revision.state, revision.verification_stage) == (Revision.State.FAILED, Revision.Stage.NONE)
    assert gone in revision.failure_reason and "since the checks read it" in revision.failure_reason
    assert ("Unreadable", gone) in set(revision.checks.filter(status="fail").values_list("code", "file"))


@pytest.mark.django_db
def test_reverify_with_storage_out_of_reach_changes_nothing_and_leaves_no_run(s3_endpoint, tmp_path):
    from distribution.storage import StorageError
    from verification.models import VerificationRun

    revision, _ = published_tiny_llama(tmp_path, "acme/unreachable", "s3", verify_here=True)
    runs = set(VerificationRun.objects.values_list("pk", flat=True))
    nowhere = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    with override_settings(S3_ENDPOINT_URL=nowhere), pytest.raises(StorageError):
        verification_services.reverify(revision)
    with override_settings(S3_ENDPOINT_URL=nowhere), pytest.raises(CommandError, match="nothing changed"):
        call_command("reverify", "acme/unreachable", stdout=io.StringIO(), stderr=io.StringIO())
    assert set(VerificationRun.objects.values_list("pk", flat=True)) == runs
    revision.refresh_from_db()
    assert revision.state == Revision.State.RELEASED


@pytest.mark.django_db
def test_reverify_refuses_revisions_that_were_never_verified(tmp_path):
    publish(write_tiny_llama(tmp_path / "ckpt"), "acme/fresh", "local")
    with pytest.raises(CommandError, match="only verified or released revisions"):
        call_command("reverify", "acme/fresh", "--revision", Revision.objects.get().commit, stdout=io.StringIO())


@pytest.mark.django_db
def test_s3_revisions_are_verified_from_streams_without_a_local_copy(s3_endpoint, monkeypatch, tmp_path):
    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/streamed", "s3")

    def no_copies(*args, **kwargs):
        raise AssertionError("verification copied an object to local disk")

    monkeypatch.setattr(get_storage("s3").client, "download_file", no_copies)
    run_checks_stage(revision.pk)
    run_smoke_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason
    assert set(REQUIRED_CHECKS) <= passed_checks_any(revision)


def passed_checks_any(revision) -> set[str]:
    return set(revision.checks.exclude(status="fail").values_list("name", flat=True))


@pytest.mark.django_db
def test_the_revision_page_shows_each_check_to_reviewers_and_nobody_else(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/shown", verify_here=True)
    url = f"/acme/shown/revisions/{revision.commit}"
    assert client.get(url).status_code == 404
    client.force_login(person("alice"))
    assert client.get(url).status_code == 404
    client.force_login(person("bob", reviews=[revision.repo]))
    page = client.get(url).content.decode()
    for code in ("HeaderValid", "IndexConsistent", "ConfigMatches", "AllFinite", "LogitsFinite"):
        assert code in page
    assert "model.embed_tokens.weight" in page and "greedy next tokens" in page


@pytest.mark.django_db
def test_a_stage_past_its_soft_time_limit_fails_the_revision_instead_of_looping(tmp_path):
    from celery.exceptions import SoftTimeLimitExceeded

    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/slow", "local")
    verification_services.claim(revision.pk, Revision.Stage.CHECKS)
    with tasks.failing_when_out_of_time(revision.pk):
        raise SoftTimeLimitExceeded()
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED
    assert "VERIFY_TIME_LIMIT_SECONDS" in revision.failure_reason
