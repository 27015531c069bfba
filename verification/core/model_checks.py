"""Checks that need the model definition: config against tensors (on the meta device, nothing
allocated) and the smoke pass (a real forward on the best device there is).

The smoke pass runs wherever the model fits (verification.core.placement): whole on one device,
spread over several, or streamed block by block through one (verification.core.streaming), its
weights held in host memory since the hashing read or read again from the files
(verification.core.file_tensors). The sink that `smoke_sink` returns carries that decision from the
hashing read to `run_smoke`.

torch and transformers are imported inside the functions: the rest of the checks stay light.
Custom model code shipped with a checkpoint is never run (no trust_remote_code).
"""

import contextlib
import itertools
import math
import os
import time

from machine.cpus import usable_cpus
from machine.memory import available_host_bytes
from verification.core.blocks import (
    ArchitectureNotStreamable,
    block_tensor_names,
    decoder_blocks,
    model_layout,
    tensor_sources,
)
from verification.core.file_tensors import ContentChanged, FileTensors, file_identities
from verification.core.layout import CONFIG_NAME, SMOKE_REFERENCE_NAME, is_weight_shard, read_json
from verification.core.loading import TensorSink, dominant_dtype, meta_tensors
from verification.core.placement import (
    MEMORY_HEADROOM,
    SPREAD,
    STREAMED,
    WHOLE,
    DeviceMemory,
    ModelTooLarge,
    Placement,
    place_model,
)
from verification.core.report import PASS, Report
from verification.core.safetensors_format import SafetensorsError, parse_header_bytes
from verification.core.sizes import format_bytes
from verification.core.streaming import BlockStream, inputs_follow, move_buffers

# Fixed token ids for the smoke pass (taken modulo the vocabulary size).
SMOKE_TOKEN_IDS = (1, 450, 4996, 17354, 1701, 432, 3151, 975)
# Elementwise tolerance |got - want| <= atol + rtol * |want| for reference logits, by weights dtype.
LOGIT_TOLERANCE = {"F32": (1e-3, 1e-3), "F16": (5e-2, 1e-2), "BF16": (1e-1, 2e-2)}
TORCH_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


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


def check_config(files: dict, scans, report: Report, *, allow_code: bool = False) -> None:
    if CONFIG_NAME not in files:
        report.fail("config", "ConfigMissing", "the checkpoint has no config.json to build the model from")
        return
    try:
        config = read_json(files, CONFIG_NAME)
        if isinstance(config, dict) and config.get("auto_map") and not allow_code:
            report.fail(
                "config",
                "CodeNotAllowed",
                "config.json names model code to run (auto_map), which runs on every recipient's machine under "
                "trust_remote_code; this repo does not allow code (staff can allow it in the repo's settings)",
                CONFIG_NAME,
            )
            return
        expected = expected_parameters(config)
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
    return available_host_bytes()  # within a container's limit too


def capped(free: int | None) -> int | None:
    """What the smoke pass may take of a device: its free memory, below the operator's cap if set."""
    limit = os.environ.get("WEIGHTGATE_SMOKE_MAX_BYTES")
    if not limit:
        return free
    return min(free if free is not None else int(limit), int(limit))


def smoke_devices() -> list[DeviceMemory]:
    """This machine's devices for the smoke pass: every GPU, or else the CPU."""
    import torch

    if torch.cuda.is_available():
        devices = [torch.device("cuda", number) for number in range(torch.cuda.device_count())]
    else:
        devices = [torch.device("cpu")]
    return [DeviceMemory(str(device), capped(available_bytes(device))) for device in devices]


def host_bytes(devices: list[DeviceMemory]) -> int | None:
    """What host memory may hold of the weights while they wait: on a CPU worker, the CPU's own budget."""
    import torch

    cpu = next((memory for memory in devices if memory.device == "cpu"), None)
    return cpu.free if cpu is not None else available_bytes(torch.device("cpu"))


