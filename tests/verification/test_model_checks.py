"""config.json against the tensors (built on the meta device), and the smoke pass."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from safetensors.torch import save_file as save_torch_file

from verification.core.checks import check_directory
from verification.core.layout import SMOKE_REFERENCE_NAME
from verification.core.tiny_llama import write_tiny_llama

SHARD = "model-00001-of-00002.safetensors"


def codes(report, name=None):
    return {c.code for c in report.failures if name is None or c.name == name}


def edit_config(checkpoint, **changes):
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(changes)
    (checkpoint / "config.json").write_text(json.dumps(config))


def set_tensor(checkpoint, name, value):
    for shard in checkpoint.glob("model-*.safetensors"):
        tensors = load_file(shard)
        if name in tensors:
            tensors[name] = np.full_like(tensors[name], value)
            save_file(tensors, shard)
            return
    raise KeyError(name)


@pytest.fixture
def checkpoint(tmp_path):
    return write_tiny_llama(tmp_path / "ckpt")


def test_a_matching_config_passes_and_the_smoke_pass_records_greedy_tokens(checkpoint):
    report = check_directory(checkpoint)
    assert report.ok, report.failures
    assert {c.code for c in report.checks if c.name in ("config", "smoke")} == {"ConfigMatches", "LogitsFinite"}
    assert report.smoke["device"] == "cpu" and len(report.smoke["greedy_next_tokens"]) == 8


def test_a_config_that_implies_other_shapes_fails(checkpoint):
    edit_config(checkpoint, intermediate_size=256)
    assert "ShapeMismatch" in codes(check_directory(checkpoint, smoke=False), "config")


def test_a_declared_dtype_the_tensors_do_not_have_fails(checkpoint):
    edit_config(checkpoint, torch_dtype="bfloat16")
    assert "DtypeMismatch" in codes(check_directory(checkpoint, smoke=False), "config")


def test_tensors_missing_or_extra_for_the_config_fail(checkpoint, tmp_path):
    edit_config(checkpoint, num_hidden_layers=3)
    assert "ParameterMissing" in codes(check_directory(checkpoint, smoke=False), "config")
    other = write_tiny_llama(tmp_path / "other")
    edit_config(other, num_hidden_layers=1)
    assert "UnexpectedTensor" in codes(check_directory(other, smoke=False), "config")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model_type": "no-such-model"}, "cannot build"),
        ({"architectures": ["EvilForCausalLM"]}, "custom model code is never run"),
        ({"num_attention_heads": 5}, "not a multiple of the number of attention heads"),
    ],
)
def test_a_config_that_cannot_be_built_fails_with_the_reason(checkpoint, changes, reason):
    edit_config(checkpoint, **changes)
    report = check_directory(checkpoint)
    failure = next(c for c in report.failures if c.code == "ConfigUnbuildable")
    assert reason in failure.message
    assert "smoke" not in {c.name for c in report.checks}  # nothing runs on a checkpoint that failed


def test_a_missing_config_fails(checkpoint):
    (checkpoint / "config.json").unlink()
    assert "ConfigMissing" in codes(check_directory(checkpoint, smoke=False))


def reference_logits(checkpoint, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    with torch.inference_mode():
        return model(ids.reshape(1, -1)).logits[0].float()


def test_reference_logits_from_the_publisher_are_compared(checkpoint):
    ids = torch.tensor([5, 17, 99, 3], dtype=torch.int64)
    save_torch_file({"input_ids": ids, "logits": reference_logits(checkpoint, ids)}, checkpoint / SMOKE_REFERENCE_NAME)
    report = check_directory(checkpoint)
    assert report.ok, report.failures
    assert "LogitsMatchReference" in {c.code for c in report.checks}
    assert report.smoke["input_ids"] == [5, 17, 99, 3] and report.smoke["logits_max_abs_diff"] < 1e-3


def test_logits_that_differ_from_the_reference_fail(checkpoint):
    ids = torch.tensor([5, 17, 99, 3], dtype=torch.int64)
    wrong = reference_logits(checkpoint, ids) + 0.5
    save_torch_file({"input_ids": ids, "logits": wrong}, checkpoint / SMOKE_REFERENCE_NAME)
    failure = next(c for c in check_directory(checkpoint).failures)
    assert failure.code == "LogitsDiffer" and "0.5" in failure.message


def test_a_model_too_large_for_the_device_fails_cleanly(checkpoint, monkeypatch):
    monkeypatch.setenv("WEIGHTGATE_SMOKE_MAX_BYTES", "100000")
    report = check_directory(checkpoint)
    failure = next(c for c in report.failures)
    assert failure.code == "ModelTooLargeForDevice" and "larger GPU" in failure.message


def test_weights_that_overflow_in_the_forward_pass_give_non_finite_logits(checkpoint):
    # Each tensor is finite, so the scan passes; their product is not.
    set_tensor(checkpoint, "model.norm.weight", 1e30)
    set_tensor(checkpoint, "lm_head.weight", 1e30)
    report = check_directory(checkpoint)
    assert report.failures and report.failures[0].code == "NonFiniteLogits"


def tiny_model_tensors(checkpoint):
    from safetensors.torch import load_file as load_torch_file

    from verification.core.model_checks import build_config

    config = build_config(json.loads((checkpoint / "config.json").read_text()))
    tensors = {}
    for shard in sorted(checkpoint.glob("model-*.safetensors")):
        tensors.update(load_torch_file(shard))
    return config, tensors


def test_the_smoke_model_holds_the_verified_tensors_themselves_not_copies(checkpoint):
    from verification.core.model_checks import model_around

    config, tensors = tiny_model_tensors(checkpoint)
    model = model_around(config, tensors, torch.device("cpu"))
    received = {tensor.data_ptr() for tensor in tensors.values()}
    assert {parameter.data_ptr() for parameter in model.parameters()} <= received
    assert all(not buffer.is_meta for buffer in model.buffers())  # the rotary tables were computed


def test_a_tied_head_shares_the_embedding_it_was_saved_without(tmp_path):
    from verification.core.model_checks import model_around

    checkpoint = write_tiny_llama(tmp_path / "tied", config_overrides={"tie_word_embeddings": True})
    config, tensors = tiny_model_tensors(checkpoint)
    assert "lm_head.weight" not in tensors
    model = model_around(config, tensors, torch.device("cpu"))
    assert model.lm_head.weight.data_ptr() == tensors["model.embed_tokens.weight"].data_ptr()
    assert check_directory(checkpoint).ok


def test_tensors_that_leave_a_parameter_unset_are_refused(checkpoint):
    from verification.core.model_checks import ConfigUnbuildable, model_around

    config, tensors = tiny_model_tensors(checkpoint)
    del tensors["model.norm.weight"]
    with pytest.raises(ConfigUnbuildable, match=r"missing \['model.norm.weight'\]"):
        model_around(config, tensors, torch.device("cpu"))
