"""The names a checkpoint's files go by, shared by every check."""

import json

INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
# Reference logits a publisher may ship for the smoke pass: tensors "input_ids" and "logits".
SMOKE_REFERENCE_NAME = "smoke_reference.safetensors"


def is_weight_shard(path: str) -> bool:
    return path.endswith(".safetensors") and path != SMOKE_REFERENCE_NAME


def read_json(files: dict, name: str):
    """Parse a small JSON file of the checkpoint (`files` maps paths to CheckpointFile)."""
    with files[name].open() as stream:
        return json.loads(stream.read().decode("utf-8"))
