"""A download through the test client: the ticket a resolve redirects to, and the bytes of a response; and a
start early in a rate limit's window."""

import time

from tests.support.flows import SHARD


def ticket_url(client, setup) -> str:
    response = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {setup['token']}")
    assert response.status_code == 302
    return response["Location"]


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def early_in_a_window(seconds: int, needed: float = 10.0) -> None:
    """Wait for the next of the rate limit's fixed windows when less than `needed` seconds are left of this
    one: a test that counts a few requests against the limit must not see its count start again halfway."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.1)
