"""Downloads cut off half-way: the Hugging Face client resumes where it stopped, and the portal
records what a client that went away really received."""

import contextlib
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from access.services import grant_access
from distribution.models import DownloadEvent
from tests.support.flows import http, published_tiny_llama
from tests.support.personas import person, token_for
from tests.support.servers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
BIG = {"vocab_size": 50000}  # embeddings of 12.8 MB per shard: past the client's 10 MiB write size
SHARD = "model-00001-of-00002.safetensors"


class CuttingProxy:
    """A TCP relay in front of the live server that drops the first connection to carry more than
    `cut_after` bytes of response, as a flaky network would. Everything else passes through."""

    def __init__(self, upstream: tuple[str, int], cut_after: int):
        self.upstream, self.cut_after, self.cuts = upstream, cut_after, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, True), daemon=True).start()

    def pump(self, source, target, is_response):
        sent = 0
        try:
            while data := source.recv(65536):
                target.sendall(data)
                sent += len(data)
                if is_response and sent > self.cut_after and self.cuts == 0:
                    self.cuts += 1
                    break
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self):
        self.listener.close()


def test_the_hub_client_resumes_a_download_the_network_cut(live_server, tmp_path):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/big", verify_here=True, config_overrides=BIG)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    parts = urllib.parse.urlsplit(live_server.url)
    proxy = CuttingProxy((parts.hostname, parts.port), cut_after=12 * 1024 * 1024)
    try:
        path = hf_hub_download(
            "acme/big",
            SHARD,
            endpoint=f"http://127.0.0.1:{proxy.port}",
            token=token_for(alice),
            cache_dir=tmp_path / "cache",
        )
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert Path(path).read_bytes() == (checkpoint / SHARD).read_bytes()
    events = list(DownloadEvent.objects.filter(path=SHARD).order_by("id"))
    assert len(events) == 2
    assert events[0].range_requested == "" and events[0].bytes_served < events[0].bytes_expected
    assert events[1].status == 206 and events[1].range_requested.startswith("bytes=")


def test_a_client_that_goes_away_leaves_an_event_with_what_it_received(live_server, tmp_path):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/gone", verify_here=True, config_overrides=BIG)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    status, headers, _ = http("GET", f"{live_server.url}/acme/gone/resolve/main/{SHARD}", token=token_for(alice))
    assert status == 302
    parts = urllib.parse.urlsplit(live_server.url)
    with socket.create_connection((parts.hostname, parts.port)) as raw:
        raw.sendall(f"GET {headers['Location']} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        received = 0
        while received < 1_000_000:
            received += len(raw.recv(65536))
    size = (checkpoint / SHARD).stat().st_size

    def recorded():
        event = DownloadEvent.objects.filter(path=SHARD).first()
        return event is not None and event.bytes_served is not None and event

    event = wait_until(recorded, timeout=30, what="the server to notice the client left")
    assert event.bytes_expected == size
    assert 0 < event.bytes_served < size
