"""Benchmark: items each replica receives from the API server while syncing sharded ConfigMaps.

Why: the point of ``shard.objects()`` is that a replica of N should receive about 1/N of
the object stream, not all of it. This measures exactly that, per replica, for three designs:

* ``server``: ``shard.objects`` with the ``ShardedListAndWatch`` gate on; the API server filters by
  the ``shardSelector`` naming the hash ranges the replica holds (KEP-5866).
* ``client``: ``shard.objects`` with the gate off; the server sends everything and the replica drops
  the objects of shards it does not hold.
* ``example``: the design of the old ``examples/configmap_controller.py`` (before 4d7bbb7): every
  replica runs one unfiltered list+watch over all ConfigMaps next to an idle ShardManager.

Set-up per mode: a fresh API server (the dev-server in its own process, or etcd + kube-apiserver
with ``--server real``) with the gate on for ``server`` and off for the others; ``--objects``
ConfigMaps created up front by a few threads over raw HTTP. Then, for each N in ``--replicas``, N
in-process ShardManagers (scaled timings: lease 2 s, renew deadline 1.2 s, retry 0.3 s; identities
r0..) start at once; once every shard is held by its assigned owner, every stream has its initial
list and no list has happened for a second, a single writer updates random ConfigMaps at ``--churn``
per second for ``--duration`` seconds (unconditional PUTs, each answer's resourceVersion recorded).
The window ends when every update has reached the replicas that should receive it (or 15 s later).

What is counted. During the window: the items each replica received on its watch, from its own
metrics (``shardlease_object_events_total``, delivered + filtered) or, for ``example``, by the plain
watcher itself; bookmarks are not items. Before it: the items in every list a replica made while
the group settled (counted by wrapping ``ObjectClient.list`` in this process, since the library's
counter leaves out relisted objects it already knew) and the number of lists. For ``server`` and
``client``, every update is checked to have reached exactly one replica, the holder of its shard,
exactly once. CPU is ``getrusage(RUSAGE_SELF)`` over the window: the whole bench process (all
replicas, the plain watchers and the churn writer share it; the API server is another process).

Usage::

    python bench/object_events.py [--server dev|real] [--kube-assets DIR] [--objects 2000]
        [--replicas 1,2,4,8] [--modes server,client,example] [--churn 50] [--duration 20]
        [--shards 32] [--seed S] [--out bench/results/object_events] [--docs yes|no]

Writes ``OUT.json`` and ``OUT.md`` (default ``bench/results/object_events``, ``..._real`` for the real
server) and, with the default ``--out`` or ``--docs yes``, the section between the ``object_events``
markers of ``docs/benchmarks.md`` (both servers' tables, from the default result files).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from kubernetes.client import ApiClient

import shardlease.runtime.objects as runtime_objects
from shardlease.client.connect import load_api_client
from shardlease.client.objects import ObjectClient, ObjectList, resource_path
from shardlease.client.transport import Transport
from shardlease.config import ShardConfig
from shardlease.core.objects import shard_for_object
from shardlease.errors import ApiError, ConflictError
from shardlease.harness.localcluster import LocalCluster
from shardlease.runtime.handlers import Shard
from shardlease.runtime.manager import ShardManager
from shardlease.runtime.objects import ObjectEvent

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Output stem per server kind: the dev-server's figures and the real kube-apiserver's side by side.
DEFAULT_OUT = {"dev": BENCH_DIR / "results" / "object_events", "real": BENCH_DIR / "results" / "object_events_real"}
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN = "<!-- object_events:begin (written by bench/object_events.py) -->"
DOCS_END = "<!-- object_events:end -->"

MODES = ("server", "client", "example")
NAMESPACE = "bench-objects"
GATE = "ShardedListAndWatch"
TIMINGS = {"lease_duration": 2.0, "renew_deadline": 1.2, "retry_period": 0.3, "drain_timeout": 3.0}
#: How far a replica's share of the window's events may stray from 1/N with server-side filtering.
TOLERANCE = 0.20
SETTLE_TIMEOUT = 60.0
DRAIN_TIMEOUT = 15.0
QUIET_S = 1.0

log = logging.getLogger("bench.object_events")
Num = TypeVar("Num", int, float)


def _say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------------
# What every replica received
# --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts shared by the handlers, the plain watchers and the list wrapper (threads, one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: identity -> items in the lists it made / number of lists (wrapper or plain watcher).
    list_items: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lists: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: identity -> watch items the plain watcher received (``example`` only).
    watch_items: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: (identity, shard) of every stream that has finished its initial list.
    synced: set[tuple[str, int]] = field(default_factory=set)
    #: (uid, resourceVersion) of an update -> identities it reached, once per reception.
    reached: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))

    def listed(self, identity: str, items: int) -> None:
        with self.lock:
            self.lists[identity] += 1
            self.list_items[identity] += items

    def watched(self, identity: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.watch_items[identity] += 1
            self.reached[_version(obj)].append(identity)

    def delivered(self, identity: str, event: ObjectEvent) -> None:
        with self.lock:
            if event.type == "SYNCED":
                self.synced.add((identity, event.shard))
            elif event.type == "MODIFIED":
                self.reached[_version(event.object)].append(identity)

    def copy_counts(self, counts: dict[str, int]) -> dict[str, int]:
        with self.lock:
            return dict(counts)


def _version(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid", "")), str(meta.get("resourceVersion", ""))


_owners: dict[int, tuple[str, Tally]] = {}


class _CountingObjectClient(ObjectClient):
    """``ObjectClient`` that reports the size of every list to the replica's tally.

    Installed in :mod:`shardlease.runtime.objects` for the bench only (:func:`counting_lists`): the
    feeds' ``object_events`` counter counts a relisted object only when it is new or changed, and the
    question here is how many items crossed the wire.
    """

    def list(self, shard_selector: str, *, timeout: float) -> ObjectList:
        listed = super().list(shard_selector, timeout=timeout)
        owner = _owners.get(id(self._api_client))
        if owner is not None:
            owner[1].listed(owner[0], len(listed.items))
        return listed


#: The name the feeds build their client with, in :mod:`shardlease.runtime.objects`.
_CLIENT_NAME = "ObjectClient"


@contextlib.contextmanager
def counting_lists() -> Iterator[None]:
    """Have every feed created in this process count its lists (restored on exit)."""
    original = getattr(runtime_objects, _CLIENT_NAME)
    setattr(runtime_objects, _CLIENT_NAME, _CountingObjectClient)
    try:
        yield
    finally:
        setattr(runtime_objects, _CLIENT_NAME, original)


class PlainWatcher:
    """The old example's informer, reduced to its traffic: one unfiltered list+watch of the namespace's
    ConfigMaps, relisting after any error, counting what arrives."""

    def __init__(self, api_client: ApiClient, identity: str, tally: Tally) -> None:
        self.identity = identity
        self.tally = tally
        self.client = ObjectClient(api_client, resource_path("v1", "configmaps", NAMESPACE))
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"plain-watch-{identity}", daemon=True)

    def start(self) -> PlainWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.client.list("", timeout=60)
                self.tally.listed(self.identity, len(listed.items))
                self.synced.set()
                version = listed.resource_version
                for event in self.client.watch("", version, timeout_seconds=300, read_timeout=90):
                    if self._stop.is_set():
                        return
                    obj = event.get("object")
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                        self.tally.watched(self.identity, obj)
            except ApiError as exc:
                if not self._stop.is_set():
                    log.warning("plain watcher %s: %s; listing again", self.identity, exc)
                    self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self.client.close_watch()
        self._thread.join(5)
        self.client.close()


class Writer(Transport):
    """Creates and updates the bench's ConfigMaps with raw requests (the generated client's model
    classes would cost the writer more CPU than the replicas it is measuring)."""

    def __init__(self, api_client: ApiClient) -> None:
        super().__init__(api_client, pool_size=16)
        self.url = resource_path("v1", "configmaps", NAMESPACE)  # a path: the transport adds the server

    def create_namespace(self) -> None:
        try:
            self._send("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}, 30)
        except ConflictError:  # AlreadyExists: a rerun on the same server
            pass

    def create(self, name: str) -> dict[str, Any]:
        body = {"metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "object-events"}},
                "data": {"v": "0"}}
        return self._json(self._send("POST", self.url, body, 30))

    def update(self, name: str, value: str) -> dict[str, Any]:
        """An unconditional PUT (no resourceVersion): ConfigMaps allow it, so the writer never conflicts."""
        body = {"metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "object-events"}},
                "data": {"v": value}}
        return self._json(self._send("PUT", f"{self.url}/{name}", body, 30))


# --------------------------------------------------------------------------------------------------
# One server, one mode, one N
# --------------------------------------------------------------------------------------------------


@dataclass
class Update:
    uid: str
    rv: str
    shard: int
    holder: str


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "max": 0.0, "min": 0.0}
    return {"mean": sum(values) / len(values), "max": float(max(values)), "min": float(min(values))}


def _metric(m: ShardManager, name: str, labels: dict[str, str]) -> float:
    value = m.metrics.registry.get_sample_value(name, {"group": m.group, "identity": m.identity, **labels})
    return value or 0.0


def _received(m: ShardManager) -> float:
    return sum(_metric(m, "shardlease_object_events_total", {"resource": "configmaps", "outcome": o})
               for o in ("delivered", "filtered"))


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Run:
    """N replicas of one mode against one server: settle, churn, count."""

    def __init__(self, mode: str, replicas: int, args: argparse.Namespace, kubeconfig: str, writer: Writer,
                 names: list[str], rng: random.Random) -> None:
        self.mode = mode
        self.n = replicas
        self.args = args
        self.kubeconfig = kubeconfig
        self.writer = writer
        self.names = names
        self.rng = rng
        self.tally = Tally()
        self.group = f"objects-{mode}-{replicas}-{int(time.time() * 1000) % 1_000_000}"
        self.api_clients: list[ApiClient] = []
        self.managers: list[ShardManager] = []
        self.watchers: list[PlainWatcher] = []

    def _handler(self, identity: str) -> Callable[[Shard], None]:
        tally = self.tally
        if self.mode == "example":
            def idle(shard: Shard) -> None:
                shard.stopped.wait()
            return idle

        def handle(shard: Shard) -> None:
            for event in shard.objects("v1", "configmaps", namespace=NAMESPACE):
                tally.delivered(identity, event)
        return handle

    def start(self) -> None:
        for i in range(self.n):
            identity = f"r{i}"
            api = load_api_client(self.kubeconfig)
            self.api_clients.append(api)
            _owners[id(api)] = (identity, self.tally)
            config = ShardConfig(group=self.group, shards=self.args.shards, namespace="default", identity=identity,
                                 kubeconfig=self.kubeconfig, **TIMINGS)  # type: ignore[arg-type]
            self.managers.append(ShardManager(config, self._handler(identity), api_client=api))
            if self.mode == "example":
                self.watchers.append(PlainWatcher(api, identity, self.tally))
        for w in self.watchers:
            w.start()
        for m in self.managers:
            m.start()

    def stop(self) -> None:
        for m in self.managers:
            m.stop()
        for w in self.watchers:
            w.stop()
        for m in self.managers:
            if not m.wait(15):
                log.warning("%s did not stop within 15 s", m.identity)
        for api in self.api_clients:
            _owners.pop(id(api), None)
            with contextlib.suppress(Exception):
                api.close()

    def settled(self) -> bool:
        held: set[tuple[str, int]] = set()
        for m in self.managers:
            owned = m.owned_shards()
            if owned != m.desired_shards():
                return False
            held |= {(m.identity, s) for s in owned}
        if len({s for _, s in held}) != self.args.shards or len(held) != self.args.shards:
            return False
        if self.mode == "example":
            return all(w.synced.is_set() for w in self.watchers)
        with self.tally.lock:
            return held <= self.tally.synced

    def lists(self) -> dict[str, int]:
        return self.tally.copy_counts(self.tally.lists)

    def wait_settled(self) -> float:
        """Seconds from start until settled and no list for ``QUIET_S`` (re-targets are debounced)."""
        started = time.monotonic()
        if not _wait(self.settled, SETTLE_TIMEOUT):
            raise RuntimeError(f"{self.mode} N={self.n}: not settled after {SETTLE_TIMEOUT:.0f} s "
                               f"(owned: {[sorted(m.owned_shards()) for m in self.managers]})")
        settled_at = time.monotonic()
        last = self.lists()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S:
            time.sleep(0.1)
            now = self.lists()
            if now != last:
                last, quiet_since = now, time.monotonic()
            if time.monotonic() - started > SETTLE_TIMEOUT:
                raise RuntimeError(f"{self.mode} N={self.n}: still listing after {SETTLE_TIMEOUT:.0f} s")
        if not self.settled():
            raise RuntimeError(f"{self.mode} N={self.n}: shards moved while waiting for quiet")
        return settled_at - started

    def received(self) -> dict[str, float]:
        if self.mode == "example":
            counts = self.tally.copy_counts(self.tally.watch_items)
            return {w.identity: float(counts.get(w.identity, 0)) for w in self.watchers}
        return {m.identity: _received(m) for m in self.managers}

    def holders(self) -> dict[int, str]:
        return {s: m.identity for m in self.managers for s in m.owned_shards()}

    def churn(self) -> list[Update]:
        """``--churn`` unconditional updates per second for ``--duration`` seconds, on one thread."""
        rate, duration = self.args.churn, self.args.duration
        holders = self.holders()
        updates: list[Update] = []
        started = time.monotonic()
        due = started
        seq = 0
        while due - started < duration:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            seq += 1
            obj = self.writer.update(self.rng.choice(self.names), f"{self.group}-{seq}")
            shard = shard_for_object(obj, self.args.shards)
            uid, rv = _version(obj)
            updates.append(Update(uid, rv, shard, holders.get(shard, "?")))
            due += 1.0 / rate
        return updates

    def all_reached(self, updates: list[Update]) -> bool:
        with self.tally.lock:
            if self.mode == "example":
                return all(len(self.tally.reached.get((u.uid, u.rv), ())) >= self.n for u in updates)
            return all((u.uid, u.rv) in self.tally.reached for u in updates)

    def measure(self) -> dict[str, Any]:
        settle_s = self.wait_settled()
        initial_items = self.tally.copy_counts(self.tally.list_items)
        lists_before = self.lists()
        received_before = self.received()
        holders_before = self.holders()
        cpu_before, wall_before = _cpu_s(), time.monotonic()
        updates = self.churn()
        churn_s = time.monotonic() - wall_before
        def arrived() -> bool:
            if not self.all_reached(updates):
                return False
            if self.mode != "client":
                return True
            # Each replica also reads the others' updates; the last of those may still be on its way.
            now = self.received()
            return all(now[i] - received_before.get(i, 0.0) >= len(updates) for i in now)

        drained = _wait(arrived, DRAIN_TIMEOUT)
        cpu_s, window_s = _cpu_s() - cpu_before, time.monotonic() - wall_before
        received_after = self.received()
        lists_after = self.lists()
        stable = self.holders() == holders_before
        ids = [f"r{i}" for i in range(self.n)]
        received = {i: received_after[i] - received_before.get(i, 0.0) for i in ids}
        total = len(updates)
        share = {i: (received[i] / total if total else 0.0) for i in ids}
        expected = 1.0 / self.n if self.mode == "server" else 1.0
        result: dict[str, Any] = {
            "mode": self.mode, "replicas": self.n, "shards": self.args.shards, "group": self.group,
            "settle_s": round(settle_s, 3),
            "initial_list_items": {i: initial_items.get(i, 0) for i in ids},
            "initial_list_items_stats": _stats([float(initial_items.get(i, 0)) for i in ids]),
            "lists_before_churn": {i: lists_before.get(i, 0) for i in ids},
            "lists_in_window": sum(lists_after.get(i, 0) - lists_before.get(i, 0) for i in ids),
            "updates": total, "churn_s": round(churn_s, 3), "churn_per_s": round(total / churn_s, 2) if churn_s else 0,
            "window_s": round(window_s, 3), "drained": drained, "shards_stable_in_window": stable,
            "received": received, "received_stats": _stats(list(received.values())),
            "share_of_window_events": {i: round(v, 4) for i, v in share.items()},
            "share_stats": {k: round(v, 4) for k, v in _stats(list(share.values())).items()},
            "expected_share": round(expected, 4),
            "cpu_s_whole_process": round(cpu_s, 3),
        }
        if self.mode == "server":
            worst = max(share.values(), default=0.0)
            result["target"] = f"every replica's share within {TOLERANCE:.0%} of 1/N"
            result["target_met"] = all(abs(v / expected - 1) <= TOLERANCE for v in share.values())
            result["worst_share_over_expected"] = round(worst / expected, 3) if expected else None
        if self.mode != "example":
            result["delivery"] = self._delivery(updates)
            result["server_filtering"] = {m.identity: bool(_metric(m, "shardlease_object_server_filtering",
                                                                   {"resource": "configmaps"}))
                                          for m in self.managers}
        else:
            with self.tally.lock:
                everyone = sum(1 for u in updates if sorted(self.tally.reached.get((u.uid, u.rv), ())) == ids)
            result["delivery"] = {"checked": total, "to_every_replica_once": everyone}
        return result

    def _delivery(self, updates: list[Update]) -> dict[str, Any]:
        """Each update reached exactly one replica, once: the holder of the object's shard. Misses are
        also counted per holder and shard, since a stream that stopped delivering shows up as one."""
        out: dict[str, Any] = {"checked": len(updates), "to_holder_exactly_once": 0, "missed": 0, "repeated": 0,
                               "elsewhere": 0}
        missed_at: dict[str, int] = {}
        with self.tally.lock:
            for u in updates:
                got = self.tally.reached.get((u.uid, u.rv), [])
                if not got:
                    out["missed"] += 1
                    where = f"{u.holder}/shard {u.shard}"
                    missed_at[where] = missed_at.get(where, 0) + 1
                elif got == [u.holder]:
                    out["to_holder_exactly_once"] += 1
                elif any(i != u.holder for i in got):
                    out["elsewhere"] += 1
                else:
                    out["repeated"] += 1
        if missed_at:
            out["missed_at"] = missed_at
        return out


# --------------------------------------------------------------------------------------------------
# Servers and the whole run
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def api_server(kind: str, gate: bool, work_dir: Path, assets: Path | None) -> Iterator[LocalCluster]:
    """A fresh API server for one mode; the gate is fixed for a server's life, as on kube-apiserver."""
    where: dict[str, Any] = {"devserver": "real", "assets": assets} if kind == "real" else {"devserver": "process"}
    cluster = LocalCluster(work_dir=work_dir, faults=False, feature_gates={GATE: True} if gate else None,
                           cwd=str(REPO_ROOT), **where)
    cluster.start(0)
    try:
        yield cluster
    finally:
        cluster.stop(grace=5.0)


