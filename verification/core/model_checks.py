"""Checks that need the model definition: config against tensors (on the meta device, nothing
allocated) and the smoke pass (a real forward on the best device there is).

torch and transformers are imported inside the functions: the rest of the checks stay light.
Custom model code shipped with a checkpoint is never run (no trust_remote_code).
"""

import os
import time

from verification.core.layout import CONFIG_NAME, SMOKE_REFERENCE_NAME, is_weight_shard, read_json
from verification.core.loading import TensorSink
from verification.core.report import PASS, Report

# Fixed token ids for the smoke pass (taken modulo the vocabulary size).
SMOKE_TOKEN_IDS = (1, 450, 4996, 17354, 1701, 432, 3151, 975)
# Elementwise tolerance |got - want| <= atol + rtol * |want| for reference logits, by weights dtype.
LOGIT_TOLERANCE = {"F32": (1e-3, 1e-3), "F16": (5e-2, 1e-2), "BF16": (1e-1, 2e-2)}
TORCH_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
# Room for activations, logits and the allocator beside the weights.
MEMORY_HEADROOM = 1.25


def dtype_name(dtype) -> str | None:
    return TORCH_DTYPE_NAMES.get(str(dtype).removeprefix("torch.")) if dtype is not None else None


class ConfigUnbuildable(Exception):
    pass


def quiet_transformers() -> None:
    """Reports carry what matters; transformers' progress bars and advice would only bury it in logs."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def build_config(config_dict: dict):
    from transformers import AutoConfig

    quiet_transformers()
    if not isinstance(config_dict, dict) or "model_type" not in config_dict:
        raise ConfigUnbuildable("config.json has no model_type")
    values = dict(config_dict)
    model_type = values.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **values)
    except Exception as error:  # transformers raises many kinds here; each means the config is unusable
        raise ConfigUnbuildable(f"transformers cannot build a {model_type!r} config: {error}") from None


def model_class(config):
    import transformers

    names = getattr(config, "architectures", None) or []
    if not names:
        return transformers.AutoModel
    cls = getattr(transformers, names[0], None)
    if cls is None:
        raise ConfigUnbuildable(
            f"architecture {names[0]!r} is not part of transformers; custom model code is never run"
        )
    return cls


def expected_parameters(config_dict: dict) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """name -> (shape, dtype) the config implies, built on the meta device so nothing is allocated."""
    import torch

    config = build_config(config_dict)
    cls = model_class(config)
    try:
        with torch.device("meta"):
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    except Exception as error:
        raise ConfigUnbuildable(f"{cls.__name__} cannot be built from this config: {error}") from None
    dtype = dtype_name(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None))
    expected = {name: (tuple(p.shape), dtype) for name, p in model.named_parameters()}
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name not in module._non_persistent_buffers_set:
                expected[f"{module_name}.{buffer_name}".lstrip(".")] = (tuple(buffer.shape), None)
    return expected


def check_config(files: dict, scans, report: Report) -> None:
    if CONFIG_NAME not in files:
        report.fail("config", "ConfigMissing", "the checkpoint has no config.json to build the model from")
        return
    try:
        expected = expected_parameters(read_json(files, CONFIG_NAME))
    except (ConfigUnbuildable, ValueError) as error:
        report.fail("config", "ConfigUnbuildable", str(error), CONFIG_NAME)
        return
    actual = {}
    for scan in scans:
        if is_weight_shard(scan.path) and scan.header is not None:
            actual.update({name: (entry.shape, entry.dtype, scan.path) for name, entry in scan.header.tensors.items()})
    before = len(report.failures)

    def listed(names) -> str:
        names = sorted(names)
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    missing = expected.keys() - actual.keys()
    if missing:
        report.fail(
            "config", "ParameterMissing", f"the config needs {len(missing)} tensors the shards lack: {listed(missing)}"
        )
    unexpected = actual.keys() - expected.keys()
    if unexpected:
        report.fail(
            "config",
            "UnexpectedTensor",
            f"{len(unexpected)} tensors are not parameters of the model: {listed(unexpected)}",
        )
    for name in sorted(expected.keys() & actual.keys()):
        (shape, dtype), (got_shape, got_dtype, file) = expected[name], actual[name]
        if shape != got_shape:
            report.fail(
                "config", "ShapeMismatch", f"{name} has shape {list(got_shape)}, the config implies {list(shape)}", file
            )
        elif dtype is not None and got_dtype != dtype:
            report.fail("config", "DtypeMismatch", f"{name} is {got_dtype}, config.json declares {dtype}", file)
    if len(report.failures) == before:
        report.add(
            "config", PASS, "ConfigMatches", f"all {len(expected)} parameters match the config in name, shape and dtype"
        )


def available_bytes(device) -> int | None:
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def smoke_sink(files, report: Report):
    """A sink on the best device for the smoke pass, or None (with the reason reported) if the model won't fit."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weight_bytes = sum(item.size for item in files if is_weight_shard(item.path))
    free = available_bytes(device)
    limit = os.environ.get("WEIGHTGATE_SMOKE_MAX_BYTES")  # an operator's cap on what the smoke pass may take
    if limit:
        free = min(free or int(limit), int(limit))
    if free is not None and weight_bytes * MEMORY_HEADROOM > free:
        report.fail(
            "smoke",
            "ModelTooLargeForDevice",
            f"the weights take {weight_bytes / 2**30:.1f} GiB and {device.type} has "
            f"{free / 2**30:.1f} GiB free; run smoke inference on a worker with a larger GPU (queue gpu)",
        )
        return None
    return TensorSink(device)


