"""A SHA-256 state written down after a base's prefix and taken up again elsewhere gives every copy's digest,
so a web process never reads the prefix to hash it; a state that does not fit the base is refused."""

import copy
import hashlib
import json
import os

import pytest

from tracing.served import ServedFile, prefix_digest
from tracing.sha256_state import ResumableSha256


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 1_000_003])
def test_a_state_carried_as_json_resumes_to_hashlibs_digest(length):
    head, tail = os.urandom(length), bytearray(os.urandom(70_001))
    carried = json.loads(json.dumps(ResumableSha256(head).state()))
    resumed = ResumableSha256.from_state(carried)
    twin = resumed.copy()
    resumed.update(tail)
    resumed.update(memoryview(b"xyz")[1:])
    assert resumed.hexdigest() == hashlib.sha256(head + tail + b"yz").hexdigest()
    assert twin.hexdigest() == hashlib.sha256(head).hexdigest() and twin.length == length


@pytest.mark.parametrize(
    "broken",
    [{"h": ["0"] * 7}, {"length": -1}, {"pending": "00"}, {"h": ["1" * 9] * 8}, {"pending": "zz"}],
)
def test_a_malformed_state_is_refused(broken):
    state = {**ResumableSha256(b"abc").state(), **broken}
    with pytest.raises(ValueError, match="not a SHA-256 state"):
        ResumableSha256.from_state(state)


def test_a_base_opened_with_its_recorded_state_never_reads_its_prefix_and_gives_the_same_digests(release, copies):
    for file, served in release.served_files.items():
        recorded = {"prefix_state": state_after_prefix(served)}
        recorded["sha256"] = hashlib.sha256(served.path.read_bytes()).hexdigest()
        resumed = ServedFile(served.path, served.layout, release.keys, recorded=recorded)
        resumed.prefix_pieces = None  # reading the prefix now would raise TypeError
        for recipient in ("grant-1", "grant-2"):
            expected = hashlib.sha256((copies[recipient] / file).read_bytes()).hexdigest()
            assert resumed.sha256(resumed.tail_for(recipient)) == expected


def test_a_recorded_state_that_does_not_give_the_bases_sha256_is_refused(release):
    served = next(iter(release.served_files.values()))
    good = {"prefix_state": state_after_prefix(served)}
    good["sha256"] = hashlib.sha256(served.path.read_bytes()).hexdigest()
    for change in ("state", "sha256"):
        bad = copy.deepcopy(good)
        if change == "state":
            bad["prefix_state"]["h"][0] = f"{int(bad['prefix_state']['h'][0], 16) ^ 1:08x}"
        else:
            bad["sha256"] = "0" * 64
        with pytest.raises(ValueError, match="does not give its recorded sha256"):
            ServedFile(served.path, served.layout, release.keys, recorded=bad)


def test_a_host_without_libcryptos_sha256_records_no_state_and_hashes_prefixes_itself(release, copies, monkeypatch):
    from tracing import sha256_state

    def missing():
        raise sha256_state.Sha256StateUnavailable("no libcrypto here")

    served = next(iter(release.served_files.values()))
    recorded = {"prefix_state": state_after_prefix(served)}
    recorded["sha256"] = hashlib.sha256(served.path.read_bytes()).hexdigest()
    monkeypatch.setattr(sha256_state, "_libcrypto", missing)
    assert prefix_digest() is None
    fallback = ServedFile(served.path, served.layout, release.keys, recorded=recorded)
    expected = hashlib.sha256((copies["grant-1"] / served.layout.file).read_bytes()).hexdigest()
    assert fallback.sha256(fallback.tail_for("grant-1")) == expected
    assert type(fallback.prefix_state()) is type(hashlib.sha256())  # read and hashed here, as before


def state_after_prefix(served: ServedFile) -> dict:
    return ResumableSha256(served.path.read_bytes()[: served.layout.prefix_size]).state()
