"""Which tensors carry the mark: a documented function of names and shapes, refused clearly when none can."""

import math

import pytest

from tracing import synthetic
from tracing.carriers import NoCarriersError, carrier_slot, select_carriers


def shapes_of(config, dtype="BF16"):
    return {name: (dtype, shape) for name, shape in synthetic.llama_shapes(config).items()}


def two_files(shapes):
    """Layers 0 and 1 (and the embeddings) in one file, the rest in another, as a two-shard release is cut."""
    first = ("model.embed_tokens.", "model.layers.0.", "model.layers.1.")
    return {name: "a" if name.startswith(first) else "b" for name in shapes}


def test_a_four_layer_model_carries_in_its_two_middle_layers_one_down_proj_per_file():
    shapes = shapes_of(synthetic.llama_config())
    files = two_files(shapes)
    carriers = select_carriers(shapes, files)
    assert carriers == ["model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]
    for file in "ab":
        weights = sum(math.prod(shape) for name, (_, shape) in shapes.items() if files[name] == file)
        assert sum(math.prod(shapes[name][1]) for name in carriers if files[name] == file) <= 0.07 * weights


def test_in_one_file_the_middle_layer_goes_first_down_v_then_o():
    carriers = select_carriers(shapes_of(synthetic.llama_config()))
    assert carriers == [
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
    ]


def test_carriers_stay_within_the_budget_and_skip_the_first_and_last_two_layers_of_a_deep_model():
    config = synthetic.llama_config(hidden=256, intermediate=688, layers=12, heads=4, kv_heads=1, vocab=1000)
    shapes = shapes_of(config)
    carriers = select_carriers(shapes, max_fraction=1.0)
    layers = {carrier_slot(name)[0] for name in carriers}
    assert layers == set(range(2, 10))
    weights = sum(math.prod(shapes[name][1]) for name in carriers)
    limited = select_carriers(shapes, max_fraction=1.0, max_weights=weights // 4, min_weights=0)
    assert sum(math.prod(shapes[name][1]) for name in limited) <= weights // 4
    assert {carrier_slot(name)[0] for name in limited} <= {4, 5, 6, 7}  # the middle of the network goes first


def test_mistral_and_qwen2_names_carry_and_biases_do_not():
    config = synthetic.llama_config(hidden=256, intermediate=704, layers=4, heads=4, kv_heads=2, vocab=1000)
    shapes = shapes_of(config)
    shapes["model.layers.1.self_attn.v_proj.bias"] = ("BF16", (128,))  # Qwen2 has q, k and v biases
    carriers = select_carriers(shapes, max_fraction=1.0)
    assert "model.layers.1.self_attn.v_proj.bias" not in carriers
    assert "model.layers.1.self_attn.v_proj.weight" in carriers


def test_llama_cpp_names_map_to_the_same_slots():
    assert carrier_slot("blk.3.attn_v.weight") == carrier_slot("model.layers.3.self_attn.v_proj.weight")
    assert carrier_slot("blk.3.attn_output.weight") == (3, "self_attn.o_proj")
    assert carrier_slot("blk.3.ffn_down.weight") == (3, "mlp.down_proj")
    assert carrier_slot("base_model.model.model.layers.3.mlp.down_proj.weight") == (3, "mlp.down_proj")
    assert carrier_slot("blk.3.attn_q.weight") is None
    assert carrier_slot("model.layers.3.self_attn.q_proj.weight") is None


def test_a_checkpoint_without_candidates_is_refused_saying_what_carries():
    gpt2 = {"transformer.h.1.attn.c_attn.weight": ("F32", (768, 2304)), "transformer.wte.weight": ("F32", (50257, 768))}
    with pytest.raises(NoCarriersError, match="v_proj, o_proj or down_proj"):
        select_carriers(gpt2)


def test_a_two_layer_model_has_no_middle_layer_to_carry():
    with pytest.raises(NoCarriersError, match="layers other than the first and last"):
        select_carriers(shapes_of(synthetic.llama_config(layers=2)))


def test_int8_weights_cannot_carry():
    with pytest.raises(NoCarriersError):
        select_carriers(shapes_of(synthetic.llama_config(), dtype="I8"))


def test_too_few_carrier_weights_are_refused():
    tiny = synthetic.llama_config(hidden=64, intermediate=192, layers=4, heads=4, kv_heads=4, vocab=256)
    with pytest.raises(NoCarriersError, match="fewer than the 65,536"):
        select_carriers(shapes_of(tiny), max_fraction=0.01)
