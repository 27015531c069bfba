"""The smoke pass on models four times its memory budget: streamed block by block on the CPU, it gives the
whole model's logits and matches the publisher's reference, whatever the architecture's details."""

import io
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from verification.core.checks import CheckpointFile, check_directory, directory_files, scan_files
from verification.core.layout import INDEX_NAME, SMOKE_REFERENCE_NAME
from verification.core.loading import TensorSink
from verification.core.model_checks import build_config, run_smoke, smoke_inputs, smoke_logits, smoke_sink
from verification.core.placement import DeviceMemory
from verification.core.report import Report
from verification.core.tiny_llama import write_tiny_llama

IDS = torch.tensor([5, 17, 99, 3, 1200, 7], dtype=torch.int64)
TWELVE_LAYERS = {"num_hidden_layers": 12}
ARCHITECTURES = {
    "grouped-query attention (4 heads, 2 for keys and values)": {},
    "tied embeddings": {"tie_word_embeddings": True, "num_hidden_layers": 16},
    "Mistral": {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 4},
    "Qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
}


def weight_bytes(checkpoint) -> int:
    return sum(path.stat().st_size for path in checkpoint.glob("model*.safetensors"))


def with_reference(checkpoint):
    """The publisher's side: transformers' own loading and forward pass of the whole model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    with torch.inference_mode():
        logits = model(IDS.reshape(1, -1)).logits[0].float()
    save_file({"input_ids": IDS, "logits": logits}, checkpoint / SMOKE_REFERENCE_NAME)
    return checkpoint


def tiny(tmp_path, name="ckpt", overrides=None, **options):
    config = {**TWELVE_LAYERS, **(overrides or {})}
    return with_reference(write_tiny_llama(tmp_path / name, config_overrides=config, **options))


def quarter_budget(monkeypatch, checkpoint) -> int:
    budget = weight_bytes(checkpoint) // 4
    monkeypatch.setenv("WEIGHTGATE_SMOKE_MAX_BYTES", str(budget))
    return budget


def logits_of(files, sink=None, **memory):
    """The smoke pass's logits and facts, from the hashing read of `files` into `sink` or the one it plans."""
    report = Report()
    sink = sink or smoke_sink(files, report, **memory)
    assert sink is not None, report.failures
    scan_files(files, sink=sink)
    by_path = {item.path: item for item in files}
    config = build_config(json.loads((by_path["config.json"].open()).read()))
    ids, _ = smoke_inputs(by_path, config)
    return smoke_logits(config, sink, ids)


def whole_logits(checkpoint):
    logits, facts = logits_of(directory_files(checkpoint, Report()), devices=[DeviceMemory("cpu", None)])
    assert facts["placement"] == "whole"
    return logits


def held_logits(checkpoint):
    """The whole model from tensors copied out of the hashing read, as a GPU gets them, run on the CPU."""
    logits, facts = logits_of(directory_files(checkpoint, Report()), sink=TensorSink(torch.device("cpu")))
    assert facts["placement"] == "whole" and facts["reread_from_files"] is False
    return logits


def smoke_check(report):
    return next(check for check in report.checks if check.name == "smoke")


