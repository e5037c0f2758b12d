"""Helpers shared by the test packages: polling for a condition, finding a free TCP port, and a metrics
stand-in for the pure core components.

``tests/`` is on ``sys.path`` for every test (pytest inserts the directory of the root ``conftest.py``,
which has no ``__init__.py`` above it), so any test module imports these as ``from support import ...``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RecordingMetrics", "free_port", "poll", "wait_until"]


def poll(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (checked every ``interval``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "the condition",
               interval: float = 0.02) -> float:
    """Wait for ``predicate()`` to be true; return the monotonic time it was seen true, or fail the test
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; it may be taken again before use)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RecordingMetrics:
    """What a core component is given as ``metrics`` in table tests: records the labels of
    ``api_error`` calls in :attr:`errors` and accepts every other metric call (``.inc()``,
    ``.labels(...).set(...)``, ...) without effect."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def api_error(self, label: str) -> None:
        self.errors.append(label)

    def __getattr__(self, _name: str) -> Any:
        return self

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        return self
