"""The tensor scan: exact NaN/Inf counts in every float format, statistics, all-zero flags, and the
same answers whatever the chunk boundaries."""

import io
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch

from verification.core import scan as scan_module
from verification.core.checks import check_directory
from verification.core.scan import scan_stream
from verification.core.tiny_llama import write_tiny_llama


def scanned(data: bytes, name="x.safetensors"):
    result = scan_stream(name, len(data), io.BytesIO(data))
    assert result.header_error is None
    return {stats.name: stats for stats in result.tensors}


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2]
)
def test_nan_and_inf_are_counted_exactly_in_every_float_format(dtype):
    values = torch.linspace(-2, 2, 5000, dtype=torch.float32)
    values[[3, 700, 4999]] = float("nan")
    has_inf = dtype != torch.float8_e4m3fn  # E4M3 (FN) has no infinity: inf becomes NaN
    values[[10, 11]] = float("inf") if has_inf else float("nan")
    stats = scanned(save_torch({"w": values.to(dtype)}))["w"]
    assert (stats.nan, stats.inf) == ((3, 2) if has_inf else (5, 0))
    assert stats.absmax == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_statistics_match_numpy(dtype):
    generator = torch.Generator().manual_seed(0)
    values = (torch.randn(300, 700, generator=generator) * 0.5 + 0.1).to(dtype)
    stats = scanned(save_torch({"w": values}))["w"]
    exact = values.float().numpy().astype(np.float64)
    assert stats.mean == pytest.approx(exact.mean(), abs=1e-3)
    assert stats.std == pytest.approx(exact.std(), rel=1e-3)
    assert stats.absmax == pytest.approx(np.abs(exact).max())
    assert stats.sample_stride == 1


