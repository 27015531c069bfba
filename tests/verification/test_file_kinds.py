"""What a checkpoint may contain: the kinds of file a model repo holds, no pickle of any protocol
(0 and 1 carry no marker byte), and no model code unless the repo allows it."""

import json
import pickle

import pytest

from tests.support.servers import REPO_ROOT
from verification.core.checks import check_directory
from verification.core.kinds import is_pickle
from verification.core.tiny_llama import write_tiny_llama

LICENSE_TEXT = "Permission is granted to use these weights for research.\n" * 200


@pytest.fixture
def checkpoint(tmp_path):
    return write_tiny_llama(tmp_path / "ckpt", shards=2)


def failures(checkpoint, **options) -> dict[str, str]:
    report = check_directory(checkpoint, smoke=False, **options)
    return {check.file: check.code for check in report.failures}


@pytest.mark.parametrize("protocol", [0, 1, 2, 5])
@pytest.mark.parametrize("name", ["tokenizer.model", "vocab.txt", "special_tokens_map.json"])
def test_a_pickle_of_any_protocol_is_refused_whatever_its_name(checkpoint, protocol, name):
    (checkpoint / name).write_bytes(pickle.dumps({"state": [1, 2, 3], "hook": print}, protocol=protocol))
    assert failures(checkpoint) == {name: "PickleWeights"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("README.md", "# Tiny\nA model card.\n"),
        ("LICENSE", LICENSE_TEXT),
        ("tokenizer.json", json.dumps({"model": {"vocab": {"a": 0}}})),
        ("merges.txt", "#version: 0.2\na b\n"),
        ("chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}"),
        (".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"),
    ],
)
def test_the_files_a_model_repo_holds_pass(checkpoint, name, content):
    (checkpoint / name).write_text(content)
    assert failures(checkpoint) == {}


@pytest.mark.parametrize("name", ["install.sh", "weights.dat", "notes.docx"])
def test_a_kind_of_file_a_model_repo_does_not_hold_is_refused(checkpoint, name):
    (checkpoint / name).write_bytes(b"#!/bin/sh\nrm -rf ~\n")
    assert failures(checkpoint) == {name: "FileKindNotAllowed"}


def test_model_code_is_refused_unless_the_repo_allows_it(checkpoint):
    (checkpoint / "modeling_tiny.py").write_text("import os\nos.system('id')\n")
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert failures(checkpoint) == {"modeling_tiny.py": "CodeNotAllowed", "config.json": "CodeNotAllowed"}
    assert failures(checkpoint, allow_code=True) == {}


def test_text_is_not_taken_for_a_pickle():
    assert not is_pickle(LICENSE_TEXT.encode()[:4096])
    assert not is_pickle(b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}')
    assert is_pickle(pickle.dumps([1, 2, 3], protocol=0)) and is_pickle(pickle.dumps("x", protocol=1))
    long_one = pickle.dumps({f"key{n}": [n, str(n) * 5] for n in range(20_000)}, protocol=0)
    assert len(long_one) > 64 * 1024 and is_pickle(long_one[: 64 * 1024])  # only its start is kept
    readme = (REPO_ROOT / "README.md").read_bytes()[: 64 * 1024]
    assert not is_pickle(readme)


@pytest.mark.django_db
def test_a_repo_that_allows_code_verifies_with_it_and_one_that_does_not_fails(tmp_path):
    from distribution.models import Repo, Revision
    from tests.support.flows import publish_undispatched
    from verification.services import run_checks_stage

    for allowed in (False, True):
        checkpoint = write_tiny_llama(tmp_path / f"ckpt-{allowed}", shards=2)
        (checkpoint / "modeling_tiny.py").write_text("print('hello')\n")
        repo_id = f"acme/code-{'allowed' if allowed else 'refused'}"
        Repo.objects.create(org="acme", name=repo_id.split("/")[1], allows_code=allowed)
        revision = publish_undispatched(checkpoint, repo_id)
        run_checks_stage(revision.pk)
        revision.refresh_from_db()
        if allowed:
            assert revision.verification_stage == Revision.Stage.SMOKE_QUEUED, revision.failure_reason
        else:
            assert revision.state == Revision.State.FAILED and "Python code" in revision.failure_reason
