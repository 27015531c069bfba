"""Which kinds of file a model repo may hold, judged from a file's path and its first bytes.

The `files` check applies it to every file it scanned; the Hub's preupload call applies it to the
path and the 512-byte sample the client sends, so a pickle is refused before a byte of it is uploaded.
"""

import pickletools

from verification.core.signature import SIGNATURE_PATH

# Weight formats that run code when loaded; they are refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz")
PICKLE_PROTOCOL_MARKS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))
ZIP_MAGIC = b"PK\x03\x04"
# What a model repo holds besides its weights: configs and indexes, tokenizers, chat templates, text
# and the model card's pictures. A loader never unpickles these; any other kind of file is refused.
ALLOWED_SUFFIXES = (
    ".safetensors",
    ".json",
    ".model",
    ".tiktoken",
    ".jinja",
    ".txt",
    ".md",
    ".yaml",
    ".yml",
    ".cff",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
)
# The portal's own signature of a release (publishing refuses one a checkpoint brings) is read again by
# a re-verification.
ALLOWED_NAMES = frozenset(
    {"LICENSE", "NOTICE", "README", "USE_POLICY", "COPYING", ".gitattributes", ".gitignore", SIGNATURE_PATH}
)
# Code a recipient's loader runs under trust_remote_code: refused unless the repo allows it.
CODE_SUFFIXES = (".py",)
# Opcodes that build objects: text read as opcodes (a line starting with P, S, I, ...) has none of them.
BUILDING_OPCODES = frozenset(
    {"MARK", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "APPEND", "APPENDS", "SETITEM"}
    | {"SETITEMS", "DICT", "LIST", "TUPLE", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"}
)


def is_pickle(head: bytes) -> bool:
    """Whether a file's first bytes are a pickle program, of any protocol (0 and 1 carry no mark): one
    that is the whole of them or builds objects before its end, or one that runs on past them,
    building objects all along (text read as opcodes builds nothing)."""
    if head.startswith(PICKLE_PROTOCOL_MARKS):
        return True
    names = []
    try:
        for opcode, _argument, position in pickletools.genops(head):
            names.append(opcode.name)
            if opcode.name == "STOP":
                return position == len(head) - 1 or bool(BUILDING_OPCODES.intersection(names))
    except ValueError:  # cut short at the end of `head`, or bytes that are no opcode
        pass
    except Exception:  # anything else genops cannot read is no pickle it knows
        return False
    return len(names) >= 32 and len(BUILDING_OPCODES.intersection(names)) >= 3


def refused_kind(path: str, head: bytes, *, allow_code: bool = False) -> tuple[str, str] | None:
    """(code, message) when a model repo may not hold this file; None when it may."""
    name = path.rsplit("/", 1)[-1]
    # A safetensors file starts with its header length, which can look like a pickle mark: its
    # own parser judges it. Anything else is sniffed, whatever its name says.
    sniffed = not path.endswith(".safetensors") and (is_pickle(head) or head.startswith(ZIP_MAGIC))
    if path.lower().endswith(PICKLE_SUFFIXES) or sniffed:
        return (
            "PickleWeights",
            f"{path} is a pickle-based file, which can run code when loaded; it was not opened. "
            "Convert the weights to safetensors and publish again.",
        )
    if name.endswith(CODE_SUFFIXES):
        if allow_code:
            return None
        return (
            "CodeNotAllowed",
            f"{path} is Python code, which runs on every recipient's machine under "
            "trust_remote_code; this repo does not allow code (staff can allow it in the repo's settings)",
        )
    if not (name.endswith(ALLOWED_SUFFIXES) or name.split(".")[0] in ALLOWED_NAMES or name in ALLOWED_NAMES):
        return (
            "FileKindNotAllowed",
            f"{path} is not a kind of file a model repo holds (weights in .safetensors, JSON configs, "
            "tokenizer files, text, pictures); remove it or convert it, and publish again",
        )
    return None
