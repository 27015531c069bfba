"""Publishing with the stock Hub client through Debian's nginx (shipped site) in front of gunicorn (shipped
config): by Xet, as the client is installed (xorbs of up to 64 MiB POSTed to the portal, the files rebuilt
from them by a real worker), and by LFS to local
storage (whole files and parts PUT to the portal); bodies far over nginx's default limit of 1 MiB."""

import pytest
from huggingface_hub import HfApi, constants

from access.models import Scope
from distribution.models import Repo, Revision
from tests.support.deployment import behind_nginx
from tests.support.flows import wait_until
from tests.support.personas import person, token_for
from tests.support.publishing import IN_PARTS, local_files, stored_bytes
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def front(worker_env, tmp_path):
    """The shipped front, its uploads kept in local storage (on S3, LFS bytes go to the bucket, not here)."""
    local = {**worker_env, "STORAGE_BACKEND": "local"}
    with behind_nginx(local, tmp_path, TRUSTED_PROXIES="1", X_ACCEL_REDIRECT_PREFIX="/protected/") as (url, _):
        yield url


@pytest.mark.parametrize("transfer", ["xet", "lfs"])
def test_the_stock_client_publishes_through_the_shipped_nginx(front, tmp_path, monkeypatch, transfer, worker):
    checkpoint = write_tiny_llama(tmp_path / "checkpoint", shards=2, config_overrides=IN_PARTS)
    assert max(path.stat().st_size for path in checkpoint.iterdir()) > 4 * 1024 * 1024
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", transfer == "lfs")
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet-cache"))
    publisher = person("paula", publishes=[Repo.objects.create(org="acme", name="fronted")])
    hub = HfApi(endpoint=front, token=token_for(publisher, scopes=[Scope.READ, Scope.PUBLISH]))
    info = hub.upload_folder(repo_id="acme/fronted", folder_path=checkpoint)
    revision = Revision.objects.get(commit=info.oid)
    assert revision.storage_backend == "local"
    # Files sent by Xet are rebuilt from their xorbs by a worker before the revision holds them.
    wait_until(
        lambda: Revision.objects.get(pk=revision.pk).state != Revision.State.ASSEMBLING, timeout=120, what="the rebuild"
    )
    assert {path: data for path, data in stored_bytes(revision).items() if path != "model.sig"} == local_files(
        checkpoint
    )
