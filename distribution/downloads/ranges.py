"""Serving a window of a local file: the one byte range a request asks for, counted as it goes out,
with the socket corked while the file is sent."""

import contextlib
import re
import socket

RANGE_PATTERN = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single range, None to send the whole file.

    Syntax we do not serve (several ranges, other units) is ignored as RFC 9110 allows;
    a well-formed range that starts past the end is unsatisfiable.
    """
    match = RANGE_PATTERN.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, end


class CountingFile:
    """A read-only window [start, end] of a file that counts what it hands out and reports on close.

    A WSGI server with sendfile (gunicorn) takes `fileno()` and sends the window itself, from the
    current position for Content-Length bytes, without a copy through Python; the count is then
    unknown and reported as None.
    """

    def __init__(self, path, start: int, end: int, on_close):
        self._handle = open(path, "rb")  # noqa: SIM115  (closed by close(), called by the server)
        self._handle.seek(start)
        self._remaining = end - start + 1
        self._on_close = on_close
        self.bytes_sent = 0
        self._read = False

    def fileno(self) -> int:
        return self._handle.fileno()

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size is None or size < 0 else min(size, self._remaining)
        self._read = True
        data = self._handle.read(size)
        self._remaining -= len(data)
        self.bytes_sent += len(data)
        return data

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()
            self._on_close(self.bytes_sent if self._read or self._remaining <= 0 else None)


def corked(request):
    """The client's socket, where the WSGI server hands it over (gunicorn does); else None. A TCP socket is
    corked first (TCP_CORK); a Unix socket (nginx on the same host, deploy/nginx) has no segments to fill.

    Corked, the kernel sends a file only in full segments, as nginx does with `tcp_nopush` (see
    bench/results/download.md for what it gains). `uncork` must follow, or the file's last segment
    waits 200 ms for more (and so would the next answer on a kept-alive connection).
    """
    client = request.META.get("gunicorn.socket")
    if client is not None and client.family == socket.AF_UNIX:
        return client
    if client is None or not hasattr(socket, "TCP_CORK"):
        return None
    try:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    except OSError:
        return None
    return client


def uncork(client) -> None:
    if client is not None and client.family != socket.AF_UNIX:
        with contextlib.suppress(OSError):  # the client has gone: nothing is waiting
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
