"""Served files: valid safetensors, carriers last, the prefix shared, digests and ranges from the prefix
and a recipient's tail."""

import hashlib

import numpy as np
import pytest
import safetensors
from safetensors import safe_open

from tests.tracing.conftest import read_all
from tracing.floats import MARKABLE, markable
from tracing.safetensors_file import read_header
from tracing.served import ServedFile, copy_digests, read_copy, served_layout, split_range


def test_a_copy_is_valid_safetensors_with_the_carriers_last(release, copies):
    for file in release.files:
        path = copies["grant-1"] / file
        safetensors.deserialize(path.read_bytes())  # the reference parser, strict
        with safe_open(path, framework="pt") as handle:
            assert set(handle.keys()) == set(read_header(release.original / file).entries)
        names = list(read_header(path).entries)  # in offset order
        ours = [name for name in names if name in release.carriers]
        assert ours and names[-len(ours) :] == ours


def test_only_carriers_differ_from_the_original_and_by_one_ulp(release, copies):
    original, copy = read_all(release.original), read_all(copies["grant-1"])
    assert original.keys() == copy.keys()
    for name, values in original.items():
        if name not in release.carriers:
            assert np.array_equal(values, copy[name]), name
            continue
        before = (values.view(np.uint32) >> 16).astype(np.int32)
        step = (copy[name].view(np.uint32) >> 16).astype(np.int32) - before
        can = markable(before.astype(np.uint16), MARKABLE["BF16"])
        assert set(np.unique(np.abs(step[can]))) == {1} and not step[~can].any()


def test_recipients_share_the_prefix_and_differ_in_the_tail(release, copies):
    for file, served in release.served_files.items():
        one, two = (copies["grant-1"] / file).read_bytes(), (copies["grant-2"] / file).read_bytes()
        prefix = served.layout.prefix_size
        assert one[:prefix] == two[:prefix] == (release.served / file).read_bytes()[:prefix]
        assert one[prefix:] != two[prefix:]
        assert len(one) == len(two) == served.layout.size


def test_one_recipient_gets_the_same_bytes_every_time(release, copies, tmp_path):
    for file, served in release.served_files.items():
        again = ServedFile.open(release.served / file, file, release.carriers, release.keys)
        assert again.tail_for("grant-1") == served.tail_for("grant-1")
        assert (copies["grant-1"] / file).read_bytes()[served.layout.prefix_size :] == served.tail_for("grant-1")


def test_a_digest_from_the_prefix_state_and_the_tail_is_the_whole_files(release, copies):
    digests = copy_digests(release.served_files, "grant-2", {"config.json": "c0ffee"})
    assert digests["config.json"] == "c0ffee"
    for file in release.files:
        assert digests[file] == hashlib.sha256((copies["grant-2"] / file).read_bytes()).hexdigest()


def test_ranges_are_slices_of_the_whole_copy_across_the_border(release, copies):
    file = release.files[0]
    served = release.served_files[file]
    whole, tail = (copies["grant-1"] / file).read_bytes(), served.tail_for("grant-1")
    border, size = served.layout.prefix_size, served.layout.size
    rng = np.random.default_rng(0)
    ranges = [(0, size), (border - 1, border + 1), (border, border), (border, size), (0, border), (size - 3, size)]
    ranges += [tuple(sorted(rng.integers(0, size + 1, 2))) for _ in range(40)]
    for start, end in ranges:
        assert b"".join(read_copy(release.served / file, served.layout, tail, start, end)) == whole[start:end]
    assert split_range(served.layout, border - 1, border + 1) == ((border - 1, border), (0, 1))
    with pytest.raises(ValueError, match="range"):
        read_copy(release.served / file, served.layout, tail, 5, size + 1)


def test_a_file_whose_carriers_are_not_last_is_not_a_served_base(release):
    file = release.files[0]
    with pytest.raises(ValueError, match="not its last"):
        served_layout(release.original / file, file, release.carriers)
