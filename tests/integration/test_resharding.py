"""Live resharding with real replica processes: no key is ever worked on by two replicas at
once, across switches of the group's shard count.

Every replica runs the journaling handler, which records for each unit of work the shard id, the
count and generation it ran under, and its token. Besides the per-shard-id checks every integration
test ends with (:func:`conftest.finish`), these tests check the journal *per key* (200 keys): a key
moves to another shard id when the count changes, so two generations working on it at once would
show up under different shard ids, invisible to a per-shard check. Fences ``(generation, token)`` must
grow along every key's history.

Scenarios: 8 -> 16 -> 5 with healthy replicas (and the retired Leases deleted); a reshard right after
a SIGKILL and one during a network partition (the switch waits about one lease duration for the cut-off
holder's Leases); a rolling update 8 -> 12 and its rollback, one replica at a time.

What drives a switch: ``shardlease.reshard`` (the command's Python call) when it is there, else the
same conditional write of the group Lease built from the pure functions; and, in the rolling-update
test, members started with another ``--shards``. Timings are scaled (lease 2 s); the pause of every
switch is printed and bounded generously, since the machine is small and shared. Nothing is random.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable

import pytest

from shardlease.core.records import LeaseRecord, group_lease_name, shard_lease_name
from shardlease.core.resharding import GroupState, group_lease_body, reshard_state
from shardlease.harness.journal import (
    Entry,
    Switch,
    assert_key_fences_increase,
    assert_no_key_overlaps,
    generation_switches,
)
from shardlease.harness.localcluster import ClusterTimeout, LocalCluster, Replica

from .conftest import SETTLE_TIMEOUT, TIMINGS, finish, record_figure

LEASE = TIMINGS.lease_duration
KEYS = [f"customer-{i}" for i in range(200)]
MakeCluster = Callable[..., LocalCluster]
#: Longer units than the other integration tests: 16 shards x 4 replicas journal less this way, and a
#: unit still stops within 10 ms of its shard being stopped.
ENV = {"SHARDLEASE_JOURNAL_WORK": "0.1"}
#: Bound on a switch with healthy replicas, from the last old unit's end until every new shard works.
HEALTHY_SWITCH = 5.0
#: Bound on how long a replica that joins takes to work on a shard, process start included: usually
#: 2-3 s, but a Python process start (imports) alone took over 5 s on this 2-core machine under load.
JOIN_BOUND = 15.0


# ---------------------------------------------------------------- helpers


def records(cluster: LocalCluster) -> dict[str, LeaseRecord]:
    """The group's Leases by name, read now."""
    out = {}
    for obj in cluster.leases():
        record = LeaseRecord.from_object(obj)
        if record is not None:
            out[record.name] = record
    return out


def group_record(cluster: LocalCluster) -> LeaseRecord | None:
    return records(cluster).get(group_lease_name(cluster.group))


def group_state(cluster: LocalCluster) -> GroupState | None:
    record = group_record(cluster)
    return GroupState.from_record(record) if record is not None else None


def reshard(cluster: LocalCluster, shards: int) -> tuple[GroupState, float]:
    """Switch the group to ``shards`` with ``shardlease.reshard``; the state written and when
    (monotonic)."""
    written = time.monotonic()
    try:
        from shardlease.runtime.reshard import reshard as command
    except ImportError:  # the command is not there yet: the same conditional write, by hand
        return reshard_by_hand(cluster, shards), written
    result = command(cluster.group, shards, namespace=cluster.namespace, api_client=cluster.api_client())
    assert result.changed, f"reshard to {shards} wrote nothing: {result}"
    return result.state, written


def reshard_by_hand(cluster: LocalCluster, shards: int) -> GroupState:
    from shardlease.client.leases import LeaseClient

    record = group_record(cluster)
    assert record is not None, "no group Lease yet\n" + cluster.diagnostics()
    state = GroupState.from_record(record)
    assert state is not None, f"unreadable group Lease: {record.annotations}"
    new = reshard_state(state, shards, None)
    body = group_lease_body(cluster.group, cluster.namespace, new, _dt.datetime.now(_dt.timezone.utc), record)
    LeaseClient(cluster.api_client(), cluster.namespace).replace(group_lease_name(cluster.group), body)
    return new


def wait_until(check: Callable[[], object], timeout: float, what: str, cluster: LocalCluster,
               interval: float = 0.1) -> float:
    """Poll ``check`` until truthy; the monotonic time it first was. Fails with diagnostics."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise ClusterTimeout(f"timed out after {timeout:g} s waiting for {what}\n" + cluster.diagnostics())
        time.sleep(interval)


def generation_working(cluster: LocalCluster, generation: int, count: int) -> bool:
    """The group Lease names ``generation`` with ``count`` shards, every one of their Leases is held
    and stamped with it, and the journal has a unit of that generation on every one of them."""
    leases = records(cluster)
    group = leases.get(group_lease_name(cluster.group))
    state = GroupState.from_record(group) if group is not None else None
    if state is None or (state.generation, state.count) != (generation, count):
        return False
    shards = [leases.get(shard_lease_name(cluster.group, i)) for i in range(count)]
    if not all(r is not None and r.is_held and r.generation == generation for r in shards):
        return False
    worked = {e.shard for e in cluster.journal() if e.kind == "work" and e.generation == generation}
    return worked >= set(range(count))


def retired_gone(cluster: LocalCluster, count: int, span: int) -> bool:
    """The Leases of shards ``count..span-1`` are deleted and the group Lease's span is ``count``."""
    leases = records(cluster)
    group = leases.get(group_lease_name(cluster.group))
    state = GroupState.from_record(group) if group is not None else None
    retired = {shard_lease_name(cluster.group, i) for i in range(count, span)}
    return state is not None and state.span == count and not leases.keys() & retired