def create_objects(writer: Writer, count: int) -> tuple[list[str], float]:
    started = time.monotonic()
    writer.create_namespace()
    names = [f"cm-{i:05d}" for i in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(writer.create, names))
    return names, time.monotonic() - started


def run_mode(mode: str, args: argparse.Namespace, work: Path, rng: random.Random) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with api_server(args.server, mode == "server", work / mode, args.kube_assets) as cluster:
        kubeconfig = str(cluster.kubeconfig)
        api = load_api_client(kubeconfig)
        writer = Writer(api)
        try:
            names, create_s = create_objects(writer, args.objects)
            _say(f"[{mode}] {len(names)} ConfigMaps created in {create_s:.1f} s on {cluster.url}")
            for n in args.replicas:
                run = Run(mode, n, args, kubeconfig, writer, names, rng)
                try:
                    run.start()
                    result = run.measure()
                except Exception as exc:  # one failed cell must not lose the others
                    log.exception("%s N=%d failed", mode, n)
                    result = {"mode": mode, "replicas": n, "error": f"{type(exc).__name__}: {exc}"}
                finally:
                    run.stop()
                result["objects"] = len(names)
                result["create_s"] = round(create_s, 2)
                results.append(result)
                _say(_row(result))
        finally:
            writer.close()
            api.close()
    return results


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

