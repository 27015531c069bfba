"""SHA-256 whose running state can be written down and taken up again, in another process or on another host.

A recipient's copy of a served file is the base's shared prefix (gigabytes) then their tail (at most 32 MiB),
and its sha256 is the prefix's hash state fed the tail. hashlib's states cannot leave the process that made
them, so every web process used to read every base's whole prefix once to hash it: for a release of
hundreds of gigabytes, minutes before its first copy. Here the state after the prefix is recorded once, where
the base is written, as SHA-256 itself defines it (the eight chaining words, the message length, the bytes of
the unfinished block), and each web process resumes it and hashes only tails.

The hashing is OpenSSL's own (the libcrypto that CPython's hashlib uses), called through ctypes, which
releases the GIL as hashlib does. Where that library or its SHA256 functions cannot be loaded,
`Sha256StateUnavailable` says so and callers hash the prefix with hashlib as before.
"""

import ctypes
import ctypes.util
import functools

BLOCK = 64


class Sha256StateUnavailable(Exception):
    """This host's libcrypto cannot be loaded with SHA256_Init, SHA256_Update and SHA256_Final."""


class _Context(ctypes.Structure):
    # SHA256_CTX of OpenSSL's sha.h, unchanged from 0.9.8 to 3.x.
    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint32 * 16),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    ]


@functools.cache
def _libcrypto():
    names = [ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.dylib"]
    for name in filter(None, names):
        try:
            library = ctypes.CDLL(name)
            for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
                getattr(library, function)
        except (OSError, AttributeError):
            continue
        library.SHA256_Update.argtypes = [ctypes.POINTER(_Context), ctypes.c_void_p, ctypes.c_size_t]
        library.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Context)]
        library.SHA256_Init.argtypes = [ctypes.POINTER(_Context)]
        return library
    raise Sha256StateUnavailable("no libcrypto with SHA256_Init, SHA256_Update and SHA256_Final can be loaded")


def available() -> bool:
    try:
        _libcrypto()
    except Sha256StateUnavailable:
        return False
    return True


class ResumableSha256:
    """hashlib.sha256's update, copy and hexdigest, and `state()` / `from_state()` to carry it elsewhere."""

    def __init__(self, data=b""):
        self._library = _libcrypto()
        self._context = _Context()
        self._library.SHA256_Init(ctypes.byref(self._context))
        if data:
            self.update(data)

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        if view.readonly:  # bytes (passed as they are), or a read-only view of something else (copied)
            held = view.obj if isinstance(view.obj, bytes) and view.nbytes == len(view.obj) else view.tobytes()
            pointer = ctypes.cast(ctypes.c_char_p(held), ctypes.c_void_p)
        else:
            held = (ctypes.c_char * view.nbytes).from_buffer(view)  # kept until the call returns
            pointer = ctypes.addressof(held)
        self._library.SHA256_Update(ctypes.byref(self._context), pointer, view.nbytes)
        del held

    def copy(self) -> "ResumableSha256":
        twin = object.__new__(ResumableSha256)
        twin._library, twin._context = self._library, _Context.from_buffer_copy(self._context)
        return twin

    def digest(self) -> bytes:
        out = ctypes.create_string_buffer(32)
        self._library.SHA256_Final(out, ctypes.byref(_Context.from_buffer_copy(self._context)))
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    @property
    def length(self) -> int:
        """Bytes hashed so far."""
        return ((self._context.Nh << 32) | self._context.Nl) // 8

    def state(self) -> dict:
        """The state as SHA-256 defines it, in JSON: chaining words, bytes hashed, the unfinished block's bytes."""
        pending = bytes(self._context.data)[: self._context.num]
        return {"h": [f"{word:08x}" for word in self._context.h], "length": self.length, "pending": pending.hex()}

    @classmethod
    def from_state(cls, state: dict) -> "ResumableSha256":
        """ValueError for a state that is not one `state()` gives."""
        try:
            words = [int(word, 16) for word in state["h"]]
            length, pending = int(state["length"]), bytes.fromhex(state["pending"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a SHA-256 state: {error}") from None
        if len(words) != 8 or any(not 0 <= w < 2**32 for w in words) or length < 0 or len(pending) != length % BLOCK:
            raise ValueError("not a SHA-256 state: 8 words of 32 bits, and length % 64 pending bytes")
        resumed = cls()
        context = resumed._context
        context.h[:] = words
        bits = length * 8
        context.Nl, context.Nh = bits & 0xFFFFFFFF, bits >> 32
        ctypes.memmove(ctypes.addressof(context.data), pending, len(pending))
        context.num = len(pending)
        return resumed
