"""Tokens made before scopes existed keep what they could do: the migration gives them every scope,
every repo and no expiry, so a reviewer's or staff member's old token still works as it did."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from access import gate
from access.models import ApiToken, Scope
from distribution.models import Repo

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("access", "0005_grant_expiry_recorded_at")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_a_token_made_before_scopes_keeps_every_power_of_its_owner():
    old = migrate(BEFORE)
    owner = old.get_model("access", "User").objects.create(username="carol", email="carol@example.org", is_staff=True)
    old.get_model("access", "ApiToken").objects.create(user=owner, name="old", digest="0" * 64, hint="wg_old")
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    token = ApiToken.objects.get(name="old")
    assert sorted(token.scopes) == sorted(Scope.values) and token.all_repos and token.expires_at is None
    private = Repo.objects.create(org="acme", name="secret", private=True)
    assert gate.is_staff(token.user, token) and gate.is_reviewer(token.user, private, token)
    assert gate.permit_download(token.user, private, token) is None  # staff download with no grant, as before
    assert ApiToken._meta.get_field("scopes").get_default() == ["read"]  # new tokens start narrow
