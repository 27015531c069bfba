"""Re-verification and the restore check judge what links serve: in a bucket that keeps versions, the
version verification read (a key written over since is reported, not served, and withdraws nothing), and
after a restore by copying (every VersionId new) the objects with the verified bytes, whose versions a
passing `reverify` records again. Every bucket is SeaweedFS's, with versioning on where it says so."""

import contextlib
import io

import pytest
from django.core.management import CommandError, call_command

from distribution.models import Revision
from tests.support.flows import publish_undispatched
from tests.support.personas import person, sign_in
from tests.support.publishing import s3_operations
from tests.support.servers import VERSIONED_BUCKET, s3_client
from verification import services
from verification.core.tiny_llama import write_tiny_llama
from verification.models import FileCheck

pytestmark = pytest.mark.django_db
SHARD = "model-00001-of-00002.safetensors"


def tampered_copy(original: bytes) -> bytes:
    return original[:-4] + bytes(b ^ 0xFF for b in original[-4:])  # the same size, another ETag


def reverified(repo: str = "acme/tiny") -> tuple[bool, str]:
    """(whether every revision passed, what `manage.py reverify` printed)."""
    out = io.StringIO()
    try:
        call_command("reverify", repo, stdout=out, stderr=io.StringIO())
    except CommandError as error:
        return False, out.getvalue() + str(error)
    return True, out.getvalue()


def restore_problems(repo: str = "acme/tiny") -> list[str]:
    """The lines of `manage.py check_restore` that find a problem with the repo's files."""
    out = io.StringIO()
    with contextlib.suppress(CommandError):  # it fails when it finds anything; the lines say what
        call_command("check_restore", stdout=out, stderr=io.StringIO())
    return [line for line in out.getvalue().splitlines() if line.startswith("PROBLEM") and repo in line]


def test_a_key_written_over_in_a_versioned_bucket_is_reported_and_the_verified_version_stays_released(
    versioned_s3_release, s3_endpoint, client
):
    """Before, reverify read whatever the key held and withdrew the release, though links serve the verified
    version the bucket keeps: anyone able to write to the bucket could take a release down."""
    revision, checkpoint, _token = versioned_s3_release
    stored = revision.files.get(path=SHARD)
    s3_client(s3_endpoint).put_object(
        Bucket=VERSIONED_BUCKET, Key=stored.storage_key, Body=tampered_copy((checkpoint / SHARD).read_bytes())
    )

    passed, printed = reverified()
    revision.refresh_from_db()
    assert passed and revision.state == Revision.State.RELEASED, printed
    assert f"warning: {SHARD}: {stored.storage_key} was written over or deleted after {SHARD} was verified" in printed
    assert stored.stored_version in printed  # the version to put back
    run = revision.runs.latest("id")
    assert run.ok and run.checks.filter(code="WrittenOver", status="warn", file=SHARD).exists()
    assert run.report["files"] and {f["path"]: f["sha256"] for f in run.report["files"]}[SHARD] == stored.sha256
    kept = stored.stored_version
    stored.refresh_from_db()
    assert stored.stored_version == kept  # the version verified stays the one links name

    problems = restore_problems()
    assert len(problems) == 1 and f"{SHARD} at {stored.storage_key} was written over or deleted" in problems[0]
    # The revision's page shows the warning as one, to those who may see its checks.
    sign_in(client, person("root", staff=True))
    page = client.get(f"/acme/tiny/revisions/{revision.commit}").content.decode()
    assert '<span class="state warned">warn</span>' in page and "WrittenOver" in page


