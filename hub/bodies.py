"""Request bodies the JSON endpoints take (the Hub's calls, the portal's own)."""

import json


def json_object(body: bytes) -> dict:
    """`body` as a JSON object (empty: {}); ValueError saying what is wrong with it otherwise."""
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ValueError("the request body is not JSON (or is nested too deeply)") from None
    if not isinstance(value, dict):
        raise ValueError("the request body must be a JSON object")
    if holds_nul(value):
        # No name or text the portal stores or looks up may hold one: PostgreSQL cannot compare it.
        raise ValueError("the request body holds a NUL character (\\u0000), which no name, path or text may hold")
    return value


def holds_nul(value) -> bool:
    """Whether any string in a parsed JSON value, key or item, holds a NUL (walked without recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
