"""After the faults: waiting until the group is whole, as assigned and stable, within the bound.

The recovery clock starts once every replica process is up (start-up is not a reaction to faults);
the group must then be whole, every shard handled by its holder only, and unchanged for a while,
all within :func:`~shardlease.harness.chaos.plan.convergence_bound`. With the object workload, every
object must also carry its final change, written by the holder of its shard.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from shardlease.harness.chaos.checkers import HandlerTracker, log_wall_time
from shardlease.harness.chaos.judge import reconcile_failures
from shardlease.harness.chaos.report import ChaosReport
from shardlease.harness.chaos.state import RunState
from shardlease.harness.journal import load_journal
from shardlease.harness.localcluster import Replica, Snapshot
from shardlease.harness.objectjournal import (
    ANNOTATION_BY,
    ANNOTATION_FENCE,
    ANNOTATION_VERSION,
    ObjectWrite,
    check_reconciled,
    load_object_journal,
    object_shard,
)


class Unrecovered(AssertionError):
    """The group did not recover within the bound (a liveness failure, reported, not raised)."""


class RecoveryWait(RunState):
    """The waits after the fault window, each ending in a figure of the report or a failure."""

    def _wait_joined(self, timeout: float) -> float:
        """Wait until every running replica has held its member Lease once; return when the last did.
        Process start-up (imports, connecting) is not the runtime's reaction to faults, so the
        recovery clock starts only once every process is up."""
        cluster = self.cluster
        assert cluster is not None
        deadline = time.monotonic() + timeout
        while True:
            # A refused duplicate never holds its member Lease; it is being terminated by now.
            running = [r for r in cluster.running() if r.pid not in self._duplicate_pids]
            times = [self._joined_at(r) for r in running]
            if all(t is not None for t in times):
                return max([t for t in times if t is not None], default=time.monotonic())
            if time.monotonic() >= deadline:
                missing = [r.identity for r, t in zip(running, times) if t is None]
                raise AssertionError(f"replicas {missing} never held their member Lease within "
                                     f"{timeout:g} s\n{cluster.diagnostics()}")
            time.sleep(0.1)

    def _joined_at(self, replica: Replica) -> float | None:
        """Monotonic time of the replica's first member-Lease success, from its log."""
        for line in replica.log_text().splitlines():
            if " member Lease " in line and line.rstrip().endswith(" held"):
                wall = log_wall_time(line)
                return self.mono_of(wall) if wall is not None else time.monotonic()
        return None

    def _wait_recovered(self, since: float, bound: float, stability: float) -> dict[str, float]:
        """Poll until the group is whole and exactly as assigned, the journal agrees (one handler per
        shard, the holder's), and nothing has moved (holders, ``leaseTransitions``) for ``stability``
        seconds. The recovery time is when that final state was *first* seen; it must be within
        ``bound``. Waiting for a quiet period rather than the first good snapshot matters: requests
        sent under latency just before the faults were cleared can still make a holder miss its renew
        deadline up to ``renew_deadline`` later, and the shard then moves once more.

        Returns ``balanced_after_s`` (first snapshot that was whole and within ceil(S/N)) and
        ``assigned_after_s``; raises :class:`Unrecovered` with the evidence otherwise."""
        cluster = self.cluster
        assert cluster is not None
        deadline = since + bound + stability
        last: Snapshot | None = None
        handlers: dict[int, set[str]] = {}
        balanced: float | None = None
        state: tuple[Any, ...] | None = None
        state_since = 0.0
        changes: list[str] = []
        previous: Snapshot | None = None
        while True:
            try:
                snap = cluster.snapshot()
                last = snap
                if previous is not None and (snap.holders(), snap.transitions()) != \
                        (previous.holders(), previous.transitions()):
                    # .get: after a reshard the previous snapshot may have fewer shards
                    before, before_t = previous.holders(), previous.transitions()
                    moved = {s: f"{before.get(s)}->{h} (transitions {before_t.get(s)}->{snap.transitions()[s]})"
                             for s, h in snap.holders().items()
                             if h != before.get(s) or snap.transitions()[s] != before_t.get(s)}
                    changes.append(f"+{snap.taken - since:.2f}s: {moved}")
                previous = snap
                good = False
                if self._whole(snap, exact=False):
                    ok, handlers = self._handlers_match(snap)
                    if ok and balanced is None:
                        balanced = snap.taken - since
                    good = ok and self._whole(snap, exact=True)
                key = (tuple(sorted(snap.holders().items())), tuple(sorted(snap.transitions().items())))
                if not good:
                    state = None
                elif key != state:
                    state, state_since = key, snap.taken
                elif snap.taken - state_since >= stability:
                    if state_since - since > bound:
                        break
                    return {"balanced_after_s": balanced if balanced is not None else state_since - since,
                            "assigned_after_s": state_since - since}
            except Exception as exc:  # reads can fail while the server recovers; keep polling
                self.progress(f"snapshot failed: {exc!r}")
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        mismatch = ""
        if last is not None:
            _, handlers = self._handlers_match(last)
            holders = last.holders()
            idle = sorted(s for s, h in holders.items() if h and h not in handlers.get(s, set()))
            extra = {s: sorted(w - {holders.get(s)}) for s, w in handlers.items() if w - {holders.get(s)}}
            wrong = {s: (h, cluster.desired(cluster.running_identities()).get(s))
                     for s, h in holders.items() if h != cluster.desired(cluster.running_identities()).get(s)}
            mismatch = (f"shards held with no handler running in the holder (per journal): {idle}; "
                        f"handlers running on non-holders: {extra}; holder != desired: {wrong}\n")
        raise Unrecovered(
            "RECOVERY: " + mismatch +
            f"group not whole, as assigned and stable for {stability:g} s within {bound:.1f} s after "
            f"the faults stopped (first balanced: {balanced}; running: {cluster.running_identities()}; "
            f"handlers per journal: { {s: sorted(v) for s, v in sorted(handlers.items())} })\n"
            f"changes seen since: {changes[-15:]}\n" + cluster.diagnostics(last))

    def _whole(self, snap: Snapshot, exact: bool) -> bool:
        """Every shard held by a running replica, every running replica a live member, each holding at
        most ceil(S/N) (``exact``: the shards are where the assignment puts them; under a load snapshot,
        where the snapshot puts them, and no count bound)."""
        cluster = self.cluster
        assert cluster is not None
        running = set(cluster.running_identities())
        holders = snap.holders()
        if any(h is None or h not in running for h in holders.values()):
            return False
        if set(snap.live_members()) != running:
            return False
        if snap.view.load_snapshot is not None:
            # Assigned by load (docs/load.md): the owners the replicas compute from the group's snapshot
            # (the view's desired column), and no count bound.
            return not exact or holders == {row.shard: row.desired for row in snap.view.rows}
        if exact:
            return holders == cluster.desired(sorted(running))
        cap = math.ceil(snap.shards / len(running))
        return all(n <= cap for n in snap.load().values())

    def _handlers_match(self, snap: Snapshot) -> tuple[bool, dict[int, set[str]]]:
        cluster = self.cluster
        assert cluster is not None
        if self._handlers is None:
            self._handlers = HandlerTracker(cluster.journal_dir)
        self._handlers.poll()
        running = self._handlers.running(r.pid for r in cluster.running())
        expected = {s: {h} for s, h in snap.holders().items() if h}
        return running == expected, running

    def _wait_reconciled(self, report: ChaosReport, since: float, bound: float) -> None:
        """Poll the journals until every object's latest change is written by the holder of its shard
        under the final count (:func:`~shardlease.harness.objectjournal.check_reconciled`), at the
        latest ``since + bound``; then confirm it on the API server (the ConfigMaps' annotations)."""
        cluster = self.cluster
        assert cluster is not None and self.user is not None
        deadline = since + bound
        while True:
            at = time.monotonic()
            live = [r.pid for r in cluster.running()]
            problems, times = check_reconciled(load_object_journal(cluster.journal_dir),
                                               load_journal(cluster.journal_dir), since=since, bound=bound,
                                               at=at, live_pids=live)
            if not problems or at >= deadline:
                break
            time.sleep(0.25)
        self.user.marker("reconcile_checked", at=at, since=since, bound=bound, live_pids=live)
        report.figures["objects_bound_s"] = round(bound, 3)
        if times:
            report.figures["objects_reconciled_after_s"] = round(max(times.values()), 3)
        report.failures.extend(reconcile_failures(problems))
        if not problems:
            report.failures.extend(self._api_agrees(at))

    def _api_agrees(self, at: float) -> list[str]:
        """The ConfigMaps as the API server has them carry what the journals say was written last (the
        journals could lie): the final change, stamped by the Lease holder of their shard, with the
        fence of the last write the journals show accepted for them."""
        cluster = self.cluster
        assert cluster is not None and self.user is not None
        try:
            snap = cluster.snapshot()
            items = json.loads(self.user.core.list_namespaced_config_map(
                cluster.namespace, _preload_content=False).data)["items"]
        except Exception as exc:
            return [f"RECONCILE: could not read the ConfigMaps or Leases to confirm: {exc!r}"]
        holders = snap.holders()
        last: dict[str, ObjectWrite] = {}
        for w in load_object_journal(cluster.journal_dir).writes:
            if w.accepted and w.rv is not None and (w.uid not in last or (last[w.uid].rv or 0) < w.rv):
                last[w.uid] = w
        wrong = []
        for item in items:
            meta = item["metadata"]
            if meta["name"] not in self.user.versions:
                continue
            annotations = meta.get("annotations") or {}
            shard = object_shard(meta["uid"], snap.shards)
            journaled = last.get(meta["uid"])
            want = {ANNOTATION_VERSION: str(self.user.versions[meta["name"]]), ANNOTATION_BY: holders.get(shard),
                    ANNOTATION_FENCE: f"{journaled.generation}/{journaled.token}" if journaled else None}
            got = {k: annotations.get(k) for k in want}
            if got != want:
                wrong.append(f"{meta['name']} (shard {shard}/{snap.shards}): {got}, expected {want}")
        return [f"RECONCILE (API): {len(wrong)} ConfigMaps do not carry their final holder's stamp:\n"
                + "\n".join(wrong[:10])] if wrong else []