def model_around(config, tensors: dict, device):
    """The model with `tensors` as its parameters, not copies of them, so the device holds the weights once.

    Parameters are built on the meta device and then replaced by the tensors; buffers that are not
    in a checkpoint (rotary tables) are computed as usual and moved to `device`.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_class(config)._from_config(config)
    _, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    model.tie_weights()  # a tied head shares the embedding it was not saved apart from
    missing = sorted(name for name, parameter in model.named_parameters() if parameter.is_meta)
    if missing or unexpected:
        raise ConfigUnbuildable(f"the tensors do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device)


def run_smoke(files: dict, sink, report: Report) -> None:
    """Build the model around the tensors already on the device, run a fixed forward pass, judge the logits."""
    import torch

    started = time.perf_counter()
    device = sink.device
    try:
        config = build_config(read_json(files, CONFIG_NAME))
        model = model_around(config, sink.tensors(), device)
        model.eval()
        reference = None
        if SMOKE_REFERENCE_NAME in files:
            from safetensors.torch import load as load_safetensors

            with files[SMOKE_REFERENCE_NAME].open() as stream:
                reference = load_safetensors(stream.read())
            ids = reference["input_ids"].to(torch.long).reshape(1, -1)
        else:
            ids = torch.tensor([[token % config.vocab_size for token in SMOKE_TOKEN_IDS]], dtype=torch.long)
        with torch.inference_mode():
            logits = model(ids.to(device)).logits[0].float().cpu()
    except torch.cuda.OutOfMemoryError as error:
        report.fail("smoke", "ModelTooLargeForDevice", f"out of memory on {device}: {error}")
        return
    except Exception as error:  # whatever breaks the model fails the check, not the worker
        report.fail("smoke", "SmokeFailed", f"the model could not run: {type(error).__name__}: {error}")
        return
    weights_dtype = dtype_name(next(model.parameters()).dtype) or "F32"
    report.smoke = {
        "device": str(device),
        "dtype": weights_dtype,
        "input_ids": ids.reshape(-1).tolist(),
        "greedy_next_tokens": logits.argmax(dim=-1).tolist(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    nonfinite = int((~torch.isfinite(logits)).sum())
    if nonfinite:
        report.fail("smoke", "NonFiniteLogits", f"the forward pass gave {nonfinite} NaN or Inf logits")
        return
    message = f"{ids.numel()} tokens on {device}, finite logits"
    if reference is None:
        report.add("smoke", PASS, "LogitsFinite", message)
        return
    want = reference["logits"].float().reshape(logits.shape)
    atol, rtol = LOGIT_TOLERANCE.get(weights_dtype, LOGIT_TOLERANCE["BF16"])
    difference = float((logits - want).abs().max())
    report.smoke.update(logits_max_abs_diff=difference, atol=atol, rtol=rtol)
    if not torch.allclose(logits, want, atol=atol, rtol=rtol):
        report.fail(
            "smoke",
            "LogitsDiffer",
            f"logits differ from the publisher's reference by up to {difference:.4g} "
            f"(allowed {atol} + {rtol} x |reference| for {weights_dtype})",
            SMOKE_REFERENCE_NAME,
        )
        return
    report.add("smoke", PASS, "LogitsMatchReference", f"{message}, within {difference:.3g} of the reference")