HEADER = ("| mode | N | updates | received / replica: mean | max | share of window: mean | max | expected "
          "| initial list items / replica: mean | max | lists before / in window | delivery | CPU s (process) |")
RULE = "|" + "---|" * 13


def _delivery_text(r: dict[str, Any]) -> str:
    d = r.get("delivery") or {}
    if "to_holder_exactly_once" in d:
        bad = d["missed"] + d["repeated"] + d["elsewhere"]
        text = f"{d['to_holder_exactly_once']}/{d['checked']} to the holder once"
        where = ", ".join(f"{n} at {k}" for k, n in sorted(d.get("missed_at", {}).items()))
        return text + (f" ({d['missed']} missed{': ' + where if where else ''}, {d['repeated']} repeated, "
                       f"{d['elsewhere']} elsewhere)" if bad else "")
    if "to_every_replica_once" in d:
        return f"{d['to_every_replica_once']}/{d['checked']} to every replica"
    return "-"


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['mode']} | {r['replicas']} | error: {r['error']} |" + " |" * 10
    rs, ss, li = r["received_stats"], r["share_stats"], r["initial_list_items_stats"]
    return (f"| {r['mode']} | {r['replicas']} | {r['updates']} | {rs['mean']:.1f} | {rs['max']:.0f} "
            f"| {ss['mean']:.3f} | {ss['max']:.3f} | {r['expected_share']:.3f} | {li['mean']:.0f} | {li['max']:.0f} "
            f"| {sum(r['lists_before_churn'].values())} / {r['lists_in_window']} | {_delivery_text(r)} "
            f"| {r['cpu_s_whole_process']:.2f} |")


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        if r.get("mode") == "server":
            met = bool(r.get("target_met")) and (r.get("delivery") or {}).get("to_holder_exactly_once") == r.get(
                "updates")
            out.append({"replicas": r["replicas"], "met": met and "error" not in r,
                        "what": f"server mode N={r['replicas']}: each replica's share within {TOLERANCE:.0%} of 1/N "
                                f"and every update to its holder exactly once",
                        "worst_share_over_expected": r.get("worst_share_over_expected")})
    return out


