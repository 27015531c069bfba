"""Request bodies the JSON endpoints take (the Hub's calls, the portal's own)."""

import json


def json_object(body: bytes) -> dict:
    """`body` as a JSON object (empty: {}); ValueError saying what is wrong with it otherwise."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise ValueError("the request body is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("the request body must be a JSON object")
    return value
