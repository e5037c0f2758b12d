"""A shard's reported load, smoothed: an exponentially weighted moving average over time.

Handlers report whatever they measure (items per second, bytes, CPU seconds) as often as they like; the
value published with the renewals is the average with weights halving every ``half_life`` seconds. A
report ``dt`` seconds after the previous one moves the average by ``1 - 2 ** (-dt / half_life)`` of the
difference, so the result depends on the time between reports, not on how many there were: a handler
that reports every item and one that reports every ten seconds converge to the same value. The first
report is taken as it is.

Pure (time passed in). A meter is written by one handler thread and read by the control loop; its state
is one tuple, replaced whole, so a reader never sees half an update.
"""

from __future__ import annotations

import math

from shardlease.errors import InvalidArgument

__all__ = ["LoadMeter", "check_load"]


def check_load(value: object) -> float:
    """``value`` as a load, or :class:`InvalidArgument` saying what a load must be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise InvalidArgument(f"shard.report_load(value): value must be a finite number >= 0 in the unit you chose "
                              f"(e.g. items per second), got {value!r}")
    return float(value)


class LoadMeter:
    """The smoothed load of one shard (see the module docstring)."""

    __slots__ = ("half_life", "_state")

    def __init__(self, half_life: float) -> None:
        if not (half_life > 0 and math.isfinite(half_life)):
            raise InvalidArgument(f"half_life must be a finite number of seconds > 0, got {half_life!r}")
        self.half_life = half_life
        self._state: tuple[float, float] | None = None  # (average, monotonic time of the last report)

    def report(self, value: object, now: float) -> None:
        """Take in one measurement made at ``now`` (monotonic seconds)."""
        load = check_load(value)
        state = self._state
        if state is None:
            self._state = (load, now)
            return
        average, at = state
        weight = 1.0 - 0.5 ** (max(0.0, now - at) / self.half_life)
        self._state = (average + weight * (load - average), max(at, now))

    @property
    def value(self) -> float | None:
        """The smoothed load, ``None`` before the first report."""
        state = self._state
        return None if state is None else state[0]