def render_md(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    lines = [
        f"# Items received per replica for sharded object sync ({meta['server']['kind']} server)", "",
        f"Generated {meta['finished']} by `{meta['command']}` (git {meta['git']}, {meta['elapsed_s']:.0f} s). "
        f"Machine: {meta['machine']}. Server: {meta['server']['description']}.", "",
        "Reproduce:", "", "```", meta["command"], "```", "",
        f"{meta['objects']} ConfigMaps, {meta['shards']} shards, churn {meta['churn']} updates/s for "
        f"{meta['duration']} s per cell (seed {meta['seed']}). Timings: lease {TIMINGS['lease_duration']:g} s, "
        f"renew deadline {TIMINGS['renew_deadline']:g} s, retry {TIMINGS['retry_period']:g} s.", "",
        "- **received**: watch items (ADDED/MODIFIED/DELETED, no bookmarks) a replica got from the server in the "
        "churn window (replica metrics delivered + filtered; the plain watcher's own count for `example`).",
        "- **share of window**: received / updates made in the window; server-side filtering should give 1/N, "
        "the others 1.",
        "- **initial list items**: items in every list the replica made while the group settled (shards "
        "arriving one by one re-target the list, so a replica can list more than once).",
        "- **delivery**: `server`/`client`: updates that reached exactly one replica, the holder of the object's "
        "shard, exactly once; `example`: updates every replica received.",
        "- **CPU s (process)**: user + system CPU of the whole bench process over the window: all N replicas, "
        "the plain watchers and the churn writer share it; the API server runs in its own process(es).", "",
        HEADER, RULE,
    ]
    lines += [_row(r) for r in doc["results"]]
    lines += ["", "Targets:", ""]
    for t in doc["targets"]:
        lines.append(f"- {'met' if t['met'] else 'NOT met'}: {t['what']} (worst share / (1/N): "
                     f"{t['worst_share_over_expected']})")
    return "\n".join(lines) + "\n"


def write_docs() -> None:
    """Replace (or append) this bench's section of docs/benchmarks.md, between its markers, from the
    default result files of both servers (whichever exist), so one server's run keeps the other's."""
    parts = []
    for path in (Path(f"{stem}.md") for stem in DEFAULT_OUT.values()):
        if path.exists():
            parts.append("##" + path.read_text().rstrip("\n") + "\n")  # its "# " title becomes a "### "
    body = "\n".join(parts)
    section = (f"{DOCS_BEGIN}\n## Sharded object sync: items received per replica (`bench/object_events.py`)\n\n"
               f"{body}{DOCS_END}\n")
    text = DOCS_PATH.read_text() if DOCS_PATH.exists() else ""
    if DOCS_BEGIN in text and DOCS_END in text:
        head, rest = text.split(DOCS_BEGIN, 1)
        tail = rest.split(DOCS_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS_PATH.write_text(text)


def _git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except OSError:
        return "?"


def _machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _positive(flag: str, kind: Callable[[str], Num], what: str) -> Callable[[str], Num]:
    """An argparse type for a flag that must be a number above zero, naming the flag when it is not."""
    def parse(text: str) -> Num:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{flag} must be greater than 0, got {text!r}")
        return value
    return parse


def _replica_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--replicas must be comma-separated whole numbers like 1,2,4,8, "
                                         f"got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--replicas needs at least one count, each >= 1, got {text!r}")
    return values


def _mode_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in MODES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"--modes takes a comma-separated subset of {','.join(MODES)}, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("dev", "real"), default="dev",
                        help="dev: the dev-server in its own process; real: etcd + kube-apiserver")
    parser.add_argument("--kube-assets", type=Path, default=None, metavar="DIR",
                        help="with --server real: the kube-apiserver/etcd binaries (default: $KUBEBUILDER_ASSETS, "
                             "then the cache of scripts/build-kube-assets)")
    parser.add_argument("--objects", type=_positive("--objects", int, "a whole number"), default=2000)
    parser.add_argument("--replicas", type=_replica_list, default=[1, 2, 4, 8], help="e.g. 1,2,4,8")
    parser.add_argument("--modes", type=_mode_list, default=list(MODES), help="subset of server,client,example")
    parser.add_argument("--churn", type=_positive("--churn", float, "a number"), default=50.0, help="updates per second")
    parser.add_argument("--duration", type=_positive("--duration", float, "a number"), default=20.0,
                        help="churn seconds per cell")
    parser.add_argument("--shards", type=_positive("--shards", int, "a whole number"), default=32)
    parser.add_argument("--seed", type=int, default=None, help="random seed of the churn (printed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output stem: writes OUT.json and OUT.md (default: bench/results/object_events, "
                             "with --server real bench/results/object_events_real)")
    parser.add_argument("--docs", choices=("auto", "yes", "no"), default="auto",
                        help="update this bench's section of docs/benchmarks.md (auto: when --out is the default)")
    parser.set_defaults(default_out=False)
    args = parser.parse_args(argv)
    if args.server == "real":
        from shardlease.controlplane import find_assets

        found = find_assets(args.kube_assets)
        if found is None:
            parser.error("--server real: no kube-apiserver/etcd binaries found; build them with "
                         "`scripts/build-kube-assets DIR` and pass --kube-assets DIR (or set KUBEBUILDER_ASSETS)")
        args.kube_assets = found
    elif args.kube_assets is not None:
        parser.error("--kube-assets is for --server real (the kube-apiserver and etcd binaries)")
    if args.out is None:
        args.out, args.default_out = DEFAULT_OUT[args.server], True
    if max(args.replicas) > args.shards:
        parser.error(f"--replicas {max(args.replicas)} exceeds --shards {args.shards}: a replica without a shard "
                     f"receives nothing; use at most {args.shards} replicas or more shards")
    return args


