"""The master key (TRACE_KEY), its id, and the keyed streams every mark and every trace derive from.

HKDF-SHA256 (RFC 5869) turns the master key into one AES-128 key per stream, naming the stream by
its purpose, the repo, the revision, the file, the tensor and, for a recipient's own stream, the
recipient; AES in counter mode from a zero counter gives the stream's bits. A stream key serves one
stream only, so the zero nonce is never reused under a key.

A copy's sign on carrier weight i of a tensor is pattern[i] * code[i // BLOCK]:
  pattern(file, tensor)           one ±1 chip per weight, the same for every recipient (and secret);
  code(file, tensor, recipient)   one ±1 symbol per block of BLOCK consecutive weights, the recipient's.
Shared chips let tracing score a recipient on one number per block instead of one per weight (BLOCK
times less work, which is what makes 10,000 recipients and a million never-issued ids affordable);
for an innocent recipient the code is still a row of fair coins given the leak, so the false-accusation
bound is unchanged. What it costs: a copy whose blocks hold almost no noise scores sqrt(blocks), not
sqrt(weights) (see the README's figures).

The key id (the first 8 bytes of a hash of the key, in hex) is recorded with every copy, so a leak is
traced with the key that marked it and the master key can be rotated.
"""

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SCHEME = "weightgate-trace-v1"  # recorded with each copy: changing anything below makes a new scheme
BLOCK = 64
MIN_KEY_BYTES = 32
KEY_ADVICE = (
    "TRACE_KEY must hold at least 32 random bytes, written as hex or base64 "
    "(make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
)


class TraceKeyError(ValueError):
    pass


def info(*fields: str) -> bytes:
    """Each field with its length first, so no two lists of fields give the same bytes."""
    parts = [field.encode("utf-8") for field in fields]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def keystream(stream_key: bytes, nbytes: int) -> bytes:
    encryptor = Cipher(algorithms.AES(stream_key), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


def signs(packed: bytes | np.ndarray, count: int) -> np.ndarray:
    """The first `count` bits of `packed` (least significant first) as int8 +1 (bit set) or -1."""
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=count, bitorder="little").view(np.int8)
    bits *= 2
    bits -= 1
    return bits


class TraceKey:
    """The master key. Its bytes never leave this object; `key_id` names it in the database."""

    __slots__ = ("_prk", "key_id")

    def __init__(self, secret: bytes):
        if len(secret) < MIN_KEY_BYTES:
            raise TraceKeyError(f"the key has {len(secret)} bytes; {KEY_ADVICE}")
        self.key_id = hashlib.sha256(b"weightgate trace key id\0" + secret).hexdigest()[:16]
        self._prk = hmac.new(SCHEME.encode(), secret, "sha256").digest()  # HKDF-Extract, the scheme as salt

    @classmethod
    def from_text(cls, text: str) -> "TraceKey":
        """A key as the environment holds it: hex, or base64 (standard or URL-safe)."""
        text = text.strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            try:
                standard = text.replace("-", "+").replace("_", "/")
                secret = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
            except binascii.Error:
                raise TraceKeyError(f"the key is neither hex nor base64; {KEY_ADVICE}") from None
        return cls(secret)

    def stream_key(self, *fields: str) -> bytes:
        """HKDF-Expand to 16 bytes (one HMAC block) for the stream `fields` name."""
        return hmac.new(self._prk, info(*fields) + b"\x01", "sha256").digest()[:16]

    def __repr__(self) -> str:
        return f"TraceKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class CopyKeys:
    """The streams of one traceable revision: the master key and the names of what it marks."""

    key: TraceKey
    repo: str
    revision: str

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def pattern(self, file: str, tensor: str, count: int) -> np.ndarray:
        """The ±1 chip of each of a tensor's `count` weights, shared by all recipients."""
        stream = self.key.stream_key("pattern", self.repo, self.revision, file, tensor)
        return signs(keystream(stream, (count + 7) // 8), count)

    def code_bytes(self, file: str, tensor: str, recipient: str, blocks: int) -> bytes:
        """A recipient's symbols for a tensor's `blocks` blocks, one bit each (set: +1)."""
        if not recipient:
            raise ValueError("a recipient id must not be empty")
        stream = self.key.stream_key("code", self.repo, self.revision, file, tensor, recipient)
        return keystream(stream, (blocks + 7) // 8)

    def code(self, file: str, tensor: str, recipient: str, blocks: int) -> np.ndarray:
        return signs(self.code_bytes(file, tensor, recipient, blocks), blocks)
