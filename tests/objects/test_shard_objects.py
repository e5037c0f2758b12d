"""``shard.objects()``: each held shard gets exactly its own objects, first listed then as they change.

In-process managers against a real server (no mocks): the dev-server with the ``ShardedListAndWatch``
gate off (the replica filters on its side), and with it on, and the real kube-apiserver 1.36 with it on
(the server filters). Timings are scaled down; bounds are generous.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import wait_until

from shardlease import ShardleaseError
from shardlease.client.connect import load_api_client
from shardlease.config import ShardConfig
from shardlease.core.objects import shard_for_object
from shardlease.devserver import DevServer
from shardlease.harness.memstore import MemoryLeaseStore
from shardlease.runtime.handlers import Shard
from shardlease.runtime.manager import ShardManager
from shardlease.runtime.objects import ObjectEvent
from shardlease.testing import real_control_plane

FAST = {"lease_duration": 2.0, "renew_deadline": 1.2, "retry_period": 0.3, "drain_timeout": 3.0}
SHARDS = 8
GATE = {"ShardedListAndWatch": True}


class Server:
    """A server the tests talk to: its kubeconfig, whether it filters by shard, and a client for it."""

    def __init__(self, name: str, kubeconfig: str, server_filters: bool) -> None:
        self.name, self.kubeconfig, self.server_filters = name, kubeconfig, server_filters
        self.api = load_api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)


@pytest.fixture(scope="module", params=["dev", "dev-gate", "real-gate"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp(request.param)
    path = str(work / "kubeconfig")
    if request.param == "real-gate":
        with real_control_plane(work / "plane", feature_gates=GATE) as plane:
            plane.write_kubeconfig(path)
            yield Server(request.param, path, True)
        return
    gated = request.param == "dev-gate"
    with DevServer(port=0, feature_gates=GATE if gated else None) as dev:
        dev.write_kubeconfig(path)
        yield Server(request.param, path, gated)


_namespaces = iter(range(10_000))


@pytest.fixture
def namespace(server: Server) -> str:
    name = f"objects-{next(_namespaces)}"
    server.core.create_namespace({"metadata": {"name": name}})
    return name


class Seen:
    """Every event each replica's streams delivered: (identity, shard id, event)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, int, ObjectEvent]] = []

    def add(self, identity: str, shard: Shard, event: ObjectEvent) -> None:
        with self.lock:
            self.events.append((identity, shard.id, event))

    def synced(self, since: int = 0) -> set[tuple[str, int]]:
        """(identity, shard) of every stream that finished its initial list (after event ``since``)."""
        with self.lock:
            return {(i, s) for i, s, e in self.events[since:] if e.type == "SYNCED"}

    def all_synced(self, ms: list[ShardManager]) -> bool:
        """Every shard held now, and each holder's stream for it has finished its initial list."""
        held = {(m.identity, s) for m in ms for s in m.owned_shards()}
        return len(held) == SHARDS and held <= self.synced()

    def by_uid(self) -> dict[str, list[tuple[str, int, ObjectEvent]]]:
        out: dict[str, list[tuple[str, int, ObjectEvent]]] = collections.defaultdict(list)
        with self.lock:
            for entry in self.events:
                if entry[2].type != "SYNCED":
                    out[entry[2].uid].append(entry)
        return out


def sync_handler(seen: Seen, identity: str, namespace: str) -> Callable[[Shard], None]:
    def handle(shard: Shard) -> None:
        for event in shard.objects("v1", "configmaps", namespace=namespace):
            seen.add(identity, shard, event)
    return handle


def async_handler(seen: Seen, identity: str, namespace: str) -> Callable[[Shard], Any]:
    async def handle(shard: Shard) -> None:
        async for event in shard.objects("v1", "configmaps", namespace=namespace):
            seen.add(identity, shard, event)
            await asyncio.sleep(0)
    return handle


