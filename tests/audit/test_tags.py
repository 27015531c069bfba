"""Audit tags: one enumeration, today's values kept (they are hashed into the chain), each written by
some code path, and no tag spelled as a string anywhere else."""

import ast
import re

import pytest

from audit import chain
from audit.tags import ACCESS_NEUTRAL, Tag
from tests.support.servers import REPO_ROOT

APPS = ("access", "audit", "distribution", "hub", "portal", "verification", "workers")
TAG_SHAPED = re.compile(r"^(access|admin|distribution|verification):[a-z-]+:[a-z-]+$")
# The start of a tag built in an f-string: f"admin:{model}:{action}", f"access:request:{state}".
TAG_HEAD = re.compile(r"^(access|admin|distribution|verification)(:[a-z-]+)*:$")
# The values events carry today: a value never changes, a new meaning gets a new tag.
VALUES = {
    "access:account:created", "access:email:verified", "access:login:failed", "access:token:created",
    "access:token:revoked", "access:request:submitted", "access:request:reapplied", "access:request:pending",
    "access:request:accepted", "access:request:rejected", "access:grant:created", "access:grant:revoked",
    "access:grant:expired", "access:license:accepted", "access:reviewer:assigned", "access:policy:changed",
    "admin:accessrequest:created", "admin:accessrequest:changed", "admin:accessrequest:deleted",
    "admin:grant:created", "admin:grant:changed", "admin:grant:deleted", "admin:reviewer:created",
    "admin:reviewer:changed", "admin:reviewer:deleted", "admin:apitoken:created", "admin:apitoken:changed",
    "admin:apitoken:deleted", "distribution:revision:published", "verification:revision:verified",
    "verification:revision:failed", "distribution:revision:released", "distribution:revision:tagged",
    "distribution:revision:withdrawn", "distribution:download:served", "distribution:ticket:issued",
    "distribution:ticket:renewed", "distribution:redirect-ticket:issued",
    "distribution:copy:issued", "distribution:leak:traced", "verification:served-layout:prepared",
    "admin:user:created", "admin:user:changed", "admin:user:deleted", "admin:repo:created", "admin:repo:changed",
    "admin:repo:deleted", "admin:revision:changed", "admin:revision:deleted",
    "distribution:draft:started", "distribution:draft:resumed", "distribution:draft:discarded",
    "access:second-factor:added", "access:second-factor:removed",
    "access:publisher:assigned", "admin:publisher:created", "admin:publisher:changed", "admin:publisher:deleted",
    "distribution:repo:created",
}  # fmt: skip


def sources():
    for app in APPS:
        for path in sorted((REPO_ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts and path != REPO_ROOT / "audit" / "tags.py":
                yield path, ast.parse(path.read_text(), filename=str(path))


def test_the_values_are_todays():
    assert {tag.value for tag in Tag} == VALUES
    assert set(Tag) >= ACCESS_NEUTRAL


def test_every_tag_is_written_by_some_code_path():
    used = {
        node.attr
        for _, tree in sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Tag"
    }
    assert sorted(tag.name for tag in Tag if tag.name not in used) == []


def test_no_tag_is_spelled_as_a_string_outside_the_enumeration():
    spelled = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TAG_SHAPED.match(node.value):
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value}")
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                if TAG_HEAD.match(head):
                    spelled.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {head}... (an f-string tag)")
    assert spelled == []


@pytest.mark.django_db
def test_a_string_that_is_no_tag_is_refused_and_nothing_is_written():
    from audit.models import AuditEvent

    with pytest.raises(ValueError, match="is not a valid Tag"):
        chain.record("access:grant:invented")
    assert not AuditEvent.objects.exists()