def smoke_sink(files, report: Report, *, devices: list[DeviceMemory] | None = None, host_free: int | None = None):
    """A sink for the smoke pass, placed where the model will run, or None with the reason reported.

    `devices` and `host_free` default to this machine's (each device capped by
    WEIGHTGATE_SMOKE_MAX_BYTES); tests and benchmarks pass made-up ones.
    """
    weight_bytes = sum(item.size for item in files if is_weight_shard(item.path))
    if devices is None:
        devices = smoke_devices()
        host_free = host_bytes(devices)
    try:
        placement = place_model(weight_bytes, devices, host_free, lambda: planned_blocks(files, weight_bytes))
    except ModelTooLarge as error:
        report.fail("smoke", "ModelTooLargeForDevice", str(error))
        return None
    except (ArchitectureNotStreamable, ConfigUnbuildable) as error:
        best = max(devices, key=lambda memory: memory.free or 0)
        report.fail(
            "smoke",
            "ArchitectureNotStreamable" if isinstance(error, ArchitectureNotStreamable) else "ConfigUnbuildable",
            f"the weights take {format_bytes(weight_bytes)} and {best.device} has {format_bytes(best.free or 0)} "
            f"free, too little for the whole model, and it cannot be streamed block by block: {error}. "
            f"Run the smoke pass on a worker with {format_bytes(weight_bytes * MEMORY_HEADROOM)} free on one GPU",
        )
        return None
    return sink_for(placement, files)


def planned_blocks(files, weight_bytes: int):
    """The model's blocks and their sizes, from config.json (built on the meta device)."""
    by_path = {item.path: item for item in files}
    if CONFIG_NAME not in by_path:
        raise ConfigUnbuildable("the checkpoint has no config.json to find the blocks in")
    try:
        config = build_config(read_json(by_path, CONFIG_NAME))
    except ValueError as error:
        raise ConfigUnbuildable(f"config.json cannot be read: {error}") from None
    try:
        model = empty_model(config)
    except Exception as error:  # transformers raises many kinds here; each means the config is unusable
        raise ConfigUnbuildable(f"{type(error).__name__}: {error}") from None
    return model_layout(model, weight_bytes, smoke_token_count(by_path))


def smoke_token_count(files: dict) -> int:
    """How many tokens the forward pass will take: the publisher's reference input, or the fixed ids."""
    if SMOKE_REFERENCE_NAME not in files:
        return len(SMOKE_TOKEN_IDS)
    item = files[SMOKE_REFERENCE_NAME]
    try:
        with item.open() as stream:
            prefix = stream.read(8)
            prefix += stream.read(int.from_bytes(prefix, "little")) if len(prefix) == 8 else b""
        shape = parse_header_bytes(prefix, item.size).tensors["input_ids"].shape
    except (SafetensorsError, KeyError, ValueError):
        return len(SMOKE_TOKEN_IDS)  # the smoke pass itself reports the broken reference
    return max(math.prod(shape), 1)


def sink_for(placement: Placement, files):
    """Where the hashing read puts the tensors for this placement."""
    import torch

    if placement.kind == SPREAD:
        return TensorSink(torch.device(placement.device), placement=placement, device_for=spread_device_for(placement))
    mapped_for_cpu = placement.kind == WHOLE and placement.device == "cpu"
    if placement.kind == STREAMED or mapped_for_cpu:
        identities = file_identities(files)
        weight_files = [item.path for item in files if is_weight_shard(item.path)]
        local = all(identities.get(path) is not None for path in weight_files)
        # Local files stay in the page cache the hashing read left. The CPU runs the model on those very
        # pages (mapped, no copy: copying every weight into fresh memory during the scan made the verdict
        # 3.8x slower, bench/results/verify-cpu.md); a streamed pass reads each block from there.
        if local or (placement.kind == STREAMED and placement.reread):
            return FileTensors(files, torch.device(placement.device), placement, identities)
    if placement.kind == STREAMED:
        return TensorSink(torch.device("cpu"), placement=placement)
    return TensorSink(torch.device(placement.device), placement=placement)


def spread_device_for(placement: Placement):
    import torch

    prefixes = [(name + ".", torch.device(device)) for name, device in placement.block_devices]

    def device_for(tensor_name: str):
        return next((device for prefix, device in prefixes if tensor_name.startswith(prefix)), None)

    return device_for