def managers(server: Server, group: str, handlers: list[Callable[[Shard], Any]]) -> list[ShardManager]:
    return [ShardManager(ShardConfig(group=group, shards=SHARDS, namespace="default", identity=f"r{i}",
                                     kubeconfig=server.kubeconfig, **FAST), h) for i, h in enumerate(handlers)]


def stop_all(ms: list[ShardManager]) -> None:
    for m in ms:
        m.stop()
    for m in ms:
        assert m.wait(15)


def sample(m: ShardManager, outcome: str) -> float:
    value = m.metrics.registry.get_sample_value(
        "shardlease_object_events_total",
        {"group": m.group, "identity": m.identity, "resource": "configmaps", "outcome": outcome})
    return value or 0.0


def create(server: Server, namespace: str, n: int) -> dict[str, dict[str, Any]]:
    made = {}
    for i in range(n):
        obj = server.api.sanitize_for_serialization(server.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"cm-{i}"}, "data": {"v": "0"}}))
        made[obj["metadata"]["uid"]] = obj
    return made


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_each_object_goes_to_its_shards_holder_only(server: Server, namespace: str, kind: str) -> None:
    objects = create(server, namespace, 40)
    seen = Seen()
    make = sync_handler if kind == "sync" else async_handler
    ms = managers(server, f"own-{kind}-{namespace}", [make(seen, f"r{i}", namespace) for i in range(2)])
    try:
        for m in ms:
            m.start()
        wait_until(lambda: sum(len(m.owned_shards()) for m in ms) == SHARDS
                   and all(len(m.owned_shards()) == SHARDS // 2 for m in ms), 20, "4 shards each")
        wait_until(lambda: seen.all_synced(ms) and set(seen.by_uid()) == set(objects), 10, "every object listed")
        # Every object was listed once, as ADDED, to the holder of its own shard (the one that kept it).
        for uid, entries in seen.by_uid().items():
            shard = shard_for_object(objects[uid], SHARDS)
            assert all(s == shard for _, s, _ in entries), (uid, shard, entries)
            holder = next(m.identity for m in ms if shard in m.owned_shards())
            assert [(i, e.type) for i, _, e in entries][-1] == (holder, "ADDED")

        before = {uid: len(entries) for uid, entries in seen.by_uid().items()}
        for obj in objects.values():
            server.core.patch_namespaced_config_map(obj["metadata"]["name"], namespace, {"data": {"v": "1"}})
        gone = next(iter(objects.values()))
        server.core.delete_namespaced_config_map(gone["metadata"]["name"], namespace)
        wait_until(lambda: all(len(seen.by_uid()[u]) >= before[u] + (2 if u == gone["metadata"]["uid"] else 1)
                               for u in objects), 10, "every change delivered")
        time.sleep(0.3)  # nothing more may come
        for uid, entries in seen.by_uid().items():
            tail = [e.type for _, _, e in entries[before[uid]:]]
            assert tail == (["MODIFIED", "DELETED"] if uid == gone["metadata"]["uid"] else ["MODIFIED"]), tail
            assert entries[before[uid]][2].object["data"] == {"v": "1"}
        if server.server_filters:
            # The server sent each replica only its own objects: nothing to drop on our side.
            assert all(sample(m, "filtered") == 0 for m in ms), [sample(m, "filtered") for m in ms]
        else:
            assert all(sample(m, "filtered") > 0 for m in ms)
        assert sum(sample(m, "delivered") for m in ms) >= len(objects) * 2 + 1
    finally:
        stop_all(ms)


def test_a_new_holder_starts_from_a_fresh_list_of_the_shard(server: Server, namespace: str) -> None:
    objects = create(server, namespace, 24)
    seen = Seen()
    ms = managers(server, f"handoff-{namespace}", [sync_handler(seen, f"r{i}", namespace) for i in range(2)])
    try:
        for m in ms:
            m.start()
        wait_until(lambda: all(len(m.owned_shards()) == SHARDS // 2 for m in ms), 20, "4 shards each")
        wait_until(lambda: seen.all_synced(ms), 10, "every stream synced")
        moving = ms[1].owned_shards()
        # Changed while r1 still holds them, then r1 leaves: r0 must list them afresh, changes included.
        changed = [o for o in objects.values() if shard_for_object(o, SHARDS) in moving][:3]
        for obj in changed:
            server.core.patch_namespaced_config_map(obj["metadata"]["name"], namespace, {"data": {"v": "2"}})
        with seen.lock:
            mark = len(seen.events)   # r0 may have held these shards once before r1 joined: look after this
        ms[1].stop()
        assert ms[1].wait(15)
        wait_until(lambda: len(ms[0].owned_shards()) == SHARDS and {("r0", s) for s in moving} <= seen.synced(mark),
                   10, "r0 to sync the shards it took over")
        with seen.lock:
            later = seen.events[mark:]
        for uid, obj in objects.items():
            shard = shard_for_object(obj, SHARDS)
            if shard not in moving:
                continue
            r0 = [e for i, _, e in later if i == "r0" and e.uid == uid]
            assert [e.type for e in r0] == ["ADDED"], (uid, r0)
            if obj in changed:
                assert r0[0].object["data"] == {"v": "2"}
        # The leaver's streams ended with its shards: it received nothing after it stopped.
        r1_after = [e for i, _, e in seen.events if i == "r1" and e.type == "MODIFIED"]
        assert len(r1_after) <= len(changed)
    finally:
        stop_all(ms)


def test_unknown_resource_fails_the_handler_loudly(server: Server, namespace: str) -> None:
    errors: list[BaseException] = []

    def handle(shard: Shard) -> None:
        try:
            for _ in shard.objects("v1", "configmapz", namespace=namespace):
                pass
        except ShardleaseError as exc:
            errors.append(exc)
            raise

    [m] = managers(server, f"bad-{namespace}", [handle])
    try:
        m.start()
        wait_until(lambda: len(errors) >= SHARDS, 20, "every shard's handler to fail")
        assert all(type(e).__name__ == "NotFound" for e in errors), errors
        # Counted once the runner has logged the raise, a moment after the handler saw it: wait for it.
        wait_until(lambda: (m.metrics.registry.get_sample_value(
            "shardlease_handler_errors_total", {"group": m.group, "identity": "r0"}) or 0) >= SHARDS, 10,
            "every failure counted in shardlease_handler_errors_total")
    finally:
        stop_all([m])


def test_bad_arguments_are_refused_with_the_field_named(server: Server) -> None:
    calls: list[str] = []

    def handle(shard: Shard) -> None:
        for args, kwargs in [(("apps/v1/x", "deployments"), {}), (("v1", "ConfigMap"), {}),
                             (("v1", "configmaps"), {"namespace": "Not_A_Name"}),
                             (("v1", "configmaps"), {"by": "name"})]:
            try:
                shard.objects(*args, **kwargs)
            except ValueError as exc:
                calls.append(str(exc).split(" ")[0])
        shard.stopped.wait()

    [m] = managers(server, "badargs", [handle])
    try:
        m.start()
        wait_until(lambda: len(calls) >= 4, 20, "the calls")
        assert calls[:4] == ["api_version", "resource", "namespace", "by"]
    finally:
        stop_all([m])


def test_objects_need_an_api_connection() -> None:
    raised: list[BaseException] = []

    def handle(shard: Shard) -> None:
        try:
            shard.objects("v1", "configmaps")
        except ShardleaseError as exc:
            raised.append(exc)
        shard.stopped.wait()

    m = ShardManager(ShardConfig(group="mem", shards=1, identity="r0", **FAST), handle, store=MemoryLeaseStore())
    try:
        m.start()
        wait_until(lambda: bool(raised), 10, "the handler to call shard.objects")
        assert "needs the Kubernetes API" in str(raised[0]) and "api_client=" in str(raised[0])
    finally:
        stop_all([m])


def most_received_by_one_replica(dev: DevServer, path: str, gated: bool, creations: int) -> float:
    """Start 4 replicas (2 shards each), create ``creations`` objects, return the most items one replica
    received for them (delivered to its handlers or dropped as another's)."""
    dev.write_kubeconfig(path)
    server = Server("gated" if gated else "plain", path, gated)
    seen = Seen()
    ms = managers(server, "count", [sync_handler(seen, f"r{i}", "default") for i in range(4)])
    try:
        for m in ms:
            m.start()
        wait_until(lambda: all(len(m.owned_shards()) == 2 for m in ms) and seen.all_synced(ms), 20,
                   "2 shards each, synced")
        objects = create(server, "default", creations)
        wait_until(lambda: len(seen.by_uid()) == len(objects), 10, "every object delivered")
        return max(sample(m, "delivered") + sample(m, "filtered") for m in ms)
    finally:
        stop_all(ms)


def test_dev_server_without_the_gate_sends_everything(tmp_path: Path) -> None:
    """The reason server-side filtering matters, counted by the replicas themselves."""
    with DevServer(port=0) as plain, DevServer(port=0, feature_gates=GATE) as gated:
        everything = most_received_by_one_replica(plain, str(tmp_path / "plain"), False, 80)
        own = most_received_by_one_replica(gated, str(tmp_path / "gated"), True, 80)
    # Without the gate each replica reads all 80 creations; with it, about a quarter.
    assert everything >= 80
    assert own <= 80 / 4 * 2, own


@pytest.mark.parametrize("compacted", [False, True], ids=["resume", "relist-after-410"])
def test_a_broken_watch_loses_and_repeats_nothing(tmp_path: Path, compacted: bool) -> None:
    """Changes made while the object watch is cut arrive exactly once: by resuming from the last
    resourceVersion, or, when the server has forgotten that version (410), by a relist diffed against
    what the stream already delivered."""
    with DevServer(port=0, faults=True, feature_gates=GATE) as dev:
        path = str(tmp_path / "kubeconfig")
        dev.write_kubeconfig(path)
        server = Server("dev-faults", path, True)
        objects = create(server, "default", 12)
        seen = Seen()
        [m] = managers(server, "cut", [sync_handler(seen, "r0", "default")])
        try:
            m.start()
            wait_until(lambda: seen.all_synced([m]), 20, "all 8 shards held and synced")
            [a, b, *_] = objects.values()

            def lists() -> float:
                return m.metrics.registry.get_sample_value(
                    "shardlease_object_lists_total", {"group": "cut", "identity": "r0", "resource": "configmaps"}) or 0

            time.sleep(0.3)  # past the debounce of the last re-target
            lists_before = lists()
            dev.faults.freeze_watches()
            server.core.patch_namespaced_config_map(a["metadata"]["name"], "default", {"data": {"v": "9"}})
            server.core.delete_namespaced_config_map(b["metadata"]["name"], "default")
            c = server.api.sanitize_for_serialization(server.core.create_namespaced_config_map(
                "default", {"metadata": {"name": "cm-new"}}))
            if compacted:
                dev.compact()
            dev.faults.cut_watches()
            dev.faults.unfreeze_watches()
            wait_until(lambda: c["metadata"]["uid"] in seen.by_uid(), 10, "the object created meanwhile")
            time.sleep(0.5)  # anything repeated would arrive now
            by_uid = seen.by_uid()
            assert [e.type for _, _, e in by_uid[a["metadata"]["uid"]]] == ["ADDED", "MODIFIED"]
            assert by_uid[a["metadata"]["uid"]][-1][2].object["data"] == {"v": "9"}
            assert [e.type for _, _, e in by_uid[b["metadata"]["uid"]]] == ["ADDED", "DELETED"]
            assert [e.type for _, _, e in by_uid[c["metadata"]["uid"]]] == ["ADDED"]
            assert all(len(entries) == 1 for uid, entries in by_uid.items()
                       if uid not in (a["metadata"]["uid"], b["metadata"]["uid"])), by_uid
            assert lists() == (lists_before + 1 if compacted else lists_before), (lists(), lists_before)
        finally:
            stop_all([m])


def test_a_stream_opened_while_a_list_drops_its_shard_is_served_by_the_next_list(tmp_path: Path) -> None:
    """Regression (found by bench/object_events.py): shard 0's last stream closes, the feed starts a list
    without it, and a new stream for shard 0 opens while that (slow) list is in flight. The new stream
    must not be served from the old picture and then left outside the watch: it waits for a list that
    includes its shard, and receives later changes."""
    import logging

    from shardlease.runtime.objects import ObjectFeeds

    with DevServer(port=0, faults=True) as dev:
        path = str(tmp_path / "kubeconfig")
        dev.write_kubeconfig(path)
        server = Server("dev-race", path, False)
        objects = create(server, "default", 16)
        by_shard: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for obj in objects.values():
            by_shard[shard_for_object(obj, 2)].append(obj)
        feeds = ObjectFeeds(server.api, logger=logging.getLogger("test"))
        stopped = [threading.Event() for _ in range(3)]
        try:
            first = feeds.stream(0, 2, stopped[0], "v1", "configmaps", namespace="default")
            other = feeds.stream(1, 2, stopped[1], "v1", "configmaps", namespace="default")
            got: dict[str, list[ObjectEvent]] = {"first": [], "other": []}

            def drain(name: str, stream: Any) -> None:
                for event in stream:
                    got[name].append(event)

            threads = [threading.Thread(target=drain, args=("first", first), daemon=True),
                       threading.Thread(target=drain, args=("other", other), daemon=True)]
            for t in threads:
                t.start()
            wait_until(lambda: any(e.type == "SYNCED" for e in got["first"])
                       and any(e.type == "SYNCED" for e in got["other"]), 10, "both streams synced")
            dev.faults.set_latency(0.6)
            first.close()                       # shard 0 has no stream: the feed lists shard 1 only...
            time.sleep(0.3)                     # ...and that list is now in flight (0.6 s)
            second = feeds.stream(0, 2, stopped[2], "v1", "configmaps", namespace="default")
            got["second"] = []
            threading.Thread(target=drain, args=("second", second), daemon=True).start()
            dev.faults.set_latency(0)
            wait_until(lambda: any(e.type == "SYNCED" for e in got["second"]), 10, "the new stream synced")
            target = by_shard[0][0]
            server.core.patch_namespaced_config_map(target["metadata"]["name"], "default", {"data": {"v": "7"}})
            wait_until(lambda: any(e.type == "MODIFIED" for e in got["second"]), 10,
                       "the change to reach the new stream")
            assert {e.uid for e in got["second"] if e.type == "ADDED"} == {o["metadata"]["uid"] for o in by_shard[0]}
        finally:
            for event in stopped:
                event.set()
            feeds.close()


class Drained:
    """Each stream's events, read by a thread per stream as a handler would."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[tuple[int, int], list[ObjectEvent]] = collections.defaultdict(list)
        self.errors: dict[tuple[int, int], BaseException] = {}

    def start(self, count: int, shard: int, stream: Any) -> None:
        def drain() -> None:
            try:
                for event in stream:
                    with self.lock:
                        self.events[(count, shard)].append(event)
            except Exception as exc:
                with self.lock:
                    self.errors[(count, shard)] = exc
        threading.Thread(target=drain, daemon=True).start()

    def synced(self, count: int, shards: range) -> bool:
        with self.lock:
            return all(any(e.type == "SYNCED" for e in self.events[(count, s)]) for s in shards)

    def uids(self, count: int, shard: int, kind: str) -> set[str]:
        with self.lock:
            return {e.uid for e in self.events[(count, shard)] if e.type == kind}


def test_streams_follow_the_count_of_their_generation_across_a_switch(server: Server, namespace: str) -> None:
    """A switch from 2 to 3 shards, as one replica's handlers go through it: the old generation's
    streams end (the barrier stops them) before the new generation's open. Each new stream gets a fresh
    list of exactly its objects under 3 shards, and later changes go to the owner under 3 only; the
    feed of the old count closes once idle. (The count used to be fixed by the first stream of a feed:
    shard 2 of 3 got nothing, an error logged every few seconds, and shards 0 and 1 their old ranges.)"""
    import logging

    from shardlease.runtime.objects import ObjectFeeds

    objects = create(server, namespace, 30)
    owner = {uid: {n: shard_for_object(obj, n) for n in (2, 3)} for uid, obj in objects.items()}
    assert {o[2] for o in owner.values()} == {0, 1} and {o[3] for o in owner.values()} == {0, 1, 2}
    feeds = ObjectFeeds(server.api, logger=logging.getLogger("test.objects"), idle_timeout=0.2)
    drained = Drained()
    old = {s: threading.Event() for s in range(2)}      # shard.stopped of generation 1 (2 shards)...
    new = {s: threading.Event() for s in range(3)}      # ...and of generation 2 (3 shards)
    try:
        old_streams = [feeds.stream(s, 2, old[s], "v1", "configmaps", namespace=namespace) for s in range(2)]
        for s, stream in enumerate(old_streams):
            drained.start(2, s, stream)
        wait_until(lambda: drained.synced(2, range(2)), 20, "the 2-shard streams synced")
        [old_feed] = feeds.feeds()
        for s in range(2):
            assert drained.uids(2, s, "ADDED") == {u for u, o in owner.items() if o[2] == s}

        # The switch: every old handler is stopped (its streams end) before a new one starts.
        for event in old.values():
            event.set()
        for stream in old_streams:
            stream.close()
        for s in range(3):
            drained.start(3, s, feeds.stream(s, 3, new[s], "v1", "configmaps", namespace=namespace))
        wait_until(lambda: drained.synced(3, range(3)), 20, "every 3-shard stream synced")
        for s in range(3):
            assert drained.uids(3, s, "ADDED") == {u for u, o in owner.items() if o[3] == s}, s
        assert not drained.errors, drained.errors

        for obj in objects.values():
            server.core.patch_namespaced_config_map(obj["metadata"]["name"], namespace, {"data": {"v": "1"}})
        wait_until(lambda: sum(len(drained.uids(3, s, "MODIFIED")) for s in range(3)) == len(objects), 10,
                   "every change delivered")
        for s in range(3):
            assert drained.uids(3, s, "MODIFIED") == {u for u, o in owner.items() if o[3] == s}, s
        # Nothing reached the old generation's streams after they ended.
        assert not any(drained.uids(2, s, "MODIFIED") for s in range(2))

        # The feed of the old count had no stream left: it closed, thread and all.
        wait_until(lambda: [f.count for f in feeds.feeds()] == [3], 10, "the 2-shard feed to close")
        wait_until(lambda: not old_feed.running, 5, "the 2-shard feed's thread to end")
        assert all(f.running for f in feeds.feeds())

        # A replica whose first stream opens after the switch is served the same way.
        late, late_drained = ObjectFeeds(server.api, logger=logging.getLogger("test.objects.late")), Drained()
        try:
            late_drained.start(3, 2, late.stream(2, 3, threading.Event(), "v1", "configmaps", namespace=namespace))
            wait_until(lambda: late_drained.synced(3, range(2, 3)), 20, "the late replica's stream synced")
            assert late_drained.uids(3, 2, "ADDED") == {u for u, o in owner.items() if o[3] == 2}
        finally:
            late.close()
    finally:
        for event in [*old.values(), *new.values()]:
            event.set()
        feeds.close()


def test_a_replica_that_keeps_only_low_shard_ids_gets_their_new_ranges(server: Server, namespace: str) -> None:
    """The quieter half of the same failure: a replica that holds shard 1 of 2, then (after a switch to
    3) shard 1 of 3, must be served shard 1's range under 3. A feed that kept the count of its first
    stream served the old range, i.e. objects that another shard, maybe on another replica, owns now."""
    import logging

    from shardlease.runtime.objects import ObjectFeeds

    objects = create(server, namespace, 30)
    owner = {uid: {n: shard_for_object(obj, n) for n in (2, 3)} for uid, obj in objects.items()}
    assert {u for u, o in owner.items() if o[2] == 1} != {u for u, o in owner.items() if o[3] == 1}
    feeds = ObjectFeeds(server.api, logger=logging.getLogger("test.objects"))
    drained = Drained()
    before, after = threading.Event(), threading.Event()
    try:
        stream = feeds.stream(1, 2, before, "v1", "configmaps", namespace=namespace)
        drained.start(2, 1, stream)
        wait_until(lambda: drained.synced(2, range(1, 2)), 20, "shard 1 of 2 synced")
        before.set()
        stream.close()
        drained.start(3, 1, feeds.stream(1, 3, after, "v1", "configmaps", namespace=namespace))
        wait_until(lambda: drained.synced(3, range(1, 2)), 20, "shard 1 of 3 synced")
        assert drained.uids(3, 1, "ADDED") == {u for u, o in owner.items() if o[3] == 1}
    finally:
        before.set()
        after.set()
        feeds.close()


def test_a_shard_outside_the_count_is_refused_when_the_stream_opens(server: Server) -> None:
    import logging

    from shardlease.errors import InvalidArgument
    from shardlease.runtime.objects import ObjectFeeds

    feeds = ObjectFeeds(server.api, logger=logging.getLogger("test.objects"))
    try:
        with pytest.raises(InvalidArgument, match=r"shard must be an integer in 0\.\.15 \(shards=16\), got 16"):
            feeds.stream(16, 16, threading.Event(), "v1", "configmaps")
        with pytest.raises(InvalidArgument, match="count must be"):
            feeds.stream(0, 0, threading.Event(), "v1", "configmaps")
        assert feeds.feeds() == []
    finally:
        feeds.close()


def test_an_error_a_retry_cannot_heal_fails_the_streams_once_not_forever(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A failure inside the feed that is not a transient API error (here a bug, injected into the real
    client's LIST) is raised from the iteration of every stream, so each handler fails loudly
    and is restarted; the feed does not retry it behind an ERROR line every few seconds. The restarted
    handler's stream is served normally."""
    import logging

    from shardlease.client.objects import ObjectClient, ObjectList, resource_path
    from shardlease.runtime.objects import ObjectStream, _Feed

    class ListBreaks(ObjectClient):
        broken = True

        def list(self, shard_selector: str, *, timeout: float) -> ObjectList:
            if self.broken:
                raise RuntimeError("injected: a bug while listing")
            return super().list(shard_selector, timeout=timeout)

    with DevServer(port=0) as dev:
        path = str(tmp_path / "kubeconfig")
        dev.write_kubeconfig(path)
        server = Server("dev-broken", path, False)
        objects = create(server, "default", 6)
        client_ = ListBreaks(server.api, resource_path("v1", "configmaps", "default"))
        feed = _Feed(client_, ("v1", "configmaps", "default", None, "uid", 1), "uid", 1, name="configmaps",
                     logger=logging.getLogger("test.feed"), metrics=None, read_timeout=5.0, debounce=0.01)
        stopped = threading.Event()
        try:
            with caplog.at_level(logging.ERROR, logger="test.feed"):
                first = ObjectStream(feed, 0, 1, stopped)
                feed.subscribe(first)
                raised: list[BaseException] = []

                def read() -> None:
                    try:
                        next(first)
                    except BaseException as exc:
                        raised.append(exc)

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                reader.join(10)
                assert raised and isinstance(raised[0], RuntimeError) and "injected" in str(raised[0]), raised
                time.sleep(1.0)  # a feed that retried (with nobody left to serve) would log again within this
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "unexpected error in the feed" in errors[0].getMessage(), errors
            assert errors[0].exc_info is not None  # the traceback is logged once, where the bug is

            client_.broken = False
            again = ObjectStream(feed, 0, 1, stopped)   # the handler, restarted, opens its stream again
            feed.subscribe(again)
            got = []
            for event in again:
                got.append(event)
                if event.type == "SYNCED":
                    break
            assert {e.uid for e in got if e.type == "ADDED"} == set(objects)
        finally:
            stopped.set()
            feed.stop()
