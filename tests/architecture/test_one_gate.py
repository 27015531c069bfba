"""Who may see, review or download a repo is decided in access.gate alone: no other module reads an
account's staff flag, a repo's gating, a grant's caps or a token's scopes and repos to decide again."""

import ast

from tests.support.servers import REPO_ROOT

APPS = ("access", "audit", "distribution", "hub", "portal", "verification", "workers")
GATE = REPO_ROOT / "access" / "gate.py"
# The attributes access decisions are made from.
DECIDING = {"is_staff", "gated", "max_complete_downloads", "max_bytes_per_day", "scopes", "repo_ids"}


def reads(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        deciding = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and node.attr in DECIDING
        # `gate.is_staff(...)` is a call of the gate's own, not a second judgement
        if deciding and not (isinstance(node.value, ast.Name) and node.value.id == "gate"):
            yield node.lineno, node.attr


def test_only_the_gate_reads_what_access_is_decided_from():
    outside = [
        f"{path.relative_to(REPO_ROOT)}:{line} reads .{attribute}"
        for app in APPS
        for path in sorted((REPO_ROOT / app).rglob("*.py"))
        if path != GATE and "migrations" not in path.parts
        for line, attribute in reads(path)
    ]
    assert outside == []


def test_the_gate_itself_is_found_reading_them():
    assert {attribute for _, attribute in reads(GATE)} == DECIDING
