"""How publish_checkpoint shows its progress, on stderr: a bar on a terminal, plain lines otherwise."""

import threading
import time

from tqdm import tqdm

from distribution.publishing import FileOutcome, Silent

LINE_EVERY_SECONDS = 30  # between lines saying how far a long file has gone


def size(count: int) -> str:
    return tqdm.format_sizeof(count, "B", 1024)


class Lines:
    """A line when the publish begins, one per file stored, and one every LINE_EVERY_SECONDS between."""

    def __init__(self, stream):
        self.stream, self.lock = stream, threading.Lock()
        self.done = self.total = self.files = self.files_done = 0
        self.last_line = time.monotonic()

    def say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
        self.last_line = time.monotonic()

    def begin(self, draft, *, resumed, files, total, there_files, there):
        self.done, self.total, self.files, self.files_done = there, total, files, there_files
        resuming = f"; resuming, {there_files} files ({size(there)}) already there" if resumed else ""
        self.say(f"publishing {files} files ({size(total)}) to {draft.repo.repo_id} as {draft.commit}{resuming}")

    def advance(self, count: int) -> None:
        with self.lock:
            self.done += count
            if time.monotonic() - self.last_line >= LINE_EVERY_SECONDS:
                self.say(f"{size(self.done)} of {size(self.total)} stored ({100 * self.done // max(self.total, 1)}%)")

    def file_done(self, outcome: FileOutcome) -> None:
        with self.lock:
            self.files_done += 1
            self.say(f"{outcome.status} {outcome.path} ({size(outcome.size)}), {self.files_done}/{self.files} files")

    def end(self) -> None:
        pass


class Bar:
    """A tqdm bar of the bytes in storage, already-there files counted from the start."""

    def __init__(self, stream):
        self.stream, self.lock, self.bar = stream, threading.Lock(), None
        self.files = self.files_done = 0

    def begin(self, draft, *, resumed, files, total, there_files, there):
        self.files, self.files_done = files, there_files
        self.bar = tqdm(
            total=total,
            initial=there,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            desc=f"{draft.repo.repo_id} {draft.commit[:12]}",
            postfix=f"{there_files}/{files} files",
            dynamic_ncols=True,
        )

    def advance(self, count: int) -> None:
        with self.lock:
            self.bar.update(count)

    def file_done(self, outcome: FileOutcome) -> None:
        with self.lock:
            self.files_done += 1
            self.bar.set_postfix_str(f"{self.files_done}/{self.files} files")

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_for(stream, *, quiet: bool):
    if quiet:
        return Silent()
    return Bar(stream) if stream.isatty() else Lines(stream)
