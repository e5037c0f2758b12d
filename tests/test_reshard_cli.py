"""``shardlease reshard`` (and ``shardlease.runtime.reshard``) against the embedded dev-server.

The group's Leases are written by hand, as replicas would have left them, so each test pins one
decision: what the next generation looks like, what is refused and how, when ``--wait`` calls a switch
complete, that a concurrent change of the group Lease is built upon rather than overwritten, and what
``shardlease status`` shows during a switch.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardlease.cli import main
from shardlease.client.leases import LeaseClient
from shardlease.core.records import (
    LEASE_API_VERSION,
    LeaseRecord,
    format_microtime,
    group_lease_name,
    member_labels,
    member_lease_name,
    shard_labels,
    shard_lease_name,
)
from shardlease.core.resharding import MAX_SHARDS, GroupState, group_lease_body
from shardlease.runtime.reshard import ReshardError, ReshardTimeout, reshard, reshard_on

GROUP = "g"


@dataclass
class Cluster:
    kubeconfig: str
    store: LeaseClient
    api: Any

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = main([args[0], "--group", GROUP, "--kubeconfig", self.kubeconfig, *args[1:]])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def group(self) -> tuple[LeaseRecord, GroupState]:
        obj = self.store.get(group_lease_name(GROUP))
        assert obj is not None
        rec = LeaseRecord.from_object(obj)
        assert rec is not None
        state = GroupState.from_record(rec)
        assert state is not None
        return rec, state

    def put_group(self, count: int, generation: int, *, span: int | None = None, basis: int | None = None,
                  previous: int | None = None, by: str = "initial") -> None:
        state = GroupState(count, generation, span or count, basis, previous, by)
        self._upsert(group_lease_body(GROUP, "default", state, _dt.datetime.now(_dt.timezone.utc)))

    def put_member(self, identity: str, configured: int, generation: int | None = 1, *,
                   renewed_ago: float = 0.0) -> None:
        annotations = {"shardlease.io/shards": str(configured)}
        if generation is not None:
            annotations["shardlease.io/generation"] = str(generation)
        self._upsert(_lease(member_lease_name(GROUP, identity), member_labels(GROUP), identity, annotations,
                            renewed_ago))

    def put_shard(self, i: int, generation: int | None, holder: str = "a") -> None:
        annotations = {} if generation is None else {"shardlease.io/generation": str(generation)}
        self._upsert(_lease(shard_lease_name(GROUP, i), shard_labels(GROUP, i), holder, annotations, 0.0))

    def _upsert(self, body: dict[str, Any]) -> None:
        current = self.store.get(body["metadata"]["name"])
        if current is None:
            self.store.create(body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.store.replace(body["metadata"]["name"], body)


def _lease(name: str, labels: Mapping[str, str], holder: str, annotations: Mapping[str, str],
           renewed_ago: float) -> dict[str, Any]:
    renewed = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=renewed_ago)
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease",
            "metadata": {"name": name, "namespace": "default", "labels": dict(labels),
                         "annotations": dict(annotations)},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60, "renewTime": format_microtime(renewed),
                     "acquireTime": format_microtime(renewed)}}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    from shardlease.client.connect import load_api_client
    from shardlease.devserver import DevServer

    with DevServer(port=0) as srv:
        kubeconfig = srv.write_kubeconfig(tmp_path / "kubeconfig")
        api = load_api_client(kubeconfig=str(kubeconfig))
        store = LeaseClient(api, "default")
        try:
            yield Cluster(str(kubeconfig), store, api)
        finally:
            store.close()
            api.close()


# ---------------------------------------------------------------- writing the next generation

def test_reshard_writes_the_next_generation_with_the_live_majority_as_basis(
        cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.put_group(8, 1, basis=16)
    cluster.put_member("a", 8)
    cluster.put_member("b", 8)
    cluster.put_member("c", 16)
    cluster.put_member("d", 16, renewed_ago=600)  # expired long ago: with it, 8 and 16 would tie

    code, out, err = cluster.cli(capsys, "reshard", "--shards", "12")
    assert code == 0, err
    assert "8 -> 12 shards, generation 1 -> 2" in out
    rec, state = cluster.group()
    assert (state.count, state.generation, state.span, state.basis, state.previous, state.changed_by) == (
        12, 2, 12, 8, 8, "reshard")
    assert rec.acquire_time is not None and abs((_dt.datetime.now(_dt.timezone.utc) - rec.acquire_time)
                                                .total_seconds()) < 60

    code, out, err = cluster.cli(capsys, "reshard", "--shards", "4")  # down: the span keeps 12
    assert code == 0, err
    assert "12 -> 4 shards, generation 2 -> 3" in out
    assert "most live members are configured with 8 shards" in out
    _, state = cluster.group()
    assert (state.count, state.generation, state.span, state.previous) == (4, 3, 12, 12)


@pytest.mark.parametrize("shards", ["0", "-3", str(MAX_SHARDS + 1)])
def test_a_count_out_of_range_is_refused_naming_the_flag(cluster: Cluster, capsys: pytest.CaptureFixture[str],
                                                         shards: str) -> None:
    cluster.put_group(8, 1)
    before, _ = cluster.group()
    code, out, err = cluster.cli(capsys, "reshard", "--shards", shards)
    assert code == 2 and "--shards must be at" in err and shards in err and not out
    after, _ = cluster.group()
    assert after.resource_version == before.resource_version


def test_the_python_call_refuses_what_the_command_refuses(cluster: Cluster) -> None:
    cluster.put_group(8, 1)
    for bad in (0, MAX_SHARDS + 1, True, 2.5):
        with pytest.raises(ValueError, match="shards must be"):
            reshard(GROUP, bad, api_client=cluster.api)  # type: ignore[arg-type]


def test_a_group_without_a_group_lease_says_start_the_replicas_first(
        cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.put_member("a", 8, generation=None)  # a replica of a version without resharding
    code, out, err = cluster.cli(capsys, "reshard", "--shards", "12")
    assert code == 2 and not out
    assert "no group Lease g-group in namespace 'default'" in err and "Start the replicas first" in err
    assert cluster.store.get(group_lease_name(GROUP)) is None


def test_an_unreadable_group_lease_is_reported_not_overwritten(
        cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    body = group_lease_body(GROUP, "default", GroupState(8, 1, 8, 8), _dt.datetime.now(_dt.timezone.utc))
    body["metadata"]["annotations"]["shardlease.io/generation"] = "two"
    cluster.store.create(body)
    code, _, err = cluster.cli(capsys, "reshard", "--shards", "12")
    assert code == 2 and "no readable shard count or generation" in err and "shardlease.io/generation" in err
    obj = cluster.store.get(group_lease_name(GROUP))
    assert obj is not None and obj["metadata"]["annotations"]["shardlease.io/generation"] == "two"


def test_the_same_count_changes_nothing(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.put_group(8, 3)
    before, _ = cluster.group()
    code, out, err = cluster.cli(capsys, "reshard", "--shards", "8")
    assert code == 0, err
    assert "already runs 8 shards (generation 3); nothing changed" in out
    after, _ = cluster.group()
    assert after.resource_version == before.resource_version


# ---------------------------------------------------------------- --wait

def test_wait_returns_once_every_shard_lease_below_the_span_carries_the_new_generation(
        cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.put_group(4, 1)
    cluster.put_member("a", 4)
    for i in range(4):
        cluster.put_shard(i, None)  # written before resharding existed: generation 1

    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(
        code=main(["reshard", "--group", GROUP, "--shards", "2", "--wait", "30", "--kubeconfig", cluster.kubeconfig])))
    runner.start()
    deadline = time.monotonic() + 30
    while cluster.group()[1].generation != 2:
        assert time.monotonic() < deadline, "the reshard was not written"
        time.sleep(0.05)
    for i in range(3):  # as the replicas would, once each old handler returned (2 and 3 are retired)
        cluster.put_shard(i, 2)
    time.sleep(1.0)  # several polls: shard 3 still pending
    assert runner.is_alive(), "--wait returned before shard 3 carried generation 2"
    cluster.put_shard(3, 2, holder="")
    runner.join(30)
    assert not runner.is_alive() and outcome["code"] == 0
    out = capsys.readouterr().out
    assert "4 -> 2 shards, generation 1 -> 2" in out and "switch to generation 2 complete" in out


def test_wait_times_out_naming_the_pending_shards(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.put_group(4, 1)
    cluster.put_member("a", 4)
    for i in range(4):
        cluster.put_shard(i, 2 if i < 2 else 1)
    started = time.monotonic()
    code, out, err = cluster.cli(capsys, "reshard", "--shards", "6", "--wait", "0.5")
    assert code == 1
    assert time.monotonic() - started < 20
    assert "4 -> 6 shards, generation 1 -> 2" in out  # written all the same
    assert "did not complete within 0.5s: shards [2, 3, 4, 5] are still pending" in err

    with pytest.raises(ReshardTimeout) as caught:  # the Python call: the same, as an exception
        reshard(GROUP, 6, api_client=cluster.api, wait=0.2)
    assert caught.value.result.pending == (2, 3, 4, 5) and not caught.value.result.changed


# ---------------------------------------------------------------- a concurrent writer

class RacingStore(LeaseClient):
    """A real client whose conditional PUT of the group Lease is preceded by another writer's change of
    it (``races`` times): the write we send then carries a stale resourceVersion."""

    def __init__(self, api: Any, other: Cluster, races: int) -> None:
        super().__init__(api, "default")
        self.other, self.races, self.puts = other, races, 0

    def replace(self, name: str, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        self.puts += 1
        if name == group_lease_name(GROUP) and self.races > 0:
            self.races -= 1
            _, current = self.other.group()
            self.other.put_group(6, current.generation + 1, span=max(current.span, 6), previous=current.count,
                                 by="rollout")
        return super().replace(name, body, timeout=timeout)


def test_a_concurrent_change_is_built_upon_not_overwritten(cluster: Cluster) -> None:
    cluster.put_group(8, 1)
    cluster.put_member("a", 8)
    store = RacingStore(cluster.api, cluster, races=1)
    try:
        result = reshard_on(store, GROUP, 12)
    finally:
        store.close()
    assert store.puts == 2  # the first PUT lost (409), the second went on top of the rollout
    _, state = cluster.group()
    assert (state.count, state.generation, state.previous, state.span) == (12, 3, 6, 12)
    assert (result.before.count, result.before.generation, result.generation) == (6, 2, 3)


def test_a_group_lease_that_keeps_changing_is_an_error_not_a_blind_write(cluster: Cluster) -> None:
    cluster.put_group(8, 1)
    store = RacingStore(cluster.api, cluster, races=100)
    try:
        with pytest.raises(ReshardError, match="changed under every one of"):
            reshard_on(store, GROUP, 12)
    finally:
        store.close()
    _, state = cluster.group()
    assert state.count == 6 and state.changed_by == "rollout"  # the other writer's last change stands


# ---------------------------------------------------------------- status during a switch

def test_status_shows_the_generation_and_the_pending_switch(cluster: Cluster,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cluster.put_group(6, 1)
    cluster.put_member("a", 6)
    cluster.put_member("b", 6)
    for i in range(6):
        cluster.put_shard(i, None)
    assert cluster.cli(capsys, "reshard", "--shards", "4")[0] == 0
    cluster.put_member("a", 6, generation=2)  # a runs the new generation, b still the old one
    for i in (0, 2, 3, 4, 5):
        cluster.put_shard(i, 2)

    code, out, err = cluster.cli(capsys, "status")
    assert code == 0, err
    assert "4 shards, generation 2 (was 6; changed by reshard" in out
    assert "switch in progress: waiting for shards [1]" in out
    assert "retired shards [4, 5]" in out
    assert "switch to generation 2 waiting for 1 shards" in out.strip().splitlines()[-1]
    member_rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines() if line.startswith("  a ")
                   or line.startswith("  b ")}
    assert member_rows == {"a": ["6", "2", "yes"], "b": ["6", "1", "yes"]}

    code, out, err = cluster.cli(capsys, "status", "--output", "json")
    data = json.loads(out)
    assert (data["shards"], data["generation"], data["previous_shards"], data["switch_pending"], data["retired"]) == (
        4, 2, 6, [1], [4, 5])
    assert [(m["identity"], m["configured"], m["generation"], m["eligible"]) for m in data["members"]] == [
        ("a", 6, 2, True), ("b", 6, 1, True)]

    cluster.put_shard(1, 2)
    code, out, err = cluster.cli(capsys, "status", "--output", "json")
    assert json.loads(out)["switch_pending"] == []
