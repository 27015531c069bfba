"""Tensors read again from the checkpoint's files, a block at a time: for local files, and for any
checkpoint larger than host memory.

The hashing read keeps nothing then (its sink only learns the tensors' names, shapes and dtypes);
when a block's turn comes its tensors are read from the files once more, from the page cache or
the disk. For local files the page cache usually still holds them (a memory copy, cheaper than
copying every weight into host buffers during the scan); for a model larger than host memory it is
a second read of every weight. For the CPU a local file is mapped, so the block's tensors are the
page cache's pages (no copy) until the block has run; for a GPU, and for a stream, the block is
read on every core into a host buffer that each block reuses (page-locked for a GPU).

The bytes must be those that were hashed. A local file proves it by its identity: device, inode,
size, and modification and change times, taken before the hashing read and compared when the file
is opened again and after the last block; writing to a file, or renaming another over it, changes
one of them. A file that brings its own `read_range` (a remote object) must return bytes of the
object version that was hashed (for S3, a ranged GET pinned to the ETag or version id it listed).
"""

import io
import mmap
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

from machine.cpus import usable_cpus
from verification.core.layout import is_weight_shard
from verification.core.loading import torch_dtype
from verification.core.safetensors_format import MAX_HEADER_BYTES, SafetensorsError, parse_header_bytes

READ_PIECE_BYTES = 8 * 1024 * 1024  # a large tensor is read in pieces of this size, on every core at once
SKIP_BYTES = 1024 * 1024  # a stream that cannot seek is read forward in reads of this size
SLOT_ALIGNMENT = 64  # each tensor starts at a multiple of this in a block's buffer, whatever its dtype


class ContentChanged(Exception):
    """A file changed between the hashing read and the forward pass: its bytes are no longer the verified ones."""


def file_identity(stream) -> tuple | None:
    """What changes when a local file's bytes change; None for a stream that is not a local file."""
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def file_identities(files) -> dict:
    """Each weight file's identity now, before the hashing read (a file with `read_range` vouches for itself)."""
    identities = {}
    for item in files:
        if is_weight_shard(item.path) and getattr(item, "read_range", None) is None:
            try:
                with item.open() as stream:
                    identities[item.path] = file_identity(stream)
            except OSError:  # gone or unreadable: the hashing read that follows reports it, naming the file
                identities[item.path] = None
    return identities


class RangeReader:
    """Byte ranges of one checkpoint file: by its own `read_range` when it has one, by pread on a local
    file, by seeking a stream that can, and otherwise by reading forward (reopening to go back)."""

    def __init__(self, item, identity):
        self.item, self.identity = item, identity
        self.lock = threading.Lock()
        self.stream = None
        self.position = 0
        self.descriptor = None

    def read_into(self, offset: int, target: memoryview) -> None:
        read_range = getattr(self.item, "read_range", None)
        if read_range is not None:
            data = read_range(offset, len(target))
            if len(data) != len(target):
                raise self.ended(offset + len(data))
            target[:] = data
            return
        with self.lock:
            self.ensure_open()
        if self.descriptor is not None:
            self.pread_into(offset, target)
        else:
            with self.lock:
                self.stream_into(offset, target)

    def mapped(self, offset: int, entry):
        """The tensor at `offset` as a view of a private mapping of the file, or None where the file cannot
        be mapped (a stream, a file with its own read_range, a file system that refuses) or the tensor is
        not aligned for its dtype."""
        import torch

        if getattr(self.item, "read_range", None) is not None:
            return None
        with self.lock:
            self.ensure_open()
        dtype = torch_dtype(entry)
        if self.descriptor is None or not entry.nbytes or offset % dtype.itemsize:
            return None
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        # Private and writable: torch gets a buffer it may treat as its own, and nothing reaches the file.
        try:
            window = mmap.mmap(
                self.descriptor,
                offset - start + entry.nbytes,
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=start,
            )
        except OSError:  # a file system that does not map files: the tensor is read into a buffer instead
            return None
        window.madvise(mmap.MADV_WILLNEED)  # the kernel starts reading what the page cache lacks
        return torch.frombuffer(window, dtype=dtype, offset=offset - start, count=entry.numel).reshape(entry.shape)

    def ensure_open(self) -> None:
        if self.stream is not None:
            return
        try:
            self.stream = self.item.open()
        except OSError as error:  # gone (or unreadable) since the hashing read: not the model's fault
            raise ContentChanged(
                f"{self.item.path} is gone since it was hashed ({error}); verify the revision again"
            ) from error
        identity = file_identity(self.stream)
        self.check_identity(identity)
        self.descriptor = self.stream.fileno() if identity is not None else None

    def check_identity(self, identity) -> None:
        if identity != self.identity:
            raise ContentChanged(f"{self.item.path} changed after it was hashed; verify the revision again")

    def pread_into(self, offset: int, target: memoryview) -> None:
        done = 0
        while done < len(target):
            count = os.preadv(self.descriptor, [target[done:]], offset + done)
            if not count:
                raise self.ended(offset + done)
            done += count

    def stream_into(self, offset: int, target: memoryview) -> None:
        if self.stream.seekable():
            self.stream.seek(offset)
        else:
            if offset < self.position:  # a stream that cannot seek goes back by starting again
                self.stream.close()
                self.stream, self.position = self.item.open(), 0
            while self.position < offset:
                skipped = len(self.stream.read(min(SKIP_BYTES, offset - self.position)))
                if not skipped:
                    raise self.ended(self.position)
                self.position += skipped
        done = 0
        while done < len(target):
            count = self.read_some(target[done:])
            if not count:
                raise self.ended(offset + done)
            done += count
        self.position = offset + done

    def read_some(self, target: memoryview) -> int:
        if hasattr(self.stream, "readinto"):
            return self.stream.readinto(target)
        data = self.stream.read(len(target))  # S3 bodies only offer read()
        target[: len(data)] = data
        return len(data)

    def ended(self, at: int) -> ContentChanged:
        return ContentChanged(
            f"{self.item.path} ends at byte {at}, before the bytes that were hashed; verify the revision again"
        )

    def close(self) -> None:
        if self.stream is not None:
            if self.descriptor is not None:
                self.check_identity(file_identity(self.stream))  # nothing was written while it was read
            self.stream.close()
            self.stream = None


