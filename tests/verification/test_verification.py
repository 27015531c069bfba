"""Checks on a checkpoint directory (CLI and library), and the worker that records them on a revision."""

import io
import json
import pickle
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from distribution.models import Revision
from tests.support.flows import publish, wait_for_verdict
from tests.support.servers import REPO_ROOT
from verification.core.checks import check_directory
from verification.core.layout import INDEX_NAME
from verification.core.tiny_llama import write_tiny_llama

SHARD = "model-00001-of-00002.safetensors"


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "verification", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def failure_codes(directory) -> set[str]:
    return {check.code for check in check_directory(directory).failures}


def test_a_good_checkpoint_passes_and_the_cli_exits_zero(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ok")
    result = cli(checkpoint, "--json", "--no-smoke")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {"name", "status", "code", "file", "message"} <= set(report["checks"][0])
    assert "smoke" not in {check["name"] for check in report["checks"]}  # --no-smoke is honoured
    with_smoke = json.loads(cli(checkpoint, "--json").stdout)
    assert ("smoke", "LogitsFinite") in {(check["name"], check["code"]) for check in with_smoke["checks"]}


def test_a_truncated_shard_fails_with_its_code_and_exit_one(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "cut")
    shard = checkpoint / SHARD
    shard.write_bytes(shard.read_bytes()[:-1000])
    result = cli(checkpoint, "--json")
    assert result.returncode == 1
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert ("MetadataIncompleteBuffer", SHARD) in {(c["code"], c["file"]) for c in failed}


def test_unreadable_input_exits_two(tmp_path):
    assert cli(tmp_path / "absent").returncode == 2
    assert cli().returncode == 2


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "model.ckpt"])
def test_pickle_weights_fail_without_being_opened(tmp_path, name):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    (checkpoint / name).write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert "PickleWeights" in failure_codes(checkpoint)


def test_a_pickle_under_an_innocent_name_is_recognised_by_its_bytes(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    (checkpoint / "tokenizer.model").write_bytes(pickle.dumps(object))
    assert "PickleWeights" in failure_codes(checkpoint)


def test_a_symbolic_link_fails(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    (checkpoint / "extra.json").symlink_to("/etc/hostname")
    assert "Symlink" in failure_codes(checkpoint)


def rewrite_index(checkpoint, change):
    index = json.loads((checkpoint / INDEX_NAME).read_text())
    change(index)
    (checkpoint / INDEX_NAME).write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda index: index["weight_map"].pop("lm_head.weight"), "TensorNotInIndex"),
        (lambda index: index["weight_map"].update({"model.extra.weight": SHARD}), "TensorMissing"),
        (
            lambda index: index["weight_map"].update({"lm_head.weight": "model-00009-of-00009.safetensors"}),
            "ShardMissing",
        ),
        (lambda index: index["metadata"].update(total_size=index["metadata"]["total_size"] + 4), "TotalSizeMismatch"),
    ],
)
def test_index_disagreements_with_the_shards_fail(tmp_path, change, code):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    rewrite_index(checkpoint, change)
    assert code in failure_codes(checkpoint)


def test_a_missing_shard_is_named(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3)
    (checkpoint / "model-00002-of-00003.safetensors").unlink()
    assert "ShardMissing" in failure_codes(checkpoint)


def test_a_tensor_in_two_shards_fails(tmp_path):
    from safetensors.numpy import load_file, save_file

    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    first = load_file(checkpoint / SHARD)
    second_path = checkpoint / "model-00002-of-00002.safetensors"
    second = load_file(second_path)
    name = next(iter(first))
    save_file({**second, name: first[name]}, second_path)
    assert "TensorInTwoShards" in failure_codes(checkpoint)


@pytest.mark.django_db(transaction=True)
def test_the_worker_fails_a_corrupt_revision_and_release_refuses_it(worker, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    shard = checkpoint / SHARD
    shard.write_bytes(shard.read_bytes() + b"trailing")
    revision = wait_for_verdict(publish(checkpoint, "acme/broken", "local"))
    assert revision.state == Revision.State.FAILED
    assert SHARD in revision.failure_reason
    failed = {(check.code, check.file) for check in revision.checks.filter(status="fail")}
    assert ("MetadataIncompleteBuffer", SHARD) in failed
    with pytest.raises(CommandError, match="failed, not verified"):
        call_command("release", "acme/broken", "--revision", revision.commit, stdout=io.StringIO())
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED


def test_a_zip_of_a_pickle_under_any_name_fails_unopened(tmp_path):
    import torch

    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    torch.save({"weights": torch.zeros(3)}, checkpoint / "extra_state.data")  # torch.save writes a zip of pickles
    failures = [c for c in check_directory(checkpoint, smoke=False).failures if c.code == "PickleWeights"]
    assert [c.file for c in failures] == ["extra_state.data"]


def test_paths_that_escape_the_checkpoint_fail(tmp_path):
    import io as _io

    from verification.core.checks import CheckpointFile, check_files

    def opener():
        return _io.BytesIO(b"{}")

    files = [
        CheckpointFile("../outside.json", 2, opener),
        CheckpointFile("/etc/passwd", 2, opener),
        CheckpointFile("a/./b.json", 2, opener),
    ]
    report = check_files(files, smoke=False)
    escaped = sorted(c.file for c in report.failures if c.code == "PathEscapes")
    assert escaped == ["../outside.json", "/etc/passwd", "a/./b.json"]


def test_the_cli_exits_2_naming_a_file_that_vanished_after_it_was_listed(tmp_path, monkeypatch, capsys):
    from verification.core import checks, cli

    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    gone = "model-00002-of-00002.safetensors"
    listed = checks.directory_files

    def listed_then_gone(root, report):
        # Listed, then deleted before the read opens it: what a file removed during the check does.
        files = listed(root, report)
        (root / gone).unlink()
        return files

    monkeypatch.setattr(checks, "directory_files", listed_then_gone)
    assert cli.main([str(checkpoint), "--no-smoke", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no report: --json readers never get half of one
    assert err.startswith(f"error: {gone} could not be read: ") and "No such file" in err
