"""`publish_checkpoint --expect-sha256 SHA256SUMS`: each file hashed as it is sent, compared with the training
cluster's digests; a difference leaves a draft that nothing verifies or serves, and says what to do."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from distribution.models import Repo, Revision
from distribution.publishing import PublishError, publish_checkpoint
from tests.support.commands import run
from tests.support.publishing import refused_draft, sha256sums
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db
SHARD = "model-00002-of-00002.safetensors"


def test_matching_digests_publish_and_each_file_keeps_the_sha256_computed_on_the_way(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    sums = sha256sums(checkpoint)
    commit = run("publish_checkpoint", str(checkpoint), "--repo", "acme/vouched", "--expect-sha256", str(sums))
    revision = Revision.objects.get(commit=commit)
    assert revision.state == Revision.State.UPLOADED
    listed = dict(reversed(line.split("  ")) for line in sums.read_text().splitlines())
    assert {f.path: f.upload_sha256 for f in revision.files.all()} == listed


def test_a_wrong_digest_is_refused_naming_the_file_and_leaves_a_draft(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    sums = sha256sums(checkpoint, wrong=SHARD)
    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command(
            "publish_checkpoint", str(checkpoint), "--repo", "acme/damaged", "--expect-sha256", str(sums), "--json",
            stdout=out,
        )  # fmt: skip
    message = str(refused.value)
    assert f"1 file(s) differ from {sums}: {SHARD} is " in message
    assert "stays a draft" in message and "copy it again from the training cluster" in message
    revision = Revision.objects.get()
    assert revision.state == Revision.State.DRAFT
    details = json.loads(out.getvalue())
    assert details["revision"] == revision.commit and details["state"] == "draft"
    assert [item["path"] for item in details["differing"]] == [SHARD]


def test_a_rerun_with_the_right_digests_finishes_the_draft_without_sending_anything_again(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    draft = refused_draft(checkpoint, "acme/second-try", wrong=SHARD)
    out = io.StringIO()
    call_command(
        "publish_checkpoint", str(checkpoint), "--repo", "acme/second-try", "--expect-sha256",
        str(sha256sums(checkpoint)), "--json", stdout=out,
    )  # fmt: skip
    result = json.loads(out.getvalue())
    assert result["revision"] == draft.commit and result["resumed"] is True
    assert result["uploaded"] == {"files": 0, "bytes": 0}
    draft.refresh_from_db()
    assert draft.state == Revision.State.UPLOADED


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda sums: sums.write_text(sums.read_text() + f"{'0' * 64}  extra.bin\n"), "missing here: extra.bin"),
        (
            lambda sums: sums.write_text("".join(sums.read_text().splitlines(True)[1:])),
            "not in ckpt.SHA256SUMS: config.json",
        ),
        (lambda sums: sums.write_text(sums.read_text() + "not a digest\n"), "is not a sha256sum line"),
    ],
)
def test_digests_that_do_not_name_the_checkpoint_are_refused_before_anything_is_written(tmp_path, change, named):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    sums = sha256sums(checkpoint)
    change(sums)
    with pytest.raises(PublishError, match=named):
        publish_checkpoint(checkpoint, "acme/mislisted", expect_sha256=sums)
    assert not Revision.objects.exists() and not Repo.objects.exists()


def test_a_sha256sums_inside_the_checkpoint_need_not_list_itself(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    inside = checkpoint / "SHA256SUMS"
    inside.write_text(sha256sums(checkpoint).read_text().replace("  ", " *", 1))  # sha256sum -b's marker too
    publication = publish_checkpoint(checkpoint, "acme/inside", expect_sha256=inside)
    assert publication.revision.state == Revision.State.UPLOADED
    assert "SHA256SUMS" in {outcome.path for outcome in publication.files}
