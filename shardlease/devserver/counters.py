"""Per (verb, resource) request counters and per-client watch-event counters, so tests and benchmarks
can assert how chatty a client is and how much the server fans out to it (watch events delivered).

Counting happens on the server's event loop only, so a plain dict increment is enough; readers on
other threads get a copy.
"""

from __future__ import annotations


class RequestCounter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._watch_events: dict[str, int] = {}

    def add(self, verb: str, resource: str) -> None:
        key = (verb, resource)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def add_watch_events(self, client: str, events: int) -> None:
        """``events`` ADDED/MODIFIED/DELETED events written to a watch of ``client`` (bookmarks excluded)."""
        watch = self._watch_events
        watch[client] = watch.get(client, 0) + events

    def snapshot(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)

    def watch_events(self) -> dict[str, int]:
        return dict(self._watch_events)

    def reset(self) -> None:
        # Rebinding (rather than clear()) keeps a concurrent add on the loop thread from racing a
        # half-cleared dict.
        self._counts = {}
        self._watch_events = {}
