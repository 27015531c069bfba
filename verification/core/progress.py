"""Progress of the hashing read on a terminal: a line per file once it is read (size, time, rate), and
one status line, rewritten in place, with the files being read, their bytes done and rate.

Fed by `scan_files(progress=...)` from the reading threads. The CLI shows it only when stderr is a
terminal, so a log or `--json` output never holds it.
"""

import shutil
import threading
import time
from dataclasses import dataclass

from verification.core.sizes import format_bytes

CLEAR_LINE = "\r\x1b[K"


@dataclass
class FileProgress:
    path: str
    size: int
    started: float
    done: int = 0

    def rate(self, now: float) -> float:
        return self.done / max(now - self.started, 1e-6)


class TerminalProgress:
    def __init__(self, stream, *, clock=time.monotonic, interval: float = 0.1, width: int | None = None):
        self.stream, self.clock, self.interval = stream, clock, interval
        self.width = width or shutil.get_terminal_size(fallback=(100, 24)).columns
        self.reading: dict[str, FileProgress] = {}
        self.finished = 0
        self.drawn_at = float("-inf")
        self.lock = threading.Lock()

    def __call__(self, item, count: int) -> None:
        with self.lock:
            now = self.clock()
            state = self.reading.setdefault(item.path, FileProgress(item.path, item.size, now))
            state.done += count
            if state.done >= state.size:
                self.file_done(self.reading.pop(item.path), now)
            elif now - self.drawn_at >= self.interval:
                self.draw(now)

    def file_done(self, state: FileProgress, now: float) -> None:
        self.finished += 1
        seconds = now - state.started
        self.stream.write(
            f"{CLEAR_LINE}read {state.path}: {format_bytes(state.size)} in {seconds:.2f} s "
            f"({format_bytes(state.rate(now))}/s)\n"
        )
        self.draw(now)

    def status(self, now: float) -> str:
        parts = [
            f"{state.path} {format_bytes(state.done)} of {format_bytes(state.size)}, {format_bytes(state.rate(now))}/s"
            for state in self.reading.values()
        ]
        files = f"{self.finished} file{'' if self.finished == 1 else 's'} read"
        return f"{files}; reading " + " | ".join(parts) if parts else ""

    def draw(self, now: float) -> None:
        # Cut to the terminal's width: a wrapped line could not be rewritten in place.
        self.stream.write(CLEAR_LINE + self.status(now)[: self.width - 1])
        self.stream.flush()
        self.drawn_at = now

    def close(self) -> None:
        with self.lock:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()


class LineProgress(TerminalProgress):
    """The same per-file lines for a log or a pipe: no status line rewritten in place."""

    def file_done(self, state: FileProgress, now: float) -> None:
        self.finished += 1
        seconds = now - state.started
        self.stream.write(
            f"read {state.path}: {format_bytes(state.size)} in {seconds:.2f} s ({format_bytes(state.rate(now))}/s)\n"
        )
        self.stream.flush()

    def draw(self, now: float) -> None:
        self.drawn_at = now

    def close(self) -> None:
        pass


def progress_for(stream):
    """A status line on a terminal, plain lines otherwise."""
    return TerminalProgress(stream) if stream.isatty() else LineProgress(stream)
