"""Fault injection: latency, failed requests, frozen or cut watches, and per-client partitions.

The in-process API (``srv.faults``) is safe to call from any thread. Settings are plain attributes read
by the request path (cheap, no lock); actions that touch live watch streams (cut, unfreeze, partition)
are handed to the server's event loop and complete before the call returns.

Partition behaviour: a partitioned client's requests get ``503 ServiceUnavailable`` by default (a clean
Status body, so client code and tests see a definite failure fast); ``mode="drop"`` instead closes the
connection without any response, which is what a real network partition looks like to urllib3 or
client-go. Either way, that client's open watches are cut at once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .status import ApiError

_ERROR_TEXT = {
    500: ("InternalError", "Internal error occurred: injected by shardlease dev-server"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request "
                                "(injected by shardlease dev-server)"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the request path must do for one request before (or instead of) serving it."""

    delay: float = 0.0
    error: ApiError | None = None
    drop: bool = False


NO_FAULT = Verdict()


class Faults:
    """The fault knobs of one DevServer. ``clear()`` restores normal service."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cut: Callable[[str | None, bool], None] = lambda client, graceful: None
        self._wake: Callable[[], None] = lambda: None
        self.latency = 0.0
        self.jitter = 0.0
        self.error_fraction = 0.0
        self.error_code = 503
        self.retry_after = 1
        self.watches_frozen = False
        self.partitions: dict[str, str] = {}
        self._active = False

    def bind(self, cut: Callable[[str | None, bool], None], wake: Callable[[], None]) -> None:
        """Called by the server: how to cut watch streams and how to wake frozen ones."""
        self._cut = cut
        self._wake = wake

    def _refresh(self) -> None:
        self._active = bool(self.latency or self.jitter or self.error_fraction or self.partitions)

    # ------------------------------------------------------------------ knobs

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay every API request by ``seconds`` plus a uniform random ``[0, jitter)``."""
        if seconds < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        self.latency, self.jitter = float(seconds), float(jitter)
        self._refresh()

    def set_errors(self, fraction: float, code: int = 503, retry_after: int = 1) -> None:
        """Fail ``fraction`` (0..1) of API requests with ``code`` (500, 503 or 429).

        A 429 carries ``Retry-After: retry_after`` and ``details.retryAfterSeconds`` as
        kube-apiserver's priority-and-fairness rejections do.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        if code not in _ERROR_TEXT:
            raise ValueError(f"code must be one of {sorted(_ERROR_TEXT)}")
        self.error_fraction, self.error_code, self.retry_after = float(fraction), code, int(retry_after)
        self._refresh()

    def freeze_watches(self) -> None:
        """Hold back all watch events (connections stay open) until :meth:`unfreeze_watches`."""
        self.watches_frozen = True

    def unfreeze_watches(self) -> None:
        self.watches_frozen = False
        self._wake()

    def cut_watches(self, graceful: bool = False) -> None:
        """Close every open watch now: abruptly (a dropped connection) or, with ``graceful``, with a
        clean end of stream (clients then simply re-watch from their last resourceVersion)."""
        self._cut(None, graceful)

    def partition(self, client: str, mode: str = "error") -> None:
        """Make every request from ``client`` fail (``mode`` "error" = 503, "drop" = no answer)."""
        if mode not in ("error", "drop"):
            raise ValueError('mode must be "error" or "drop"')
        with self._lock:
            self.partitions = {**self.partitions, client: mode}
        self._refresh()
        self._cut(client, False)

    def heal(self, client: str | None = None) -> None:
        """End the partition of ``client``, or of every client when ``None``."""
        with self._lock:
            self.partitions = {} if client is None else {
                k: v for k, v in self.partitions.items() if k != client}
        self._refresh()

    def clear(self) -> None:
        """Remove every fault: latency, errors, partitions, and the watch freeze."""
        self.latency = self.jitter = self.error_fraction = 0.0
        self.error_code, self.retry_after = 503, 1
        self.heal()
        self.unfreeze_watches()

    # ------------------------------------------------------------------ request path

    def verdict(self, client: str) -> Verdict:
        if not self._active:
            return NO_FAULT
        mode = self.partitions.get(client)
        if mode == "drop":
            return Verdict(drop=True)
        if mode == "error":
            return Verdict(error=ApiError(
                503, f'client "{client}" is partitioned from the server (injected by shardlease '
                     f'dev-server)', "ServiceUnavailable"))
        delay = self.latency + (self._rng.uniform(0.0, self.jitter) if self.jitter else 0.0)
        error = None
        if self.error_fraction and self._rng.random() < self.error_fraction:
            reason, message = _ERROR_TEXT[self.error_code]
            if self.error_code == 429:
                error = ApiError(429, message, reason, {"retryAfterSeconds": self.retry_after},
                                 {"Retry-After": str(self.retry_after)})
            else:
                error = ApiError(self.error_code, message, reason)
        return Verdict(delay=delay, error=error)

    # ------------------------------------------------------------------ admin endpoint

    def snapshot(self) -> dict[str, Any]:
        return {"latency": self.latency, "jitter": self.jitter,
                "errors": {"fraction": self.error_fraction, "code": self.error_code,
                           "retry_after": self.retry_after},
                "watches_frozen": self.watches_frozen, "partitions": dict(self.partitions)}

    def apply(self, command: dict[str, Any]) -> None:
        """Apply an admin-endpoint JSON command. Keys (all optional), applied in this order:
        ``clear`` (bool), ``latency`` (seconds) with ``jitter``, ``errors``
        ``{"fraction", "code", "retry_after"}``, ``freeze_watches`` (bool), ``cut_watches``
        (bool or "graceful"), ``partition`` (list of clients, or {client: mode}), ``heal``
        (list of clients, or true for all)."""
        if not isinstance(command, dict):
            raise ValueError("the body must be a JSON object")
        unknown = set(command) - {"clear", "latency", "jitter", "errors", "freeze_watches",
                                  "cut_watches", "partition", "heal"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if command.get("clear"):
            self.clear()
        if "latency" in command or "jitter" in command:
            self.set_latency(float(command.get("latency", self.latency)),
                             float(command.get("jitter", 0.0)))
        if "errors" in command:
            errors = command["errors"] or {}
            self.set_errors(float(errors.get("fraction", 0.0)), int(errors.get("code", 503)),
                            int(errors.get("retry_after", 1)))
        if "freeze_watches" in command:
            self.freeze_watches() if command["freeze_watches"] else self.unfreeze_watches()
        if command.get("cut_watches"):
            self.cut_watches(graceful=command["cut_watches"] == "graceful")
        partition = command.get("partition")
        if isinstance(partition, dict):
            for client, mode in partition.items():
                self.partition(str(client), str(mode))
        elif partition:
            for client in partition:
                self.partition(str(client))
        heal = command.get("heal")
        if heal is True:
            self.heal()
        elif heal:
            for client in heal:
                self.heal(str(client))