def test_a_key_written_over_in_a_bucket_without_versions_is_still_withdrawn(s3_release, s3_endpoint):
    """The bytes links would serve are the new ones, so re-verification fails them (as before), and the restore
    check, which compared sizes only, names the other bytes."""
    revision, checkpoint, _token = s3_release
    stored = revision.files.get(path=SHARD)
    bucket = s3_client(s3_endpoint)
    bucket.put_object(
        Bucket=s3_endpoint.bucket, Key=stored.storage_key, Body=tampered_copy((checkpoint / SHARD).read_bytes())
    )

    problems = restore_problems()
    assert len(problems) == 1 and f"{SHARD} at {stored.storage_key} holds other bytes than were verified" in problems[0]
    passed, printed = reverified()
    revision.refresh_from_db()
    assert not passed and revision.state == Revision.State.WITHDRAWN, printed
    assert SHARD in revision.failure_reason


def test_after_a_restore_by_copying_the_restore_check_asks_for_reverify_which_records_the_new_versions(
    versioned_s3_release, s3_endpoint
):
    """A bucket restored by copying holds the verified bytes under new VersionIds: links fall back to the
    verified ETag (an MD5). The restore check says so and what to run; reverify hashes the objects, records
    their versions, and the check is clean again."""
    revision, _checkpoint, _token = versioned_s3_release
    bucket = s3_client(s3_endpoint)
    rows = list(revision.files.all())
    assert all(row.stored_version for row in rows)  # model.sig's too
    for row in rows:  # the restore: the same bytes again, then the versions verified are gone
        body = bucket.get_object(Bucket=VERSIONED_BUCKET, Key=row.storage_key)["Body"].read()
        bucket.put_object(Bucket=VERSIONED_BUCKET, Key=row.storage_key, Body=body)
        bucket.delete_object(Bucket=VERSIONED_BUCKET, Key=row.storage_key, VersionId=row.stored_version)

    problems = restore_problems()
    assert len(problems) == 1, problems
    assert f"{len(rows)} file(s)" in problems[0] and "no longer held at the S3 version verified" in problems[0]
    assert f"manage.py reverify acme/tiny --revision {revision.commit}" in problems[0]

    passed, printed = reverified()
    assert passed, printed
    for row in rows:
        row.refresh_from_db()
        assert row.stored_version == bucket.head_object(Bucket=VERSIONED_BUCKET, Key=row.storage_key)["VersionId"]
    assert restore_problems() == []


def test_a_model_sig_stored_before_its_etag_and_version_were_recorded_gets_both_from_a_passing_reverify(
    versioned_s3_release, s3_endpoint
):
    """Releases signed before this version recorded neither for their model.sig, whose links then rested on its
    size alone; a passing reverify records what it read and hashed."""
    revision, _checkpoint, _token = versioned_s3_release
    signature = revision.files.get(path="model.sig")
    head = s3_client(s3_endpoint).head_object(Bucket=VERSIONED_BUCKET, Key=signature.storage_key)
    assert (signature.stored_etag, signature.stored_version) == (head["ETag"].strip('"'), head["VersionId"])
    type(signature).objects.filter(pk=signature.pk).update(stored_etag="", stored_version="")

    passed, printed = reverified()
    assert passed, printed
    signature.refresh_from_db()
    assert (signature.stored_etag, signature.stored_version) == (head["ETag"].strip('"'), head["VersionId"])


def test_one_file_check_asks_storage_once_before_reading_and_lists_nothing(s3_endpoint, tmp_path):
    """A verify worker's check of one file looks it up by its key (a HEAD, which names the version to read
    and record); before, it listed the revision's whole prefix and then sent a HEAD as well."""
    checkpoint = write_tiny_llama(tmp_path / "checkpoint", shards=2)
    revision = publish_undispatched(checkpoint, "acme/heads", "s3")
    assert SHARD in services.start_checks(revision.pk)
    with s3_operations() as asked:
        services.check_stored_file(revision.pk, SHARD, worker="one")
    check = FileCheck.objects.get(revision=revision, path=SHARD)
    assert check.state == FileCheck.State.DONE and check.sha256 and "unreadable" not in check.scan
    assert asked.count("HeadObject") == 1 and "ListObjectsV2" not in asked, asked
    assert asked.index("HeadObject") < asked.index("GetObject")
