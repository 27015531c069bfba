"""Where the smoke pass puts a model, decided from sizes alone: tested with made-up devices and models."""

import pytest

from verification.core.placement import (
    SPREAD,
    STREAMED,
    WHOLE,
    Block,
    DeviceMemory,
    ModelBlocks,
    ModelTooLarge,
    place_model,
)
from verification.core.sizes import format_bytes

GIB = 2**30
MIB = 2**20


def llama_like(layers: int, layer_bytes: int, embedding_bytes: int, activations: int = 16 * MIB) -> ModelBlocks:
    blocks = [
        Block("model.embed_tokens", embedding_bytes),
        *(Block(f"model.layers.{number}", layer_bytes) for number in range(layers)),
        Block("model.norm", 16 * 1024),
        Block("lm_head", embedding_bytes),
    ]
    return ModelBlocks(tuple(blocks), activations)


def weights_of(layout: ModelBlocks) -> int:
    return sum(block.nbytes for block in layout.blocks)


def never_asked() -> ModelBlocks:
    raise AssertionError("a model that fits whole is never split into blocks")


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (MIB - 1, "1.0 MiB"),
        (512 * MIB, "512.0 MiB"),
        (int(3.4 * GIB), "3.4 GiB"),
        (5 * 2**40, "5.0 TiB"),
        (2**50, "1024.0 TiB"),
    ],
)
def test_sizes_read_in_the_largest_unit_that_keeps_them_at_one_or_more(count, shown):
    assert format_bytes(count) == shown


def test_a_model_that_fits_runs_whole_on_the_device_with_the_most_free_memory():
    devices = [DeviceMemory("cuda:0", 10 * GIB), DeviceMemory("cuda:1", 20 * GIB)]
    placement = place_model(12 * GIB, devices, 64 * GIB, never_asked)
    assert (placement.kind, placement.device) == (WHOLE, "cuda:1")


def test_a_device_that_cannot_tell_its_free_memory_takes_the_whole_model():
    assert place_model(100 * GIB, [DeviceMemory("cpu", None)], None, never_asked).kind == WHOLE


def test_a_model_larger_than_one_gpu_is_spread_over_several_in_block_order():
    layout = llama_like(layers=80, layer_bytes=int(1.6 * GIB), embedding_bytes=int(1.96 * GIB))
    devices = [DeviceMemory(f"cuda:{number}", 80 * GIB) for number in range(4)]
    placement = place_model(weights_of(layout), devices, 2048 * GIB, lambda: layout)
    assert placement.kind == SPREAD and placement.device == "cuda:0"
    assert [name for name, _ in placement.block_devices] == [block.name for block in layout.blocks]
    used = [device for _, device in placement.block_devices]
    assert used == sorted(used) and len(set(used)) == 3  # consecutive blocks, in device order
    for device in set(used):
        share = sum(
            block.nbytes for block, (_, d) in zip(layout.blocks, placement.block_devices, strict=True) if d == device
        )
        assert share * 1.25 + layout.activation_bytes <= 80 * GIB


def test_a_model_larger_than_every_gpu_together_is_streamed_through_the_largest():
    layout = llama_like(layers=80, layer_bytes=int(1.6 * GIB), embedding_bytes=int(1.96 * GIB))
    devices = [DeviceMemory("cuda:0", 20 * GIB), DeviceMemory("cuda:1", 24 * GIB)]
    placement = place_model(weights_of(layout), devices, 2048 * GIB, lambda: layout)
    assert (placement.kind, placement.device, placement.reread) == (STREAMED, "cuda:1", False)
    assert placement.largest_block.name == "model.embed_tokens"


def test_weights_larger_than_host_memory_are_read_again_from_the_files():
    layout = llama_like(layers=80, layer_bytes=int(1.6 * GIB), embedding_bytes=int(1.96 * GIB))
    placement = place_model(weights_of(layout), [DeviceMemory("cuda:0", 24 * GIB)], 100 * GIB, lambda: layout)
    assert placement.kind == STREAMED and placement.reread


