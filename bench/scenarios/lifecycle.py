"""Scenarios 2-5 on one running group: cold start, graceful handoff (SIGTERM), scale up by one, and
crash failover (SIGKILL).

They share one group per (implementation, timing profile) because each step leaves the group in the
state the next one starts from, and starting a dev-server plus N Python processes per measurement
would spend most of the suite's time on imports. One *round* is::

    SIGTERM the busiest replica  -> per-shard time until re-held, time until balanced again
    add a replica (back to N)    -> time until balanced, shards moved vs the minimum S/N
    SIGKILL the busiest replica  -> per-shard time until re-held, time until balanced again
    add a replica (back to N)    -> a second scale-up sample

Between steps the group must be settled (shardlease: every shard held by the owner the assignment
names; baseline: every shard held by a running replica) and quiet (no holder change for one retry
period, at least 0.5 s). The victim is the replica holding the most shards: for shardlease any replica is typical,
for the baseline (no balancing) it is the one that won most elections, i.e. the replica whose loss
matters.

All times are on this process's monotonic clock: a signal's time is taken just before ``killpg``;
a shard's re-held time is the arrival of the first watch event naming a surviving holder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shardlease.core.assignment import assign, moved_shards

from .common import BASELINE, DEV_SERVER, OURS, Group, Profile, Server, first_time, latency_summary, load_summary

Log = Callable[[str], None]


def _quiet(group: Group) -> None:
    """Let the group settle: no holder change for one retry period (at least 0.5 s), so a late
    transient change is not counted in the next step."""
    p = group.profile
    group.obs.quiet_for(max(0.5, p.retry_period), timeout=2 * p.lease_duration + 10)


def cold_start(group: Group, replicas: int, log: Log) -> dict[str, Any]:
    """Start ``replicas`` processes at once; time until every shard is held (and, for shardlease, held
    as assigned). Python start-up (~1 s of imports) is inside these times, as it is in a real pod."""
    obs, p = group.obs, group.profile
    mark = obs.mark()
    before = obs.holders()
    t0 = time.monotonic()
    for _ in range(replicas):
        group.spawn()
    ids = group.running_ids()
    ok = group.wait_settled(timeout=30 + 6 * p.lease_duration, members=ids)
    changes = obs.changes_since(mark)
    allowed = set(ids)
    t_held = first_time(t0, before, changes, lambda s, h: h in allowed)
    t_bal = first_time(t0, before, changes, group.settled_check(ids)) if group.impl == OURS else None
    first_acquire = min((c.t for c in changes if c.new), default=None)
    settled_at = t_bal if t_bal is not None else t_held
    result: dict[str, Any] = {
        "replicas": replicas,
        "settled": ok,
        "all_held_s": None if t_held is None else round(t_held - t0, 3),
        "balanced_s": None if t_bal is None else round(t_bal - t0, 3),
        "first_acquire_s": None if first_acquire is None else round(first_acquire - t0, 3),
        # The protocol's part: from the first Lease taken (imports and connection done) to settled.
        "balanced_after_first_acquire_s": None if (first_acquire is None or settled_at is None)
        else round(settled_at - first_acquire, 3),
        "acquisitions": sum(1 for c in changes if c.new),
        "load": load_summary(obs.load(), group.shards, replicas),
    }
    for key in ("all_held_s", "balanced_s"):
        if result[key] is not None:
            result[key.replace("_s", "_x_lease")] = round(result[key] / p.lease_duration, 4)
    log(f"  cold start: all held {result['all_held_s']} s, balanced {result['balanced_s']} s, "
        f"{result['acquisitions']} acquisitions, peak/mean {result['load']['peak_over_mean']}")
    _quiet(group)
    return result


def signal_step(group: Group, how: str, log: Log) -> dict[str, Any]:
    """SIGTERM (``how="terminate"``) or SIGKILL (``"kill"``) the busiest replica and time, per shard
    it held, the first event naming a surviving holder."""
    obs, p = group.obs, group.profile
    victim = group.busiest()
    before = obs.holders()
    lost = sorted(s for s, h in before.items() if h == victim.identity)
    survivors = [i for i in group.running_ids() if i != victim.identity]
    alive = set(survivors)
    mark = obs.mark()
    exited: list[float] = []
    def wait_exit() -> None:
        victim.wait(60)
        exited.append(time.monotonic())

    waiter = threading.Thread(target=wait_exit, daemon=True)
    t_sig = victim.terminate() if how == "terminate" else victim.kill()
    waiter.start()
    timeout = 3 * p.lease_duration + 15
    reheld = obs.wait_until(lambda h: all(h[s] in alive for s in lost), timeout)
    settled = group.wait_settled(timeout, members=survivors) if group.impl == OURS else reheld
    waiter.join(0.1 if not exited else 0)
    changes = obs.changes_since(mark)
    latencies: list[float] = []
    released = 0
    for shard in lost:
        first_new = next((c for c in changes if c.shard == shard and c.new in alive), None)
        if first_new is not None:
            latencies.append(first_new.t - t_sig)
        first_any = next((c for c in changes if c.shard == shard), None)
        if first_any is not None and first_any.new == "":
            released += 1
    t_bal = first_time(t_sig, before, changes, group.settled_check(survivors)) if group.impl == OURS else None
    result: dict[str, Any] = {
        "victim": victim.identity,
        "victim_shards": len(lost),
        "reheld_all": reheld and len(latencies) == len(lost),
        "released_by_victim": released,
        "per_shard_s": [round(x, 4) for x in latencies],
        "balanced_s": None if t_bal is None else round(t_bal - t_sig, 4),
        "settled": settled,
        "victim_exit_s": round(exited[0] - t_sig, 3) if exited else None,
        "victim_returncode": victim.returncode,
    }
    summary = latency_summary(latencies, p.lease_duration)
    log(f"  {how} {victim.identity} ({len(lost)} shards): re-held p50 {summary.get('p50')} "
        f"max {summary.get('max')} s, {released} released, balanced {result['balanced_s']} s")
    _quiet(group)
    return result


def scale_up_step(group: Group, log: Log) -> dict[str, Any]:
    """Add one replica; shardlease: time until balanced over the new membership and shards moved;
    baseline: watch for a while and report what the newcomer got (it cannot get anything: every
    Lease is held and renewed, and nothing ever gives one up)."""
    obs, p = group.obs, group.profile
    before = obs.holders()
    ids_before = group.running_ids()
    mark = obs.mark()
    t_add = time.monotonic()
    newcomer = group.spawn()
    ids_after = [*ids_before, newcomer.identity]
    result: dict[str, Any] = {"newcomer": newcomer.identity, "members_after": len(ids_after),
                              "minimum_moves": round(group.shards / len(ids_after), 3)}
    if group.impl == OURS:
        settled = group.wait_settled(30 + 4 * p.lease_duration, members=ids_after)
        changes = obs.changes_since(mark)
        t_bal = first_time(t_add, before, changes, group.settled_check(ids_after))
        joined = next((t for t, ident, present in obs.member_log if ident == newcomer.identity and present
                       and t >= t_add), None)
        predicted = len(moved_shards(assign(group.group, group.shards, ids_before),
                                     assign(group.group, group.shards, ids_after)))
        result.update({
            "settled": settled,
            "balanced_s": None if t_bal is None else round(t_bal - t_add, 4),
            "member_seen_s": None if joined is None else round(joined - t_add, 4),
            "balanced_after_join_s": None if (t_bal is None or joined is None) else round(t_bal - joined, 4),
            "predicted_moves": predicted,
        })
    else:
        # The newcomer's elections start after its imports; give it a few retry periods after that.
        deadline = time.monotonic() + 20
        while "elections started" not in newcomer.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2 * p.retry_period + 0.5)
        changes = obs.changes_since(mark)
        result.update({"settled": True, "balanced_s": None, "member_seen_s": None, "predicted_moves": None})
    after = obs.holders()
    moved = sum(1 for s in before if before[s] != after[s])
    result.update({
        "moved": moved,
        "moved_over_min": round(moved / (group.shards / len(ids_after)), 3),
        "acquisitions": sum(1 for c in changes if c.new),
        "newcomer_load": sum(1 for h in after.values() if h == newcomer.identity),
        "load": load_summary(obs.load(), group.shards, len(ids_after)),
    })
    if result["balanced_s"] is not None:
        result["balanced_x_lease"] = round(result["balanced_s"] / p.lease_duration, 4)
    log(f"  scale up +{newcomer.identity}: balanced {result['balanced_s']} s, moved {moved} "
        f"(min {result['minimum_moves']}), newcomer holds {result['newcomer_load']}")
    _quiet(group)
    return result


def run(impl: str, profile: Profile, shards: int, replicas: int, rounds: int, work_dir: Path,
        log: Log, *, restore_last: bool = True, server: Server = DEV_SERVER) -> dict[str, Any]:
    """Cold start, then ``rounds`` rounds of handoff / scale-up / failover / scale-up.

    ``restore_last=False`` skips the last round's second scale-up (nothing follows that needs N
    replicas), which the quick mode uses to stay short."""
    log(f"lifecycle: {impl}, {profile.name} timings, S={shards}, N={replicas}, {rounds} round(s), "
        f"{server.kind} server")
    started = time.monotonic()
    out: dict[str, Any] = {"impl": impl, "profile": profile.describe(), "shards": shards, "replicas": replicas,
                           "rounds": rounds, "server": server.kind}
    handoffs: list[dict[str, Any]] = []
    failovers: list[dict[str, Any]] = []
    scale_ups: list[dict[str, Any]] = []
    with Group(impl, shards, profile, work_dir, server=server).start() as group:
        try:
            out["cold_start"] = cold_start(group, replicas, log)
            for round_no in range(rounds):
                handoffs.append(signal_step(group, "terminate", log))
                scale_ups.append(scale_up_step(group, log))
                failovers.append(signal_step(group, "kill", log))
                if restore_last or round_no < rounds - 1:
                    scale_ups.append(scale_up_step(group, log))
        except Exception as exc:  # keep what was measured; say what broke
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["logs"] = group.log_tails()
            log(f"  ERROR {out['error']}")
        out["observer_events"] = group.obs.events
    out["handoff"] = _combine(handoffs, profile)
    out["failover"] = _combine(failovers, profile)
    out["scale_up"] = {"steps": scale_ups, **_scale_summary(scale_ups, profile)}
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


def _combine(steps: list[dict[str, Any]], profile: Profile) -> dict[str, Any]:
    """All per-shard samples of all rounds in one summary, the steps kept for detail."""
    samples = [x for step in steps for x in step["per_shard_s"]]
    balanced = [step["balanced_s"] for step in steps if step["balanced_s"] is not None]
    return {
        "steps": steps,
        "reheld": latency_summary(samples, profile.lease_duration),
        "balanced_max_s": max(balanced) if balanced else None,
        "all_reheld": all(step["reheld_all"] for step in steps) if steps else False,
        "released": sum(step["released_by_victim"] for step in steps),
        "victim_shards": sum(step["victim_shards"] for step in steps),
    }


def _scale_summary(steps: list[dict[str, Any]], profile: Profile) -> dict[str, Any]:
    balanced = [s["balanced_s"] for s in steps if s.get("balanced_s") is not None]
    after_join = [s["balanced_after_join_s"] for s in steps if s.get("balanced_after_join_s") is not None]
    return {
        "balanced": latency_summary(balanced, profile.lease_duration),
        "balanced_after_join": latency_summary(after_join, profile.lease_duration),
        "moved_over_min_mean": round(sum(s["moved_over_min"] for s in steps) / len(steps), 3) if steps else None,
        "moved_over_min_max": max((s["moved_over_min"] for s in steps), default=None),
        "newcomer_load_mean": round(sum(s["newcomer_load"] for s in steps) / len(steps), 2) if steps else None,
    }


__all__ = ["run", "cold_start", "signal_step", "scale_up_step", "BASELINE", "OURS"]