class FileTensors:
    """The tensors of a checkpoint, read from its files when their block runs (the streamed smoke pass's
    source, but for objects host memory can hold). During the hashing read it only records the headers."""

    def __init__(self, files, device, placement, identities: dict):
        self.device = device
        self.placement = placement
        self.files = {item.path: item for item in files if is_weight_shard(item.path)}
        self.identities = identities
        self.entries = {}  # tensor name -> TensorEntry, from the hashing read
        self.located = {}  # tensor name -> (path, byte offset in the file, entry), from the headers read again
        self.readers = {}
        self.buffers = {}  # slot -> host buffer, reused from block to block
        self.reread_bytes = 0
        self.lock = threading.Lock()
        self.pool = None

    def begin(self, header) -> None:
        with self.lock:
            self.entries.update(header.tensors)

    def write(self, name: str, offset: int, piece: memoryview) -> None:
        """The bytes are read again when their block runs: nothing is kept now."""

    def open(self) -> None:
        """Read each shard's header again, so every tensor is found where the hashing read saw it."""
        self.pool = ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="reread")
        self.readers = {path: RangeReader(item, self.identities.get(path)) for path, item in self.files.items()}
        for path, reader in self.readers.items():
            header = self.header_of(path, reader)
            for name, entry in header.tensors.items():
                if self.entries.get(name) != entry:
                    raise ContentChanged(f"{path} no longer holds {name!r} as hashed; verify the revision again")
                self.located[name] = (path, header.data_start + entry.start, entry)

    def header_of(self, path: str, reader: RangeReader):
        prefix = bytearray(8)
        reader.read_into(0, memoryview(prefix))
        length = int.from_bytes(prefix, "little")
        whole = bytearray(8 + min(length, MAX_HEADER_BYTES, self.files[path].size - 8))
        reader.read_into(0, memoryview(whole))
        try:
            return parse_header_bytes(bytes(whole), self.files[path].size)
        except SafetensorsError as error:
            raise ContentChanged(f"{path} has another header than when it was hashed: {error}") from None

    def load(self, names, device, slot: int = 0) -> dict:
        """The named tensors on `device`: for the CPU, mapped from a local file (no copy: the pages come from
        the page cache, or the disk, as the block runs); else read into the host buffer `slot`.

        Tensors read into a buffer are views of it, valid until the next load into the same slot: the
        block stream uses one slot, or two (i % 2) when block i loads while block i - 1 runs.
        """
        # For a GPU, reads on every core into a reused pinned buffer beat faulting in a mapping page by page.
        mapped = {name: self.mapped(name) if device.type == "cpu" else None for name in names}
        copied = self.copied(
            [name for name, tensor in mapped.items() if tensor is None], slot, pinned=device.type == "cuda"
        )
        with self.lock:
            self.reread_bytes += sum(self.located[name][2].nbytes for name in names)
        return {name: (copied[name] if mapped[name] is None else mapped[name]).to(device) for name in names}

    def tensors(self) -> dict:
        """Every tensor on the sink's device at once: the whole model, for the CPU mapped from the files."""
        return self.load(list(self.located), self.device)

    def mapped(self, name: str):
        path, offset, entry = self.located[name]
        return self.readers[path].mapped(offset, entry)

    def copied(self, names: list[str], slot: int, pinned: bool = False) -> dict:
        """Tensors read into the host buffer `slot`, on every core at once (reused: no fresh pages to fault).

        `pinned`: the buffer is page-locked, so the copy to the GPU is a DMA from it, not staged again."""
        slots, end = {}, 0
        for name in names:
            slots[name] = end
            end += -(-self.located[name][2].nbytes // SLOT_ALIGNMENT) * SLOT_ALIGNMENT
        buffer = self.buffer(slot, end, pinned)
        target = memoryview(buffer.numpy())
        reads = []
        for name, start in slots.items():
            path, offset, entry = self.located[name]
            for piece in range(0, entry.nbytes, READ_PIECE_BYTES):
                length = min(READ_PIECE_BYTES, entry.nbytes - piece)
                reads.append((self.readers[path], offset + piece, target[start + piece : start + piece + length]))
        list(self.pool.map(lambda read: read[0].read_into(read[1], read[2]), reads))
        return {
            name: buffer[start : start + self.located[name][2].nbytes]
            .view(torch_dtype(self.located[name][2]))
            .reshape(self.located[name][2].shape)
            for name, start in slots.items()
        }

    def buffer(self, slot: int, size: int, pinned: bool = False):
        import torch

        if slot not in self.buffers or self.buffers[slot].numel() < size:
            self.buffers.pop(slot, None)  # let the smaller one go before taking the larger
            largest = self.placement.largest_block
            # Sized for the largest block at once, so the buffer is not taken again as blocks grow.
            capacity = max(size, largest.nbytes if largest else 0)
            self.buffers[slot] = torch.empty(capacity, dtype=torch.uint8, pin_memory=pinned)
        return self.buffers[slot][:size]

    def close(self) -> None:
        self.buffers.clear()
        if self.pool is not None:
            self.pool.shutdown()
        for reader in self.readers.values():
            reader.close()