def test_a_model_four_times_the_budget_is_streamed_and_matches_the_reference(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    budget = quarter_budget(monkeypatch, checkpoint)
    report = check_directory(checkpoint)
    assert report.ok, report.failures
    assert smoke_check(report).code == "LogitsMatchReference"
    smoke = report.smoke
    assert (smoke["placement"], smoke["blocks"], smoke["reread_from_files"]) == ("streamed", 15, True)
    assert smoke["held_bytes_peak"] == smoke["largest_block_bytes"] <= budget
    assert smoke["reread_bytes"] == sum(entry["numel"] * 4 for entry in report.tensors)
    assert smoke["logits_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("overrides", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_streamed_logits_are_the_whole_models_for_each_architecture(tmp_path, monkeypatch, overrides):
    checkpoint = tiny(tmp_path, overrides=overrides)
    quarter_budget(monkeypatch, checkpoint)
    report = check_directory(checkpoint)
    assert report.ok, report.failures
    assert report.smoke["placement"] == "streamed" and smoke_check(report).code == "LogitsMatchReference"
    streamed, _ = logits_of(directory_files(checkpoint, Report()))
    monkeypatch.delenv("WEIGHTGATE_SMOKE_MAX_BYTES")
    assert torch.equal(streamed, whole_logits(checkpoint))


def test_a_layer_split_over_two_shards_in_files_out_of_layer_order_streams_the_same(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path, shards=3, layout="consecutive", shard_order_seed=3)
    weight_map = json.loads((checkpoint / INDEX_NAME).read_text())["weight_map"]
    layer_shards = [{weight_map[n] for n in weight_map if n.startswith(f"model.layers.{i}.")} for i in range(12)]
    assert any(len(shards) == 2 for shards in layer_shards)
    first_shards = [min(shards) for shards in layer_shards]
    assert first_shards != sorted(first_shards)  # file names say nothing of layer order
    quarter_budget(monkeypatch, checkpoint)
    report = check_directory(checkpoint)
    assert report.ok and report.smoke["placement"] == "streamed", report.failures
    streamed, _ = logits_of(directory_files(checkpoint, Report()))
    monkeypatch.delenv("WEIGHTGATE_SMOKE_MAX_BYTES")
    assert torch.equal(streamed, whole_logits(checkpoint))


def test_remote_weights_host_memory_can_hold_are_streamed_from_the_hashing_read_never_fetched_again(tmp_path):
    checkpoint = tiny(tmp_path)
    ranges_read = []
    files = one_way_files(checkpoint, ranges_read)  # objects in storage: a second read is a second download
    quarter = weight_bytes(checkpoint) // 4
    report = Report()
    sink = smoke_sink(files, report, devices=[DeviceMemory("cpu", quarter)], host_free=weight_bytes(checkpoint) * 2)
    scan_files(files, sink=sink)
    for shard in checkpoint.glob("model*.safetensors"):
        shard.unlink()  # nothing may be read from the objects now
    run_smoke({item.path: item for item in files}, sink, report)
    assert report.ok, report.failures
    assert ranges_read == []
    assert report.smoke["placement"] == "streamed" and report.smoke["reread_from_files"] is False
    assert "held in host memory" in smoke_check(report).message


def test_local_weights_host_memory_can_hold_are_read_again_from_the_page_cache_as_hashed(tmp_path):
    checkpoint = tiny(tmp_path)
    files = directory_files(checkpoint, Report())
    quarter = weight_bytes(checkpoint) // 4
    memory = {"devices": [DeviceMemory("cpu", quarter)], "host_free": weight_bytes(checkpoint) * 2}
    logits, facts = logits_of(files, **memory)
    # The hashing read left the pages in the page cache: each block is a copy from there, not from disk.
    assert facts["placement"] == "streamed" and facts["reread_from_files"] is True
    assert facts["reread_bytes"] == weight_bytes(checkpoint) - sum(8 + header_length(p) for p in shards(checkpoint))
    assert torch.equal(logits, whole_logits(checkpoint))
    report = Report()
    sink = smoke_sink(files, report, **memory)
    scan_files(files, sink=sink)
    shard = checkpoint / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes())  # rewritten after the hashing read: no longer provably those bytes
    run_smoke({item.path: item for item in files}, sink, report)
    assert smoke_check(report).code == "ContentChanged"


def shards(checkpoint):
    return sorted(checkpoint.glob("model*.safetensors"))


def header_length(path) -> int:
    with open(path, "rb") as handle:
        return int.from_bytes(handle.read(8), "little")


def test_with_room_for_two_blocks_the_next_one_loads_while_one_runs(tmp_path):
    checkpoint = tiny(tmp_path)
    files = directory_files(checkpoint, Report())
    budget = weight_bytes(checkpoint) // 3
    logits, facts = logits_of(files, devices=[DeviceMemory("cpu", budget)], host_free=budget)
    assert facts["placement"] == "streamed" and facts["prefetch"] is True
    assert facts["largest_block_bytes"] < facts["held_bytes_peak"] <= budget
    assert torch.equal(logits, whole_logits(checkpoint))


def test_blocks_spread_over_two_devices_give_the_whole_models_logits(tmp_path):
    checkpoint = tiny(tmp_path)
    files = directory_files(checkpoint, Report())
    half = int(weight_bytes(checkpoint) * 0.8)  # neither holds the whole model with its headroom
    devices = [DeviceMemory("cpu", half), DeviceMemory("cpu:0", half)]  # two names for one device
    logits, facts = logits_of(files, devices=devices, host_free=None)
    assert facts["placement"] == "spread"
    assert [device for device, _ in facts["blocks_per_device"]] == ["cpu", "cpu:0"]
    assert sum(count for _, count in facts["blocks_per_device"]) == 15
    assert torch.equal(logits, whole_logits(checkpoint))


def test_an_architecture_without_the_llama_layout_is_refused_by_name(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path, overrides={"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    quarter_budget(monkeypatch, checkpoint)
    report = check_directory(checkpoint)
    failure = smoke_check(report)
    assert failure.code == "ArchitectureNotStreamable" and "GPT2LMHeadModel" in failure.message
    assert "transformer.layers" in failure.message and "4.2 MiB free on one GPU" in failure.message


def test_a_model_is_too_large_only_when_one_block_and_its_activations_do_not_fit(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    embedding_bytes = 2048 * 64 * 4
    monkeypatch.setenv("WEIGHTGATE_SMOKE_MAX_BYTES", str(embedding_bytes))
    failure = smoke_check(check_directory(checkpoint))
    assert failure.code == "ModelTooLargeForDevice"
    assert "the weights take 3.1 MiB" in failure.message and "model.embed_tokens, 512.0 KiB" in failure.message
    assert "cpu has 512.0 KiB free" in failure.message
    monkeypatch.setenv("WEIGHTGATE_SMOKE_MAX_BYTES", str(embedding_bytes + 256 * 1024))
    assert check_directory(checkpoint).smoke["placement"] == "streamed"


def test_a_file_changed_after_the_hashing_read_fails_the_streamed_smoke_pass(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    quarter_budget(monkeypatch, checkpoint)
    files = directory_files(checkpoint, Report())
    report = Report()
    sink = smoke_sink(files, report)
    scan_files(files, sink=sink)
    shard = checkpoint / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes())  # the same bytes, written again: the file cannot prove they are
    run_smoke({item.path: item for item in files}, sink, report)
    assert smoke_check(report).code == "ContentChanged" and shard.name in smoke_check(report).message


class OneWayStream(io.RawIOBase):
    """A stream that can only be read forward, like an S3 body."""

    def __init__(self, path):
        self.file = open(path, "rb")  # noqa: SIM115 (closed with the stream)

    def readable(self):
        return True

    def readinto(self, buffer):
        return self.file.readinto(buffer)

    def close(self):
        self.file.close()
        super().close()


def one_way_files(checkpoint, ranges_read: list | None = None) -> list[CheckpointFile]:
    def read_range(path, offset, length):
        ranges_read.append((path.name, offset, length))
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    return [
        CheckpointFile(
            item.path,
            item.size,
            lambda path=checkpoint / item.path: OneWayStream(path),
            None
            if ranges_read is None
            else lambda offset, length, path=checkpoint / item.path: read_range(path, offset, length),
        )
        for item in directory_files(checkpoint, Report())
    ]


def test_a_stream_that_cannot_seek_is_read_again_through_its_read_range(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    quarter_budget(monkeypatch, checkpoint)
    ranges_read = []
    logits, facts = logits_of(one_way_files(checkpoint, ranges_read))
    assert facts["placement"] == "streamed" and facts["reread_from_files"] is True
    assert {name for name, _, _ in ranges_read} == {p.name for p in checkpoint.glob("model-*.safetensors")}
    assert sum(length for _, offset, length in ranges_read if offset > 8) >= facts["reread_bytes"]
    monkeypatch.delenv("WEIGHTGATE_SMOKE_MAX_BYTES")
    assert torch.equal(logits, whole_logits(checkpoint))


def test_a_stream_without_read_range_is_read_forward_and_gives_the_same_logits(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    quarter_budget(monkeypatch, checkpoint)
    logits, facts = logits_of(one_way_files(checkpoint))
    assert facts["placement"] == "streamed" and facts["reread_bytes"] > 0
    monkeypatch.delenv("WEIGHTGATE_SMOKE_MAX_BYTES")
    assert torch.equal(logits, whole_logits(checkpoint))


def test_the_json_report_says_how_the_model_was_placed(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    quarter_budget(monkeypatch, checkpoint)
    smoke = json.loads(check_directory(checkpoint).to_json())["smoke"]
    assert {"placement", "blocks", "held_bytes_peak", "reread_from_files", "budget_bytes"} <= smoke.keys()
    assert os.environ["WEIGHTGATE_SMOKE_MAX_BYTES"] == str(smoke["budget_bytes"])


def test_a_config_the_planner_cannot_read_fails_the_smoke_pass_with_the_reason(tmp_path, monkeypatch):
    checkpoint = tiny(tmp_path)
    (checkpoint / "config.json").write_text("{not json")
    quarter_budget(monkeypatch, checkpoint)
    failure = smoke_check(check_directory(checkpoint))
    assert failure.code == "ConfigUnbuildable" and "config.json cannot be read" in failure.message


def test_blocks_read_into_reused_buffers_keep_their_values_while_the_next_one_loads(tmp_path):
    checkpoint = tiny(tmp_path)
    budget = weight_bytes(checkpoint) // 3  # room for two blocks: two buffers, used in turn
    logits, facts = logits_of(one_way_files(checkpoint, []), devices=[DeviceMemory("cpu", budget)], host_free=budget)
    assert facts["prefetch"] is True and facts["reread_from_files"] is True
    assert torch.equal(logits, whole_logits(checkpoint))


@pytest.mark.django_db
def test_an_s3_revision_larger_than_the_budget_is_streamed_from_ranges_of_the_versions_hashed(
    s3_endpoint, tmp_path, monkeypatch
):
    from distribution.storage import S3Storage
    from tests.support.flows import publish
    from verification.services import run_checks_stage, run_smoke_stage

    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3, config_overrides={"num_hidden_layers": 12})
    weights = sum(path.stat().st_size for path in checkpoint.glob("*.safetensors"))
    monkeypatch.setenv("WEIGHTGATE_SMOKE_MAX_BYTES", str(weights // 4))
    ranges = []
    read_range = S3Storage.read_range
    monkeypatch.setattr(S3Storage, "read_range", lambda self, *a, **k: ranges.append(a) or read_range(self, *a, **k))
    revision = publish(checkpoint, "acme/streamed-s3", "s3")
    run_checks_stage(revision.pk)
    run_smoke_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == revision.State.VERIFIED, revision.failure_reason
    smoke = revision.runs.get().report["smoke"]
    assert smoke["placement"] == "streamed" and smoke["reread_from_files"]
    assert ranges and all(length < weights for _key, _offset, length in ranges)  # block by block, never whole


@pytest.mark.django_db
def test_an_s3_object_replaced_after_its_listing_is_never_read_as_the_one_hashed(s3_endpoint, tmp_path):
    from distribution.storage import get_storage
    from tests.support.flows import publish
    from verification.core.file_tensors import ContentChanged
    from verification.core.report import Report
    from verification.services import stored_files

    revision = publish(write_tiny_llama(tmp_path / "ckpt", shards=2), "acme/replaced", "s3")
    listed = {item.path: item for item in stored_files(revision, Report())}
    shard = listed["model-00001-of-00002.safetensors"]
    assert len(shard.read_range(0, 8)) == 8
    get_storage("s3").put_bytes(f"{revision.storage_prefix}/{shard.path}", b"other weights")
    with pytest.raises(ContentChanged):
        shard.read_range(0, 8)
    with pytest.raises(ContentChanged):
        shard.open()


def test_tensors_carved_from_one_allocation_per_file_give_the_logits_of_one_allocation_each(tmp_path, monkeypatch):
    """The fits path's default (ONE_ALLOCATION_PER_FILE, measured faster on a GPU): every tensor of a file is
    a slice of one buffer, aligned for any dtype, and the model runs on them as on tensors of their own."""
    from verification.core import loading

    checkpoint = tiny(tmp_path, shards=3)
    files = directory_files(checkpoint, Report())
    sink = TensorSink(torch.device("cpu"))  # what a GPU gets, on the CPU
    scan_files(files, sink=sink)
    shards = [item for item in files if item.path.endswith(".safetensors") and "model-" in item.path]
    storages = {tensor.untyped_storage().data_ptr() for tensor in sink.buffers.values()}
    assert len(storages) == len(shards) == 3  # one allocation per file, not one per tensor
    assert all(tensor.storage_offset() % loading.CARVE_ALIGN == 0 for tensor in sink.buffers.values())
    carved = held_logits(checkpoint)
    monkeypatch.setattr(loading, "ONE_ALLOCATION_PER_FILE", False)
    per_tensor = TensorSink(torch.device("cpu"))
    scan_files(directory_files(checkpoint, Report()), sink=per_tensor)
    assert len({tensor.untyped_storage().data_ptr() for tensor in per_tensor.buffers.values()}) == len(sink.buffers)
    assert torch.equal(held_logits(checkpoint), carved)
    assert torch.equal(whole_logits(checkpoint), carved)


def test_the_whole_model_on_the_cpu_runs_on_the_files_pages_with_the_held_copys_logits(tmp_path):
    """A CPU worker with room for the whole model maps the local files the hashing read left in the page
    cache (copying every weight into fresh memory during that read made the verdict 3.8x slower); the logits
    are those of the tensors held from the hashing read, bit for bit, and match the publisher's."""
    checkpoint = tiny(tmp_path, shards=3, layout="consecutive", shard_order_seed=3)
    logits, facts = logits_of(directory_files(checkpoint, Report()), devices=[DeviceMemory("cpu", None)])
    assert (facts["placement"], facts["reread_from_files"]) == ("whole", True)
    assert facts["held_bytes_peak"] == weight_bytes(checkpoint) - sum(8 + header_length(p) for p in shards(checkpoint))
    assert torch.equal(logits, held_logits(checkpoint))
    report = check_directory(checkpoint)
    assert report.ok and smoke_check(report).code == "LogitsMatchReference", report.failures
    assert (report.smoke["placement"], report.smoke["reread_from_files"]) == ("whole", True)


@pytest.mark.parametrize("change", ["rewritten", "replaced", "deleted"])
def test_a_local_file_changed_after_the_hashing_read_fails_the_whole_models_smoke_pass(tmp_path, change):
    """The pages the CPU runs on must be the hashed bytes: a shard written again (even with the same bytes),
    another file renamed over it or the shard deleted after the hashing read is refused, naming it, and
    never run."""
    checkpoint = tiny(tmp_path)
    files = directory_files(checkpoint, Report())
    report = Report()
    sink = smoke_sink(files, report, devices=[DeviceMemory("cpu", None)])
    scan_files(files, sink=sink)
    shard = checkpoint / "model-00002-of-00002.safetensors"
    if change == "rewritten":
        shard.write_bytes(shard.read_bytes())
    elif change == "deleted":  # blamed on the model before ("SmokeFailed: FileNotFoundError")
        shard.unlink()
    else:
        other = tmp_path / "other.safetensors"
        data = bytearray(shard.read_bytes())
        data[-4:] = bytes(4)  # the last weights zeroed: what a swap between the checks and the smoke pass brings
        other.write_bytes(bytes(data))
        os.replace(other, shard)
    run_smoke({item.path: item for item in files}, sink, report)
    assert smoke_check(report).code == "ContentChanged" and shard.name in smoke_check(report).message
    assert report.smoke.get("placement") is None  # no forward pass ran on the changed bytes


@pytest.mark.parametrize("budget", ["whole", "quarter"])
def test_files_on_a_file_system_that_refuses_to_map_them_are_read_instead(tmp_path, monkeypatch, budget):
    """Some file systems refuse mmap (a FUSE mount in direct I/O mode, say): the hashing read and the smoke
    pass read such files instead of failing them as unreadable. No such file system can be mounted here, so
    mmap itself is made to refuse, with the error such a mount gives (ENODEV)."""
    import errno
    import mmap

    checkpoint = tiny(tmp_path)
    expected = whole_logits(checkpoint)
    if budget == "quarter":
        quarter_budget(monkeypatch, checkpoint)

    def refused(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", refused)
    report = check_directory(checkpoint)
    assert report.ok and smoke_check(report).code == "LogitsMatchReference", report.failures
    assert report.smoke["placement"] == ("streamed" if budget == "quarter" else "whole")
    logits, _ = logits_of(directory_files(checkpoint, Report()))
    assert torch.equal(logits, expected)
