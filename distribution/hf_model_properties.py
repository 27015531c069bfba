"""What `list_models` and `model_info` add when a call asks for more than the default (`full`, `cardData`,
`config`, or `expand=NAME` for each property wanted): the files, the model card's metadata and the
config's architecture, read from the revision described (once per file: distribution.revision_text)."""

import json

import yaml

from distribution.hf_entries import model_entry
from distribution.models import Repo, Revision
from distribution.revision_text import revision_text

CARD_PATH, CONFIG_PATH = "README.md", "config.json"
# The Hub's names for what `expand` may ask of a model; those without a value here are left out of the
# answer (downloads by period, spaces, inference providers, ...), as the Hub leaves out what is unknown.
EXPANDABLE = frozenset(
    {
        "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
        "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping",
        "lastModified", "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private",
        "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore",
        "usedStorage", "widgetData",
    }
)  # fmt: skip


class BadProperties(ValueError):
    """A call asking for properties in a way the Hub refuses; the message says what to send."""


def asked(params) -> tuple[set[str], bool]:
    """(the properties asked for, whether only those are answered): `expand` names them alone; `full`,
    `cardData` and `config` add theirs to the default answer."""
    expand = [name for value in params.getlist("expand") for name in value.split(",") if name]
    flags = {name for name in ("full", "cardData", "config") if params.get(name, "").lower() in ("1", "true")}
    if expand and flags:
        raise BadProperties(f"`expand` cannot be used with {', '.join(sorted(flags))}: name every property by expand")
    unknown = sorted(set(expand) - EXPANDABLE)
    if unknown:
        known = ", ".join(sorted(EXPANDABLE))
        raise BadProperties(f"unknown properties to expand: {', '.join(unknown)}; the known ones: {known}")
    if expand:
        return set(expand), True
    return {"siblings" if name == "full" else name for name in flags}, False


def described(repo: Repo, revision: Revision | None, wanted: set[str], only: bool, siblings=None) -> dict:
    """The model entry with the properties wanted (only those and its ids, when `only`). `siblings`:
    the file entries when the caller made them (model info adds sizes and digests), else their names."""
    entry = model_entry(repo, revision)
    if revision is not None and "siblings" in wanted:
        entry["siblings"] = siblings if siblings is not None else [{"rfilename": f.path} for f in revision.files.all()]
    if revision is not None and "cardData" in wanted:
        card = card_data(revision)
        if card is not None:
            entry["cardData"] = card
    if revision is not None and "config" in wanted:
        config = config_summary(revision)
        if config is not None:
            entry["config"] = config
    if only:
        return {key: value for key, value in entry.items() if key in wanted or key in ("_id", "id")}
    return entry


def card_data(revision: Revision) -> dict | None:
    """The YAML metadata heading the revision's README.md, as the Hub's cardData; None without one."""
    text = revision_text(revision, CARD_PATH)
    if not text or not text.startswith("---\n"):
        return None
    end = text.find("\n---", 4)
    if end == -1:
        return None
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return None  # a card whose header is not YAML has no metadata to give
    return data if isinstance(data, dict) else None


def config_summary(revision: Revision) -> dict | None:
    """What the Hub gives of config.json in a listing: the architectures and the model type."""
    text = revision_text(revision, CONFIG_PATH)
    try:
        config = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    return {key: config[key] for key in ("architectures", "model_type") if key in config}
