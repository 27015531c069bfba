"""Byte counts as people read them, for every message and progress line of the checks."""

BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float) -> str:
    """`3.4 GiB`, `512.0 MiB`, `100 B`: the largest unit, up to TiB, that keeps the number at 1 or more."""
    if count < 1024:
        return f"{int(count)} B"
    value = float(count)
    for unit in BINARY_UNITS:
        value /= 1024
        if round(value, 1) < 1024 or unit == BINARY_UNITS[-1]:  # so 1023.97 MiB reads 1.0 GiB
            return f"{value:.1f} {unit}"
    raise AssertionError("the last unit always returns")