def first_work(cluster: LocalCluster, replica: Replica) -> Entry | None:
    """The first unit ``replica`` (this process of it) worked."""
    mine = [e for e in cluster.journal()
            if e.kind == "work" and (e.identity, e.pid) == (replica.identity, replica.pid)]
    return min(mine, key=lambda e: e.start) if mine else None


def working(cluster: LocalCluster, replica: Replica) -> Callable[[], bool]:
    return lambda: first_work(cluster, replica) is not None


def check_keys(entries: list[Entry]) -> None:
    assert_no_key_overlaps(entries, KEYS)
    assert_key_fences_increase(entries, KEYS)


def report(request: pytest.FixtureRequest, switch: Switch, written: float) -> None:
    """Print and record one switch's figures; bound it."""
    label = f"gen {switch.generation} ({switch.count} shards)"
    print(f"{label}: written -> last old unit end {switch.last_old_end - written:.3f} s, "
          f"-> first new unit {switch.first_new_begin - written:.3f} s, "
          f"-> every shard working {(switch.all_begun or float('nan')) - written:.3f} s")
    record_figure(request, f"{label} pause (last old unit end -> first new unit)", switch.pause)
    assert switch.until_all is not None, f"{label}: only {switch.shards} shards ever worked"
    record_figure(request, f"{label} last old unit end -> every new shard working", switch.until_all)


def switches_by_generation(entries: list[Entry]) -> dict[int, Switch]:
    return {s.generation: s for s in generation_switches(entries)}


# ---------------------------------------------------------------- tests


def test_reshard_up_and_down_never_puts_a_key_in_two_places(make_cluster: MakeCluster, request: pytest.FixtureRequest) -> None:
    cluster = make_cluster(4, shards=8, env=ENV)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    wait_until(lambda: generation_working(cluster, 1, 8), 10, "generation 1 on 8 shards", cluster)

    up, up_written = reshard(cluster, 16)
    assert (up.generation, up.count) == (2, 16)
    wait_until(lambda: generation_working(cluster, 2, 16), 20, "all 16 shards working under generation 2",
               cluster)
    time.sleep(0.5)
    down, down_written = reshard(cluster, 5)
    assert (down.generation, down.count, down.span) == (3, 5, 16)
    wait_until(lambda: generation_working(cluster, 3, 5), 20, "all 5 shards working under generation 3",
               cluster)
    wait_until(lambda: retired_gone(cluster, 5, 16), 6 * LEASE, "shard Leases 5..15 deleted and span 5",
               cluster)
    entries = finish(cluster)

    check_keys(entries)
    assert {(e.generation, e.count) for e in entries if e.kind == "work"} == {(1, 8), (2, 16), (3, 5)}
    switches = switches_by_generation(entries)
    report(request, switches[2], up_written)
    report(request, switches[3], down_written)
    for switch in switches.values():
        assert switch.pause >= 0  # implied by the key check; said plainly
        assert switch.until_all is not None and switch.until_all < HEALTHY_SWITCH, switch


def test_reshard_while_a_replica_was_just_killed(make_cluster: MakeCluster, request: pytest.FixtureRequest) -> None:
    cluster = make_cluster(4, shards=8, env=ENV)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    victim = cluster.replicas[1]
    victim.kill()
    state, written = reshard(cluster, 12)
    assert (state.generation, state.count) == (2, 12)
    done = wait_until(lambda: generation_working(cluster, 2, 12), LEASE + 8,
                      "all 12 shards working under generation 2 without the killed replica", cluster)
    record_figure(request, "reshard with a replica just SIGKILLed: written -> every shard working",
                  done - written)
    entries = finish(cluster)

    check_keys(entries)
    assert not any(e.generation == 2 for e in entries if e.identity == victim.identity)
    switch = switches_by_generation(entries)[2]
    report(request, switch, written)
    # The dead replica's Leases must expire before the sweeper can stamp them: one lease duration.
    assert switch.all_begun is not None and switch.all_begun - written < LEASE + 4.0, switch


