"""Targeted watching: a replica reads the renewals of the shards that matter to it, not all of them.

Six in-process managers over 48 shards against the dev-server (no mocks). Each watches the member
Leases plus the shard Leases it holds, is assigned, or would inherit if one peer failed. The tests
check the saving (watch events each replica receives, counted by the server) and that the saving
costs nothing: a partitioned replica's shards are still taken over one lease after it went silent,
not two (which is what watching a dead holder's Leases only once they are needed would cost).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support import wait_until

from shardlease.config import ShardConfig
from shardlease.core.assignment import assign, inheritable
from shardlease.devserver import DevServer
from shardlease.runtime.handlers import Shard
from shardlease.runtime.manager import ShardManager

# Longer than the other in-process tests, so that one lease and two leases are far apart.
TIMING = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5, "drain_timeout": 3.0}
SHARDS, REPLICAS = 48, 6


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, list[ShardManager]]]:
    path = str(tmp_path_factory.mktemp("targeted") / "kubeconfig")
    with DevServer(port=0, faults=True) as srv:
        srv.write_kubeconfig(path)

        def handle(shard: Shard) -> None:
            shard.stopped.wait()

        managers = [ShardManager(ShardConfig(group="tw", shards=SHARDS, namespace="default", identity=f"r{i}",
                                             kubeconfig=path, **TIMING), handle) for i in range(REPLICAS)]
        try:
            for m in managers:
                m.start()
            yield srv, managers
        finally:
            srv.faults.heal()
            for m in managers:
                m.stop()
            for m in managers:
                m.wait(15)


def balanced(managers: list[ShardManager]) -> bool:
    held = [m.owned_shards() for m in managers]
    return sum(map(len, held)) == SHARDS and len(frozenset().union(*held)) == SHARDS and \
        all(len(h) == SHARDS // len(managers) for h in held)


def test_each_replica_reads_its_own_neighbourhood_not_the_whole_group(
        cluster: tuple[DevServer, list[ShardManager]]) -> None:
    srv, managers = cluster
    wait_until(lambda: balanced(managers), 30, "48 shards spread 8 each")
    members = [m.identity for m in managers]
    # What each replica should be watching, from the same pure functions the reactor uses.
    mapping = assign("tw", SHARDS, members)
    expected = {}
    for m in managers:
        mine = {i for i, owner in mapping.items() if owner == m.identity}
        expected[m.identity] = len(mine | inheritable("tw", SHARDS, members, m.identity))
        assert expected[m.identity] < SHARDS / 2, (m.identity, expected[m.identity])
    # The watch shrinks a lease duration after the last handoff; on a busy machine that can be late, so
    # wait for it rather than for a fixed time (counting before it would count the wider watch).
    wait_until(lambda: all(m.health()["shards_watched"] == expected[m.identity] for m in managers), 30,
               f"every shard watch shrunk to its neighbourhood {expected}")
    time.sleep(0.5)  # the re-targeted watches list and start streaming
    srv.reset_request_counts()
    time.sleep(4.0)
    counts = srv.watch_event_counts()
    per_replica = [counts.get(m.identity, 0) for m in managers]
    # Every shard is renewed every 0.5 s, each member Lease too: a replica that watched everything
    # would receive (48 + 6) / 0.5 * 4 = 432 events. Watching under half the shards plus every member
    # stays well under two thirds of that.
    everything = (SHARDS + REPLICAS) / TIMING["retry_period"] * 4.0
    assert all(n < everything * 2 / 3 for n in per_replica), (per_replica, everything)
    assert all(n > 0 for n in per_replica), per_replica


def test_a_silent_replicas_shards_move_after_one_lease_not_two(
        cluster: tuple[DevServer, list[ShardManager]]) -> None:
    srv, managers = cluster
    wait_until(lambda: balanced(managers), 30, "48 shards spread 8 each")
    time.sleep(1.5)
    victim, survivors = managers[2], managers[:2] + managers[3:]
    shards = victim.owned_shards()
    cut = time.monotonic()
    srv.faults.partition(victim.identity, mode="drop")
    taken = wait_until(lambda: shards <= frozenset().union(*(m.owned_shards() for m in survivors)), 20,
                       f"survivors to take over {sorted(shards)}")
    took = taken - cut
    print(f"partition -> all of the victim's shards held elsewhere: {took:.2f} s")
    # Its last renewal was at most a retry period before the cut; its Leases run out one lease after
    # it. Watching them only once they were needed would add another whole lease (>= 6 s).
    lease = TIMING["lease_duration"]
    assert took < lease + TIMING["retry_period"] + 1.5, took