def test_on_a_cpu_worker_its_budget_is_also_what_host_memory_may_hold():
    layout = llama_like(layers=12, layer_bytes=100 * MIB, embedding_bytes=200 * MIB)
    budget = weights_of(layout) // 4
    placement = place_model(weights_of(layout), [DeviceMemory("cpu", budget)], budget, lambda: layout)
    assert (placement.kind, placement.device, placement.reread) == (STREAMED, "cpu", True)


def test_the_next_block_loads_while_one_runs_only_where_two_blocks_fit():
    layout = llama_like(layers=12, layer_bytes=100 * MIB, embedding_bytes=200 * MIB, activations=10 * MIB)
    roomy = place_model(weights_of(layout), [DeviceMemory("cuda:0", 310 * MIB)], None, lambda: layout)
    tight = place_model(weights_of(layout), [DeviceMemory("cuda:0", 309 * MIB)], None, lambda: layout)
    assert (roomy.kind, roomy.prefetch) == (STREAMED, True)
    assert (tight.kind, tight.prefetch) == (STREAMED, False)


def test_a_model_is_too_large_only_when_its_largest_block_and_activations_do_not_fit():
    layout = llama_like(layers=126, layer_bytes=int(5.94 * GIB), embedding_bytes=int(3.91 * GIB))
    fits = place_model(weights_of(layout), [DeviceMemory("cuda:0", 6 * GIB)], None, lambda: layout)
    assert fits.kind == STREAMED and fits.largest_block.name == "model.layers.0"
    with pytest.raises(ModelTooLarge) as refused:
        place_model(weights_of(layout), [DeviceMemory("cuda:0", 5 * GIB)], None, lambda: layout)
    message = str(refused.value)
    assert "model.layers.0, 5.9 GiB" in message and "cuda:0 has 5.0 GiB free" in message
    assert "larger GPU" in message and "WEIGHTGATE_SMOKE_MAX_BYTES" in message


LLAMA_3 = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}
README_CHECKPOINTS = {
    "LLaMA-3 70B": {
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
    },
    "LLaMA-3.1 405B": {
        "num_hidden_layers": 126,
        "hidden_size": 16384,
        "intermediate_size": 53248,
        "num_attention_heads": 128,
        "num_key_value_heads": 8,
    },
}


@pytest.mark.parametrize("name", README_CHECKPOINTS)
def test_the_readmes_memory_figures_are_what_the_planner_computes(name):
    from tests.support.servers import REPO_ROOT
    from verification.core.blocks import model_layout
    from verification.core.model_checks import build_config, empty_model
    from verification.core.placement import two_blocks_bytes

    model = empty_model(build_config({**LLAMA_3, **README_CHECKPOINTS[name]}))
    weights = 2 * sum(parameter.numel() for parameter in model.parameters())
    layout = model_layout(model, weights, tokens=8)
    blocks = {block.name: block.nbytes for block in layout.blocks}
    largest = max(layout.blocks, key=lambda block: block.nbytes)
    embedding, layer = format_bytes(blocks["model.embed_tokens"]), format_bytes(blocks["model.layers.0"])
    biggest = (
        f"embeddings, {embedding} (a layer: {layer})"
        if largest.name == "model.embed_tokens"
        else (f"a layer, {layer} (embeddings: {embedding})")
    )
    row = (
        f"| {format_bytes(weights)} | {format_bytes(weights * 1.25)} | {biggest} | "
        f"{format_bytes(largest.nbytes + layout.activation_bytes)} ({format_bytes(layout.activation_bytes)} of "
        f"activations) | {format_bytes(two_blocks_bytes(layout) + layout.activation_bytes)} |"
    )
    readme_row = next(
        line for line in (REPO_ROOT / "README.md").read_text().splitlines() if line.startswith(f"| {name} ")
    )
    assert readme_row.endswith(row)
