"""A per-process memory of recent outcomes (download decisions, presigned links), each kept for a while."""

import threading
import time

# Each decision holds its rows (a file, its revision and repo, the account, grant and token): a few KB.
MAX_ENTRIES = 10_000


class Remembered:
    """A dictionary whose entries last `lifetime()` seconds, cleared as a whole when access changes.

    `lookup` also hands out refreshes: once an entry has lived REFRESH_AFTER of its life, one caller
    at a time is told to check again in full while the others go on using it, so a busy key never
    expires under its callers and sends them all through the full checks at once.
    """

    REFRESH_AFTER = 0.75

    def __init__(self, lifetime):
        self.lifetime = lifetime
        self.entries: dict = {}
        self.refreshing: set = set()
        self.generation = 0  # counts the clears, so a check that began before one is not kept after it
        self.lock = threading.Lock()

    def get(self, key):
        found = self.lookup(key, refresh=False)
        return found[0] if found else None

    def lookup(self, key, *, refresh: bool = True) -> tuple | None:
        """(value, whether this caller should check again and `put` or `release`), or None."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        age, lifetime = time.monotonic() - entry[0], self.lifetime()
        if age >= lifetime:
            return None
        if refresh and age >= lifetime * self.REFRESH_AFTER and key not in self.refreshing:
            with self.lock:
                if key not in self.refreshing:
                    self.refreshing.add(key)
                    return entry[1], True
        return entry[1], False

    def release(self, key, value) -> None:
        """End a refresh; the entry goes unless the check that refreshed it put a new one."""
        with self.lock:
            self.refreshing.discard(key)
            entry = self.entries.get(key)
            if entry is not None and entry[1] is value:
                del self.entries[key]

    def put(self, key, value, *, generation: int | None = None) -> None:
        with self.lock:
            if generation is not None and generation != self.generation:
                return  # access changed while the value was being worked out
            if len(self.entries) >= MAX_ENTRIES:  # expired entries are not removed until here
                now, lifetime = time.monotonic(), self.lifetime()
                self.entries = {k: entry for k, entry in self.entries.items() if now - entry[0] < lifetime}
                if len(self.entries) >= MAX_ENTRIES // 2:  # mostly live: start again rather than prune often
                    self.entries = {}
            self.entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with self.lock:
            self.entries = {}
            self.generation += 1
