"""Per (verb, resource) request counters, so tests and benchmarks can assert how chatty a client is.

Counting happens on the server's event loop only, so a plain dict increment is enough; readers on
other threads get a copy.
"""

from __future__ import annotations


class RequestCounter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, verb: str, resource: str) -> None:
        key = (verb, resource)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)

    def reset(self) -> None:
        # Rebinding (rather than clear()) keeps a concurrent add on the loop thread from racing a
        # half-cleared dict.
        self._counts = {}
