"""The two helpers that let a rebuild from Xet xorbs (and a digest read from storage) wait on a socket, hash
and decompress at once: `ahead`, items made by a side thread before they are asked for, and
`DigestingAside`, a digest computed by a side thread. Each must give what the plain loop gives, in order,
raise a failure where the plain loop would, and leave no thread behind."""

import hashlib
import threading

import pytest

from distribution.storage import Digesting, DigestingAside, ahead
from tests.support.servers import wait_until


def read_ahead_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "read-ahead"}


def test_items_made_ahead_come_in_order_and_a_failure_comes_in_its_turn():
    made = []

    def items():
        for number in range(5):
            made.append(number)
            yield number
        raise OSError("the connection was reset")

    got, before = [], read_ahead_threads()
    with pytest.raises(OSError, match="connection was reset"):
        for item in ahead(items(), 2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]  # every item made before the failure reached the consumer first
    wait_until(lambda: not read_ahead_threads() - before, timeout=5, what="the side thread to end")


def test_a_consumer_that_stops_early_stops_the_side_thread_and_nothing_more_is_made():
    made, before = [], read_ahead_threads()

    def items():
        for number in range(1000):
            made.append(number)
            yield number

    consumer = ahead(items(), 2)
    assert next(consumer) == 0
    wait_until(lambda: len(made) >= 3, timeout=5, what="items made ahead")  # 0 taken, two queued, one waiting
    assert read_ahead_threads() - before
    consumer.close()
    wait_until(lambda: not read_ahead_threads() - before, timeout=5, what="the side thread to end")
    assert len(made) <= 4  # never ran on to the end: the side thread stopped at its next item


def test_digesting_aside_gives_the_digest_of_the_bytes_in_the_order_fed():
    pieces = [bytes([n]) * (3_000_000 + n) for n in range(7)]
    plain, aside = Digesting(), DigestingAside()
    for piece in pieces:
        plain.update(piece)
        aside.update(piece)
    result = aside.result()
    assert result == plain.result()
    assert result.sha256 == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert result.size == sum(map(len, pieces)) and result.head == pieces[0][:512]
    assert not aside.hasher.is_alive()


def test_leaving_digesting_aside_early_stops_its_thread():
    with pytest.raises(RuntimeError), DigestingAside() as digesting:
        digesting.update(b"x" * 1_000_000)
        raise RuntimeError("the upload failed")
    assert not digesting.hasher.is_alive()