def _command(argv: Sequence[str]) -> str:
    return "python bench/object_events.py" + ("" if not argv else " " + shlex.join(argv))


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    command = _command(raw)
    _say(f"reproduce: {command}   (seed {seed}; add --seed {seed} to repeat the churn)")
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-object-events-") as tmp, counting_lists():
        for mode in args.modes:
            results += run_mode(mode, args, Path(tmp), rng)
    server = ({"kind": "real", "description": f"etcd + kube-apiserver from {args.kube_assets}, one per mode"}
              if args.server == "real" else
              {"kind": "dev", "description": "python -m shardlease dev-server (own process), one per mode"})
    doc: dict[str, Any] = {
        "meta": {"command": command, "seed": seed, "server": server, "objects": args.objects, "shards": args.shards,
                 "churn": args.churn, "duration": args.duration, "replicas": args.replicas, "modes": args.modes,
                 "timings": TIMINGS, "git": _git(), "machine": _machine(),
                 "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "elapsed_s": round(time.monotonic() - started, 1),
                 "cpu_note": "cpu_s_whole_process: getrusage(RUSAGE_SELF) of the bench process over the window; "
                             "all replicas, plain watchers and the churn writer share it"},
        "results": results,
    }
    doc["targets"] = targets(results)
    markdown = render_md(doc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = Path(f"{args.out}.json"), Path(f"{args.out}.md")
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    md_path.write_text(markdown)
    if args.docs == "yes" or (args.docs == "auto" and args.default_out):
        write_docs()
    _say("")
    _say(markdown)
    _say(f"wrote {json_path} and {md_path}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
