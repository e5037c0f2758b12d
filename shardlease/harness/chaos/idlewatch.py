"""A check that runs *while* the faults do: a shard held and renewed with no handler working on it."""

from __future__ import annotations

import datetime as _dt
import threading
import time

from shardlease.core.groupview import GroupView
from shardlease.harness.chaos.checkers import HandlerTracker
from shardlease.harness.chaos.plan import WATCH_MAX_BACKOFF
from shardlease.harness.chaos.state import RunState


class IdleHolderWatch:
    """Samples the group's Leases while the faults run and flags a shard whose holder keeps
    *renewing* it while no handler of that holder's process runs on it.

    A replica renews a shard's Lease only while it believes it holds the shard, and it must run the
    handler for every shard it holds; the only legitimate gaps are the instant between the write and
    the handler start and a stopped handler's clean-up before the release (``drain_delay``). So a
    holder seen renewing without a handler for longer than ``limit`` is a liveness bug (the shard is
    held and nobody works on it), caught while it happens rather than only if it lasts until the end.
    Paused holders (they cannot renew) and dead ones are never flagged. Nor is anything flagged while
    API latency is high (or was, within the last renew deadline plus the longest injected delay): an
    acquisition whose answer arrives after the renew deadline is rightly not given a handler, and the
    replica tries again, renewing nothing but writing the Lease.

    "Kept renewing" must be seen, sample after sample, within one tenure. A failed read (the observer
    is not exempt from injected errors) breaks the chain: across a gap the watch cannot tell one late
    write from a series. A new tenure (other ``leaseTransitions`` or ``acquireTime``) starts a new chain
    even under the same holder: release, re-acquire and lose can all happen between two samples, and
    the seconds before the gap say nothing about the tenure after it. Joining them is how this watch
    once flagged a replica that never renewed without a handler for more than one write.

    A reshard is the one designed gap: a replica holds the Leases of the new generation, renewing
    them, and starts no handler until every shard Lease carries that generation (docs/resharding.md),
    which takes up to a lease when a holder died or is cut off, longer under injected errors. So
    nothing is flagged while the group's Leases show a switch in progress, nor for a watch back-off
    plus a lease after it completed: a replica learns of the completion through its watch.
    """

    def __init__(self, run: RunState, limit: float, interval: float = 0.5) -> None:
        self.run = run
        self.limit = limit
        self.interval = interval
        self.findings: list[str] = []
        self.samples = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-idle-holder-watch", daemon=True)
        self._tracker = HandlerTracker(run.cluster.journal_dir) if run.cluster else None
        self._renew: dict[int, tuple[str, str, str]] = {}  # shard -> (holder, tenure, renewTime) last seen
        self._idle_since: dict[int, float] = {}           # shard -> first sample renewed with no handler
        self._reported: set[tuple[int, str, float]] = set()
        self._switching_until = float("-inf")

    def start(self) -> IdleHolderWatch:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10.0)
        return self.findings

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # a bug of the watch itself: loud, and it stops watching
                self.findings.append(f"HARNESS: the idle-holder watch failed: {exc!r}")
                return

    def sample(self) -> None:
        cluster = self.run.cluster
        assert cluster is not None and self._tracker is not None
        try:
            leases = cluster.leases()
        except Exception:  # reads fail under injected errors (the observer is not exempt): skip,
            self.skipped += 1  # and forget the chain: nothing is known about the gap
            self._renew.clear()
            self._idle_since.clear()
            return
        now = time.monotonic()
        self._tracker.poll()
        self.samples += 1
        # A reshard whose barrier has not passed, as ``shardlease status`` would show it.
        if GroupView.from_objects(cluster.group, "", leases, _dt.datetime.now(_dt.timezone.utc)).switch_pending:
            self._switching_until = now + WATCH_MAX_BACKOFF + self.run.config.lease
        switching = now < self._switching_until
        for lease in leases:
            labels = (lease.get("metadata") or {}).get("labels") or {}
            if labels.get("shardlease.io/role") != "shard":
                continue
            try:
                shard = int(labels.get("shardlease.io/shard", ""))
            except ValueError:
                continue
            spec = lease.get("spec") or {}
            holder, renewed = str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or "")
            tenure = f"{spec.get('leaseTransitions')}/{spec.get('acquireTime')}"
            previous = self._renew.get(shard)
            self._renew[shard] = (holder, tenure, renewed)
            if not holder or previous is None or previous[:2] != (holder, tenure) or previous[2] == renewed:
                self._idle_since.pop(shard, None)  # no holder, a new holder or tenure, or not renewing
                continue
            # Every live process of that identity: a duplicate started with it runs beside the original.
            processes = [r for r in cluster.replicas if r.identity == holder and r.running]
            if not processes:
                continue
            process = processes[-1]
            if any(p.paused for p in processes):
                self._idle_since.pop(shard, None)
                continue
            working = holder in self._tracker.running([p.pid for p in processes]).get(shard, set())
            if working or switching or not self.run.latency_calm(now):
                self._idle_since.pop(shard, None)
                continue
            since = self._idle_since.setdefault(shard, now)
            key = (shard, holder, since)
            if now - since > self.limit and key not in self._reported:
                self._reported.add(key)
                self.findings.append(
                    f"LIVENESS shard {shard}: {holder} (pid {process.pid}) kept renewing its Lease for "
                    f"{now - since:.1f} s (since window +{since - self.run._window_start:.2f}s) without a "
                    f"handler running on it (journal); limit {self.limit:g} s = clean-up + 2 s\n"
                    + self.run.log_excerpt(process, shard, since - 3.0, now))
