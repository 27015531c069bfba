"""The embedded broker (`filesystem://`) never hands a worker a message still being written.

kombu's own filesystem transport did: a worker polling the folder took the file while the web process
was still writing it, read it empty and stopped ("Unrecoverable error: JSONDecodeError"; seen when the
suite first ran in two processes). The writer here is held half-way by the payload's own encoding, so
the reader looks at exactly that moment."""

import threading
from queue import Empty

import pytest
from kombu import Connection

from tests.support.commands import manage
from workers.embedded_broker import Transport


class EncodedSlowly:
    """A value whose JSON encoding waits until released: its message's file is being written meanwhile."""

    def __init__(self):
        self.encoding, self.released = threading.Event(), threading.Event()

    def __json__(self):
        self.encoding.set()
        assert self.released.wait(10), "the test never released the writer"
        return "whole"


def folders(tmp_path) -> dict[str, str]:
    return {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path)}


def test_a_message_being_written_is_taken_only_once_it_is_whole(tmp_path):
    options = folders(tmp_path)
    with (
        Connection("filesystem://", transport=Transport, transport_options=options) as web,
        Connection("filesystem://", transport=Transport, transport_options=options) as worker,
    ):
        value = EncodedSlowly()
        put = threading.Thread(target=web.default_channel._put, args=("verify", {"body": value}))
        put.start()
        try:
            assert value.encoding.wait(10)
            with pytest.raises(Empty):  # half-written: no message yet (kombu's transport: JSONDecodeError)
                worker.default_channel._get("verify")
            assert worker.default_channel._size("verify") == 0
        finally:
            value.released.set()
            put.join(10)
        assert worker.default_channel._get("verify") == {"body": "whole"}
        assert list(tmp_path.iterdir()) == []  # nothing left behind, no unfinished file


def test_a_message_that_cannot_be_encoded_leaves_no_file(tmp_path):
    with Connection("filesystem://", transport=Transport, transport_options=folders(tmp_path)) as web:
        with pytest.raises(TypeError):
            web.default_channel._put("verify", {"body": object()})
        assert list(tmp_path.iterdir()) == []


def test_the_embedded_default_uses_this_transport(tmp_path):
    shown = manage(
        "shell",
        "-c",
        "from workers.celery import app; print(type(app.connection_for_write().transport).__module__)",
        env={},
        tmp_path=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "workers.embedded_broker"