def empty_model(config):
    """The model with its parameters on the meta device (nothing allocated) and its buffers computed."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_class(config)._from_config(config)
    model.tie_weights()
    return model


def model_with(config, tensors: dict):
    """The model with `tensors` as its parameters, not copies of them; a tied head shares the embedding."""
    model = empty_model(config)
    _, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    model.tie_weights()  # a tied head shares the embedding it was not saved apart from
    sources = tensor_sources(model, tensors.keys())
    missing = sorted(name for name, _ in model.named_parameters(remove_duplicate=False) if name not in sources)
    if missing or unexpected:
        raise ConfigUnbuildable(f"the tensors do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def model_around(config, tensors: dict, device):
    """The model with `tensors` as its parameters, not copies of them, so the device holds the weights once.

    Parameters are built on the meta device and then replaced by the tensors; buffers that are not
    in a checkpoint (rotary tables) are computed as usual and moved to `device`.
    """
    return model_with(config, tensors).to(device)


def whole_forward(config, sink, placement: Placement, ids):
    import torch

    device = torch.device(placement.device)
    model = model_around(config, sink.tensors(), device)
    weights = sum(entry.nbytes for entry in sink.entries.values())
    facts = {"placement": WHOLE, "held_bytes_peak": weights, "reread_from_files": isinstance(sink, FileTensors)}
    return forward(model, ids, device), facts


def spread_forward(config, sink, placement: Placement, ids):
    """Each block's weights on its own device (put there by the hashing read); inputs follow them."""
    import torch

    model = model_with(config, sink.tensors())
    first = torch.device(placement.device)
    move_buffers(model, first)
    on_devices = blocks_on_their_devices(model, dict(placement.block_devices))
    with inputs_follow(on_devices):
        logits = forward(model, ids, first)
    shares = [[device, len(list(run))] for device, run in itertools.groupby(d for _, d in placement.block_devices)]
    return logits, {"placement": SPREAD, "blocks": len(on_devices), "blocks_per_device": shares}


def blocks_on_their_devices(model, block_devices: dict) -> list:
    """(block, device) for each block, with every parameter and buffer of the block on that device."""
    import torch

    on_devices = []
    for name, module in decoder_blocks(model):
        device = torch.device(block_devices[name])
        for owner in module.modules():
            for leaf, parameter in owner._parameters.items():
                if parameter is not None and parameter.device != device:  # a tied head: its own copy
                    owner._parameters[leaf] = torch.nn.Parameter(parameter.to(device), requires_grad=False)
        move_buffers(module, device)
        on_devices.append((module, device))
    return on_devices


def streamed_forward(config, sink, placement: Placement, ids):
    """One block's weights on the device at a time (two while the next one loads)."""
    import torch

    device = torch.device(placement.device)
    model = model_with(config, meta_tensors(sink.entries))
    move_buffers(model, device)
    blocks = decoder_blocks(model)
    names = block_tensor_names(blocks, tensor_sources(model, sink.entries.keys()))
    stream = BlockStream(blocks, names, sink, device, prefetch=placement.prefetch)
    with stream.hooks():
        logits = forward(model, ids, device)
    facts = {
        "placement": STREAMED,
        "blocks": len(blocks),
        "largest_block_bytes": max(stream.block_bytes),
        "held_bytes_peak": stream.peak_bytes,
        "prefetch": placement.prefetch,
        "reread_from_files": isinstance(sink, FileTensors),
    }
    if facts["reread_from_files"]:
        facts["reread_bytes"] = sink.reread_bytes
    return logits, facts


def forward(model, ids, device):
    import torch

    model.eval()
    with torch.inference_mode():
        return model(ids.to(device), use_cache=False).logits[0].float().cpu()


FORWARDS = {WHOLE: whole_forward, SPREAD: spread_forward, STREAMED: streamed_forward}


def placement_of(sink) -> Placement:
    """The sink's placement; a sink made without one holds the whole model on its device."""
    return sink.placement or Placement(WHOLE, str(sink.device), None)


