"""The write budget: how a replica spaces its renewals to write at most ``max_write_rate`` Leases a second.

Every held Lease costs the API server (and etcd) one write per renew interval, wherever the replica
runs. A user who shares a control plane may cap that cost per replica with ``--max-write-rate W``. The
rules, all pure (time comes in as ``now``):

* **Spacing.** Writes are paced one per ``1/W`` seconds. A held shard's renewal falls due at the plain
  renew interval ``RI``, as without a budget, then reserves the next free slot and waits for it; slots
  go first come, first served, so the held shards take turns and each is renewed about every
  ``H / (W - 1/RI)`` seconds (:attr:`BudgetPlan.interval`), and a burst (every shard acquired at once)
  spreads out over one such interval instead of landing on the server together. The member Lease's
  renewals (they say the replica is alive), releases and chores do not wait: they take a slot as they
  are sent, so renewals make room for them. Acquisitions neither wait nor take a slot: taking over a
  failed peer's shards is a burst the budget does not delay, and it must not push the renewals of the
  shards already held towards the bound, where a slow answer would cost them too.
* **Bound.** A renewal is never sent later than ``B = max(RI, renew_deadline - retry_period)`` after the
  start of the last successful renewal of that Lease: a renewal whose slot would be later goes at the
  bound (over the budget for a moment, but safe). That leaves at least one retry period before the renew
  deadline for a failed renewal to be retried (the room ``renew_interval + retry_period <=
  renew_deadline`` leaves without a budget), so spacing never costs a shard that a plain renewal keeps.
* **Cannot be met.** When even renewing every ``B`` needs more than ``W`` (``H / B + 1/RI > W``), the
  slots come at the rate that renews every held shard about every ``B`` (3% faster, so that turns stay
  inside the bound), close to the fewest writes that are safe, and the replica reports it (log,
  metrics, status): :attr:`BudgetPlan.exceeded`.

Without a budget none of this runs: :class:`~shardlease.core.elections.ShardElections` holds no
:class:`WriteBudget` and renews every ``RI`` as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BudgetPlan", "WriteBudget", "longest_renew_gap"]

# A plan within this fraction of the budget counts as meeting it (float rounding of H / interval).
_TOLERANCE = 1e-9
#: When the budget cannot be met, slots come this much faster than the fewest safe writes need, so the
#: turns come round a little inside the bound instead of exactly at it (where any delay would push
#: renewals past it, all together).
_EXCEEDED_HEADROOM = 1.03


def longest_renew_gap(renew_every: float, renew_deadline: float, retry_period: float) -> float:
    """The bound ``B``: the latest a renewal is sent after the start of the last successful one.

    ``renew_deadline - retry_period`` keeps a retry period for one retry before the deadline; when the
    configured renew interval is longer than that (short deadlines), the interval itself is the bound,
    as it is without a budget.
    """
    return max(renew_every, renew_deadline - retry_period)


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """The spacing for a given number of held shards."""

    #: Shard Leases held.
    held: int
    #: Seconds between two renewals of one held shard Lease, as the slots work out.
    interval: float
    #: Writes per second the held Leases (shards + member) would make at the plain renew interval.
    asked: float
    #: Writes per second they make at :attr:`interval` (the member Lease at its own interval).
    planned: float
    #: ``W``.
    rate: float
    #: The bound ``B``.
    longest: float

    @property
    def exceeded(self) -> bool:
        """Even at the bound the held Leases need more than ``W`` writes per second."""
        return self.planned > self.rate * (1 + _TOLERANCE)

    def describe(self) -> str:
        """The numbers and the fix, for the log line that reports an exceeded budget."""
        return (f"{self.held} shard Leases + the member Lease need {self.planned:.3g} writes/s even when each shard "
                f"is renewed only every {self.longest:g}s (the longest safe interval, renew_deadline - "
                f"retry_period), over max_write_rate {self.rate:g}; renewing each about every {self.longest:g}s anyway. "
                f"Fix: raise --max-write-rate / SHARDLEASE_MAX_WRITE_RATE to at least {math.ceil(self.planned * 100) / 100:g}, "
                f"run more replicas (fewer shards each), or raise --renew-deadline and --lease-duration")


class WriteBudget:
    """Pacing state for one replica (see the module docstring). Not thread-safe: the reactor owns it."""

    def __init__(self, rate: float, *, renew_every: float, renew_deadline: float, retry_period: float) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"max_write_rate must be a finite number > 0, got {rate!r}")
        self.rate = rate
        self.renew_every = renew_every
        self.longest = longest_renew_gap(renew_every, renew_deadline, retry_period)
        self.member_rate = 1.0 / renew_every
        self._slot = 1.0 / rate
        #: The earliest time the next write fits the budget.
        self._next_free = -math.inf
        #: Renewals sent at the bound without a slot (over the budget for a moment).
        self.forced = 0
        self.plan = self.plan_for(0)

    def plan_for(self, held: int) -> BudgetPlan:
        """The interval and the write rates with ``held`` shard Leases held."""
        spare = self.rate - self.member_rate
        if held <= 0:
            interval = self.renew_every
        elif spare <= 0:
            interval = self.longest
        else:
            interval = min(self.longest, max(self.renew_every, held / spare))
        return BudgetPlan(held=held, interval=interval, asked=(held + 1) / self.renew_every,
                          planned=held / interval + self.member_rate, rate=self.rate, longest=self.longest)

    def replan(self, held: int) -> BudgetPlan | None:
        """Adopt the plan for ``held`` shards; returns it when it changed whether the budget is exceeded."""
        if held == self.plan.held:
            return None
        before = self.plan.exceeded
        self.plan = self.plan_for(held)
        pace = self.plan.planned * _EXCEEDED_HEADROOM if self.plan.exceeded else self.rate
        self._slot = 1.0 / pace
        return self.plan if self.plan.exceeded != before else None

    def reserve(self, now: float, renew_started: float) -> float:
        """The time a renewal due now may be sent: the next free slot, but never past the bound.

        A slot at or before ``now`` means "send it now". A renewal pushed to the bound does not take a
        slot: it is over the budget and the slots after it stay where they were.
        """
        latest = renew_started + self.longest
        slot = max(now, self._next_free)
        if slot > latest:
            self.forced += 1
            return max(now, latest)
        self._next_free = slot + self._slot
        return slot

    def spend(self, now: float) -> None:
        """A write that does not wait for a slot was sent at ``now``: later renewals make room for it."""
        self._next_free = max(self._next_free, now) + self._slot
