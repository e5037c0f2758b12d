"""Stop signals that arrive before a manager is ready to act on them.

A pod can be terminated at any moment of its start-up: a rollout is superseded, a node is drained.
``shardlease run`` spends its first second importing pydantic and the Kubernetes client and reading
its configuration, long before ``ShardManager.run()`` installs its SIGTERM/SIGINT handlers. With
Python's default dispositions a SIGTERM in that second killed the process with status -15 (143 in
Kubernetes) and an empty log, and a SIGINT raised ``KeyboardInterrupt`` in whatever import was running.

:func:`catch_early` (called by the CLI before anything else) records such a signal instead, and
``ShardManager.run()`` consumes it with :func:`take_early`: the manager then stops before it starts,
takes nothing and exits 0. The only window left is the interpreter's own start-up, before any
shardlease code runs, when the process holds nothing either.

Standard library only, so the CLI can call it before its heavy imports.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["STOP_SIGNALS", "catch_early", "take_early"]

#: The signals that ask a replica to hand its shards back and exit.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

_received: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def catch_early() -> None:
    """Record stop signals from now on instead of dying; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        try:
            signal.signal(signum, _remember)
        except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
            pass


def take_early() -> int | None:
    """The first stop signal recorded since :func:`catch_early`, forgotten once taken (else ``None``)."""
    if not _received:
        return None
    first = _received[0]
    _received.clear()
    return first