def smoke_logits(config, sink, ids):
    """The logits of the fixed tokens, and what the run did (placement, bytes held on the device)."""
    import torch

    placement = placement_of(sink)
    device = torch.device(placement.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sink.open()
    try:
        logits, facts = FORWARDS[placement.kind](config, sink, placement, ids)
    finally:
        sink.close()
    if device.type == "cuda":
        facts["device_bytes_peak"] = torch.cuda.max_memory_allocated(device)
    if placement.free is not None:
        facts["budget_bytes"] = placement.free
    return logits, facts


def smoke_inputs(files: dict, config):
    """The token ids to run, and the publisher's reference logits when the checkpoint ships them."""
    import torch

    if SMOKE_REFERENCE_NAME not in files:
        ids = torch.tensor([[token % config.vocab_size for token in SMOKE_TOKEN_IDS]], dtype=torch.long)
        return ids, None
    from safetensors.torch import load as load_safetensors

    with files[SMOKE_REFERENCE_NAME].open() as stream:
        reference = load_safetensors(stream.read())
    return reference["input_ids"].to(torch.long).reshape(1, -1), reference


def how_it_ran(facts: dict, device) -> str:
    """A clause for the check's message, which the revision page shows: how the model was placed."""
    if facts["placement"] == SPREAD:
        shares = ", ".join(f"{count} on {name}" for name, count in facts["blocks_per_device"])
        return f" (spread: {facts['blocks']} blocks, {shares})"
    if facts["placement"] == STREAMED:
        source = "re-read from the files" if facts["reread_from_files"] else "held in host memory"
        return (
            f" (streamed: {facts['blocks']} blocks, at most {format_bytes(facts['held_bytes_peak'])} of weights "
            f"on {device} at once, {source})"
        )
    return ""


def run_smoke(files: dict, sink, report: Report) -> None:
    """Run a fixed forward pass where the sink's placement says (whole, spread or streamed), judge the logits."""
    import torch

    started = time.perf_counter()
    device = placement_of(sink).device
    if device == "cpu":  # torch counts the cores it may run on, not the container's CPU quota
        torch.set_num_threads(min(torch.get_num_threads(), usable_cpus()))
        if torch.get_num_interop_threads() > usable_cpus():
            with contextlib.suppress(RuntimeError):  # settable once per process, before any inter-op work
                torch.set_num_interop_threads(usable_cpus())
    try:
        config = build_config(read_json(files, CONFIG_NAME))
        ids, reference = smoke_inputs(files, config)
        logits, facts = smoke_logits(config, sink, ids)
    except ContentChanged as error:
        report.fail("smoke", "ContentChanged", str(error))
        return
    except torch.cuda.OutOfMemoryError as error:
        report.fail("smoke", "ModelTooLargeForDevice", f"out of memory on {device}: {error}")
        return
    except ArchitectureNotStreamable as error:
        report.fail("smoke", "ArchitectureNotStreamable", f"the model cannot be run block by block: {error}")
        return
    except Exception as error:  # whatever breaks the model fails the check, not the worker
        report.fail("smoke", "SmokeFailed", f"the model could not run: {type(error).__name__}: {error}")
        return
    weights_dtype = dominant_dtype(sink.entries) or "F32"
    report.smoke = {
        "device": device,
        "dtype": weights_dtype,
        "input_ids": ids.reshape(-1).tolist(),
        "greedy_next_tokens": logits.argmax(dim=-1).tolist(),
        "seconds": round(time.perf_counter() - started, 3),
        **facts,
    }
    ran = f"{ids.numel()} tokens on {device}{how_it_ran(facts, device)}"
    judge_logits(logits, reference, weights_dtype, ran, report)


def judge_logits(logits, reference, weights_dtype: str, ran: str, report: Report) -> None:
    import torch

    nonfinite = int((~torch.isfinite(logits)).sum())
    if nonfinite:
        report.fail("smoke", "NonFiniteLogits", f"the forward pass gave {nonfinite} NaN or Inf logits")
        return
    message = f"{ran}, finite logits"
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
