"""A leaked copy names its recipient, whatever the issue's threats did to it; the original, its
quantizations and another key name nobody."""

import json

import numpy as np
import pytest

from tests.tracing.conftest import read_all
from tracing import attacks
from tracing.keys import CopyKeys, TraceKey
from tracing.served import copy_digests
from tracing.tracer import OriginalCarriers, Tracer, trace

LEAKER = "grant-7"


def assert_names(result, *leakers):
    top = {suspect.recipient for suspect in result.ranked[: len(leakers)]}
    assert top == set(leakers), result.ranked[:3]
    assert {suspect.recipient for suspect in result.named} == set(leakers)
    assert min(suspect.score for suspect in result.named) >= result.threshold
    assert result.highest_other < result.threshold


@pytest.fixture(scope="module")
def leaked(release, tmp_path_factory):
    """The leaker's whole copy, as float32 tensors."""
    return read_all(release.write_copy(LEAKER, tmp_path_factory.mktemp("leaked")))


def test_a_verbatim_copy_names_its_recipient(release, tmp_path):
    result = trace([release.write_copy(LEAKER, tmp_path)], release.tracer, release.codebook)
    assert_names(result, LEAKER)
    assert result.weights_seen == result.weights_total == 163_840


def test_a_byte_exact_copy_is_named_by_its_digest_at_once(release, tmp_path):
    copy = release.write_copy(LEAKER, tmp_path)
    digests = {digest: LEAKER for digest in copy_digests(release.served_files, LEAKER, {}).values()}
    result = trace([copy / release.files[1]], release.tracer, release.codebook, issued_digests=digests)
    assert [(s.recipient, s.score) for s in result.named] == [(LEAKER, None)]


@pytest.mark.parametrize("dtype", ["F16", "F32"])
def test_a_copy_converted_to_another_dtype_names_its_recipient(release, leaked, tmp_path, dtype):
    attacks.write_safetensors(tmp_path / "model.safetensors", leaked, dtype)
    assert_names(trace([tmp_path], release.tracer, release.codebook), LEAKER)


@pytest.mark.parametrize("quantize", [attacks.int8_rows, attacks.int4_groups], ids=["int8-rows", "4bit-groups-128"])
def test_a_quantized_copy_names_its_recipient(release, leaked, tmp_path, quantize):
    quantized = {name: quantize(values) if values.ndim == 2 else values for name, values in leaked.items()}
    attacks.write_safetensors(tmp_path / "model.safetensors", quantized, "BF16")
    assert_names(trace([tmp_path / "model.safetensors"], release.tracer, release.codebook), LEAKER)


@pytest.mark.parametrize("quantization", ["F32", "F16", "Q8_0", "Q4_0"])
def test_a_gguf_copy_names_its_recipient(release, leaked, tmp_path, quantization):
    attacks.write_gguf(tmp_path / "model.gguf", leaked, quantization)
    result = trace([tmp_path / "model.gguf"], release.tracer, release.codebook)
    assert_names(result, LEAKER)
    assert result.weights_seen == 163_840


def test_a_lightly_fine_tuned_copy_names_its_recipient(release, leaked, tmp_path):
    rng = np.random.default_rng(3)
    tuned = {name: attacks.noise(values, 1e-3, rng) for name, values in leaked.items()}
    attacks.write_safetensors(tmp_path / "model.safetensors", tuned, "BF16")
    assert_names(trace([tmp_path], release.tracer, release.codebook), LEAKER)


def test_one_shard_alone_names_its_recipient(release, tmp_path):
    copy = release.write_copy(LEAKER, tmp_path)
    for file in release.files:
        result = trace([copy / file], release.tracer, release.codebook)
        assert_names(result, LEAKER)
        assert 0 < result.weights_seen < result.weights_total


def test_two_colluders_averaging_their_copies_are_both_named(release, tmp_path):
    pair = ("grant-3", "grant-11")
    copies = [release.carriers_of(recipient) for recipient in pair]
    averaged = {name: attacks.average([copy[name] for copy in copies]) for name in copies[0]}
    attacks.write_safetensors(tmp_path / "model.safetensors", averaged, "BF16")
    assert_names(trace([tmp_path], release.tracer, release.codebook), *pair)


@pytest.mark.parametrize("threat", ["verbatim", "int8-rows", "4bit-groups-128", "Q4_0", "noise"])
def test_the_original_and_its_quantizations_name_nobody(release, tmp_path, threat):
    original = read_all(release.original)
    if threat == "verbatim":
        leak = release.original
    elif threat == "Q4_0":
        leak = tmp_path / "model.gguf"
        attacks.write_gguf(leak, original, "Q4_0")
    else:
        change = {
            "int8-rows": attacks.int8_rows,
            "4bit-groups-128": attacks.int4_groups,
            "noise": lambda values: attacks.noise(values, 1e-3, np.random.default_rng(5)),
        }[threat]
        leak = tmp_path / "model.safetensors"
        attacks.write_safetensors(leak, {n: change(v) if v.ndim == 2 else v for n, v in original.items()})
    result = trace([leak], release.tracer, release.codebook)
    assert result.named == [] and result.highest_other < result.threshold


def test_tracing_with_another_key_names_nobody(release, tmp_path):
    other = CopyKeys(TraceKey(b"another key, rotated out......!!"), release.keys.repo, release.keys.revision)
    tracer = Tracer(OriginalCarriers.from_directory(release.original, release.carriers), other)
    result = trace([release.write_copy(LEAKER, tmp_path)], tracer, release.codebook.recipients)
    assert result.key_id == other.key_id != release.keys.key_id
    assert result.named == [] and result.highest_other < result.threshold


def test_a_shard_without_carriers_names_nobody_and_says_it_saw_none(release, tmp_path):
    embeddings = read_all(release.original)["model.embed_tokens.weight"]
    attacks.write_safetensors(tmp_path / "embeddings.safetensors", {"model.embed_tokens.weight": embeddings})
    result = trace([tmp_path], release.tracer, release.codebook)
    assert result.named == [] and result.weights_seen == 0


def test_the_result_reads_as_json(release, tmp_path):
    result = trace([release.write_copy(LEAKER, tmp_path)], release.tracer, release.codebook, threshold=12.5)
    document = json.loads(json.dumps(result.to_json()))
    assert document["threshold"] == 12.5 and document["named"][0]["recipient"] == LEAKER
    assert document["key_id"] == release.keys.key_id and len(document["ranked"]) == 10
