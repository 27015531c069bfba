"""A download through the test client: the ticket a resolve redirects to, and the bytes of a response."""

from tests.support.flows import SHARD


def ticket_url(client, setup) -> str:
    response = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {setup['token']}")
    assert response.status_code == 302
    return response["Location"]


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content