def test_large_tensors_are_sampled_for_mean_and_std_but_checked_whole_for_nan():
    values = torch.randn(1 << 21, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    values[12345] = float("nan")  # not on the sampling stride
    stats = scanned(save_torch({"w": values}))["w"]
    assert stats.sample_stride == 16
    assert stats.nan == 1
    assert stats.std == pytest.approx(1.0, rel=0.02)


def test_integer_and_e8m0_and_packed_types_are_scanned_or_marked():
    data = save_numpy({"ids": np.arange(-50, 50, dtype=np.int32), "mask": np.array([True, False])})
    stats = scanned(data)
    assert stats["ids"].absmax == 50 and stats["ids"].nan == 0
    assert stats["mask"].scanned is False


def test_the_answer_does_not_depend_on_where_chunks_split(monkeypatch):
    # A one-byte BOOL tensor first puts every F32 element across odd offsets.
    tensors = {"a": np.array([True]), "b": np.linspace(-3, 3, 999, dtype=np.float32)}
    tensors["b"][[5, 500]] = np.nan
    data = save_numpy(tensors)
    whole = scanned(data)["b"]
    for chunk in (3, 7, 64):
        monkeypatch.setattr(scan_module, "CHUNK_BYTES", chunk)
        split = scanned(data)["b"]
        assert (split.nan, split.inf, split.absmax) == (whole.nan, whole.inf, whole.absmax)
        assert split.mean == pytest.approx(whole.mean) and split.std == pytest.approx(whole.std)


def test_a_checkpoint_with_nan_weights_fails_naming_the_tensor(tmp_path):
    from safetensors.numpy import load_file, save_file

    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    shard = checkpoint / "model-00002-of-00002.safetensors"
    tensors = load_file(shard)
    name = sorted(tensors)[0]
    tensors[name][0, 0] = np.nan
    save_file(tensors, shard)
    report = check_directory(checkpoint, smoke=False)
    failures = [c for c in report.failures if c.code == "NonFiniteValues"]
    assert len(failures) == 1 and name in failures[0].message and "1 NaN" in failures[0].message
    assert report.ok is False


def test_an_all_zero_weight_is_flagged_but_not_failed(tmp_path):
    from safetensors.numpy import load_file, save_file

    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    shard = checkpoint / "model-00001-of-00002.safetensors"
    tensors = load_file(shard)
    name = next(n for n in sorted(tensors) if n.endswith("proj.weight"))
    tensors[name][:] = 0
    save_file(tensors, shard)
    report = check_directory(checkpoint, smoke=False)
    flagged = [c for c in report.checks if c.code == "AllZeroWeights"]
    assert [c.status for c in flagged] == ["warn"] and name in flagged[0].message
    stats = {t["name"]: t for t in report.tensors}
    assert stats[name]["absmax"] == 0.0 and report.ok


class CountedReads:
    """Wraps os.preadv to tell the read-ahead thread's full reads from its one-byte cache probes."""

    def __init__(self, monkeypatch):
        import os

        self.full, self.probes, original = 0, 0, os.preadv

        def preadv(fd, buffers, offset, *flags):
            if flags:
                self.probes += 1
            else:
                self.full += 1
            return original(fd, buffers, offset, *flags)

        monkeypatch.setattr(os, "preadv", preadv)


def evicted(path, tries: int = 20) -> bool:
    """Drop the file's pages from the page cache; True when its last byte is really no longer cached. A
    page the kernel still holds in a per-CPU batch survives one POSIX_FADV_DONTNEED: asked again, it goes."""
    import os

    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        for _ in range(tries):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                os.preadv(handle.fileno(), [bytearray(1)], path.stat().st_size - 1, os.RWF_NOWAIT)
            except BlockingIOError:
                return True
            time.sleep(0.05)
    return False


@pytest.fixture
def small_windows(monkeypatch, tmp_path):
    monkeypatch.setattr(scan_module, "MAP_WINDOW_BYTES", 64 * 1024)
    monkeypatch.setattr(scan_module, "CHUNK_BYTES", 16 * 1024)
    data = save_numpy({"w": np.random.default_rng(3).standard_normal(300_000).astype(np.float32)})
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return path, data


def test_a_file_not_in_the_page_cache_is_read_ahead_of_the_hashing_with_the_same_results(monkeypatch, small_windows):
    import hashlib

    path, data = small_windows
    warm = {s.name: s for s in scan_stream(path.name, len(data), io.BytesIO(data)).tensors}["w"]
    reads = CountedReads(monkeypatch)
    assert evicted(path), "the page cache kept the file; this test needs POSIX_FADV_DONTNEED to work"
    with open(path, "rb") as stream:
        result = scan_stream(path.name, len(data), stream)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    cold = {s.name: s for s in result.tensors}["w"]
    assert (cold.absmax, cold.mean, cold.std) == (warm.absmax, warm.mean, warm.std)
    assert reads.full > 0  # the thread read windows the consumer had not reached


def test_a_file_in_the_page_cache_is_only_probed(monkeypatch, small_windows):
    path, data = small_windows
    path.read_bytes()  # cached now
    reads = CountedReads(monkeypatch)
    with open(path, "rb") as stream:
        scan_stream(path.name, len(data), stream)
    assert reads.full == 0 and reads.probes > 0


def test_the_read_ahead_thread_ends_when_the_reader_stops_early(small_windows):
    import threading

    path, data = small_windows
    with open(path, "rb") as stream:
        chunks = scan_module.chunks_of(stream, len(data))
        next(chunks)
        assert any(thread.name == "read-ahead" for thread in threading.enumerate())
        chunks.close()
    for thread in threading.enumerate():
        if thread.name == "read-ahead":
            thread.join(timeout=5)
            assert not thread.is_alive()


def test_read_ahead_can_be_turned_off(monkeypatch, small_windows):
    path, data = small_windows
    monkeypatch.setattr(scan_module, "READ_AHEAD_WINDOWS", 0)
    reads = CountedReads(monkeypatch)
    with open(path, "rb") as stream:
        scan_stream(path.name, len(data), stream)
    assert reads.full == reads.probes == 0