def roll(cluster: LocalCluster, old: list[Replica], shards: int, prefix: str, request: pytest.FixtureRequest,
         seen: list[tuple[int, int]]) -> list[Replica]:
    """Replace ``old`` (4 replicas) one at a time by replicas started with ``--shards shards``, as a
    Deployment's rolling update does: start one, check it works within :data:`JOIN_BOUND`, SIGTERM one
    old replica and wait for its exit. Appends the group's (generation, count) after each step to
    ``seen`` (which starts with the state before the rollout).

    After the second step old and new are tied 2:2 and stay so for more than a lease duration (a tie
    must change nothing); the third step gives the new count a majority of the five members, so the
    group switches then, while one old replica still runs (waited for, before the last step)."""
    before = seen[0]
    target = (before[0] + 1, shards)
    new: list[Replica] = []
    for index, leaving in enumerate(old):
        joining = cluster.add_replica(f"{prefix}-{index}", extra_args=["--shards", str(shards)])
        wait_until(working(cluster, joining), JOIN_BOUND + 4, f"{joining.identity} working on a shard", cluster)
        first = first_work(cluster, joining)
        assert first is not None
        record_figure(request, f"{joining.identity} (--shards {shards}): start -> first unit",
                      first.start - joining.started_at)
        assert first.start - joining.started_at < JOIN_BOUND, first.describe()
        if index < 2:
            # At most 2 of 5 members configured with the new count: no majority for it, yet the new
            # replica works at once, under the count the group still runs.
            assert (first.generation, first.count) == before, first.describe()
        new.append(joining)
        leaving.terminate()
        assert leaving.wait(20) == 0, cluster.diagnostics()
        if index == 1:
            time.sleep(1.5 * LEASE)  # a 2:2 tie for longer than a rollout waits: nothing may change
        if index == 2:
            wait_until(lambda: generation_working(cluster, *target), 4 * LEASE,
                       f"the switch to generation {target[0]} with {shards} shards", cluster)
        seen.append(_generation(cluster))
    return new


@pytest.mark.slow  # about a minute: in the slower tier .ci/run runs after the default one
def test_rolling_update_switches_once_and_rollback_once(make_cluster: MakeCluster, request: pytest.FixtureRequest) -> None:
    cluster = make_cluster(4, shards=8, env=ENV)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    old = list(cluster.replicas)

    forward: list[tuple[int, int]] = [(1, 8)]  # the group's (generation, count) after every step
    rolled = roll(cluster, old, 12, "v2", request, forward)
    time.sleep(1.5 * LEASE)  # long enough for a wrong second switch (a rollout waits one lease duration)
    forward.append(_generation(cluster))

    back: list[tuple[int, int]] = [forward[-1]]
    roll(cluster, rolled, 8, "v1", request, back)
    wait_until(lambda: retired_gone(cluster, 8, 12), 6 * LEASE, "shard Leases 8..11 deleted and span 8",
               cluster)
    time.sleep(1.5 * LEASE)
    back.append(_generation(cluster))
    entries = finish(cluster)

    print(f"group (generation, count) after each rollout step: {forward}; rollback: {back}")
    # Exactly one switch each way, after the third step; a tie and the old replicas' votes change nothing.
    assert forward == [(1, 8)] * 3 + [(2, 12)] * 3, forward
    assert back == [(2, 12)] * 3 + [(3, 8)] * 3, back
    assert {(e.generation, e.count) for e in entries if e.kind == "work"} == {(1, 8), (2, 12), (3, 8)}
    # The last old replica of each roll, configured with the old count, ran the new one until it left.
    for leaving, switched_to in ((old[-1], (2, 12)), (rolled[-1], (3, 8))):
        ran = {(e.generation, e.count) for e in entries if e.kind == "work" and e.identity == leaving.identity}
        assert switched_to in ran, (leaving.identity, ran)
    check_keys(entries)
    switches = switches_by_generation(entries)
    for generation, switch in sorted(switches.items()):
        print(f"rolling update, gen {generation} ({switch.count} shards): pause {switch.pause:.3f} s, "
              f"until every shard works {switch.until_all} s")
        record_figure(request, f"rolling update gen {generation} pause", switch.pause)
        assert switch.until_all is not None and switch.until_all < HEALTHY_SWITCH, switch


def _generation(cluster: LocalCluster) -> tuple[int, int]:
    state = group_state(cluster)
    assert state is not None, "the group Lease is gone\n" + cluster.diagnostics()
    return (state.generation, state.count)


def test_reshard_while_a_replica_is_partitioned(make_cluster: MakeCluster, request: pytest.FixtureRequest) -> None:
    cluster = make_cluster(4, shards=8, env=ENV)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    cut = cluster.replicas[2]
    cluster.faults.partition(cut.identity)
    state, written = reshard(cluster, 16)
    done = wait_until(lambda: generation_working(cluster, 2, 16), LEASE + 8,
                      "all 16 shards working under generation 2 while one replica is cut off", cluster)
    record_figure(request, "reshard with a replica partitioned: written -> every shard working", done - written)
    cluster.faults.heal()
    wait_until(lambda: any(e.identity == cut.identity and e.generation == 2
                           for e in cluster.journal() if e.kind == "work"),
               4 * LEASE, f"{cut.identity} working again under generation 2 after the partition healed", cluster)
    entries = finish(cluster)

    check_keys(entries)
    report(request, switches_by_generation(entries)[2], written)
