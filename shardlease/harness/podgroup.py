"""Watching a shardlease Deployment on a real cluster the way its users do: kubectl and ``shardlease status``.

Shared by the e2e tier (``tests/e2e``) and the node benchmark (``bench/node.py``), so what is asserted
and what is measured are judged the same way. Everything goes through the user-facing tools: ``kubectl``
with a kubeconfig, and ``shardlease status --output json`` for who holds which shard::

    group = PodGroup(kubeconfig, namespace="shardlease-example", deployment="example-shardlease",
                     group="configmaps", shards=32)
    group.kubectl("scale", "deployment/example-shardlease", "--replicas", "6")
    group.wait("6 pods balanced", lambda: group.balanced(6), timeout=60)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from shardlease.core.records import LABEL_SHARD, shard_selector

T = TypeVar("T")
#: The pod label deploy/base puts on every replica.
POD_SELECTOR = "app.kubernetes.io/name=shardlease"


class PodGroup:
    """One Deployment of shardlease replicas in one namespace, and its shard group."""

    def __init__(self, kubeconfig: str, *, namespace: str, deployment: str, group: str, shards: int) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.deployment = deployment
        self.group = group
        self.shards = shards
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        #: Why the last :meth:`balanced` could not read the status (for failure messages).
        self.last_error = ""

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0, namespaced: bool = True,
                input: str | None = None) -> str:
        """Run kubectl (in the group's namespace unless ``namespaced=False``, with ``input`` on its stdin);
        its stdout. A non-zero exit raises ``AssertionError`` with its output when ``check``."""
        argv = ["kubectl", *(["-n", self.namespace] if namespaced else []), *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return proc.stdout

    def json(self, *args: str, namespaced: bool = True) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", namespaced=namespaced))

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("get", "pods", "-l", POD_SELECTOR)["items"]
        return items

    def ready_pods(self) -> set[str]:
        """Names of the pods that are Ready and not being deleted."""
        names = set()
        for pod in self.pods():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conditions.get("Ready") == "True":
                names.add(pod["metadata"]["name"])
        return names

    def terminating_pods(self) -> set[str]:
        return {p["metadata"]["name"] for p in self.pods() if p["metadata"].get("deletionTimestamp")}

    def status(self) -> dict[str, Any]:
        """``shardlease status --output json`` for the group."""
        proc = subprocess.run([sys.executable, "-m", "shardlease", "status", "--group", self.group,
                               "--namespace", self.namespace, "--kubeconfig", self.kubeconfig, "--output", "json"],
                              capture_output=True, text=True, timeout=60)
        if not proc.stdout:
            raise AssertionError(f"shardlease status printed nothing: {proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def holders(self) -> dict[int, str | None]:
        """Shard -> holder identity (the pod name), ``None`` if unowned."""
        return {row["shard"]: row["holder"] for row in self.status()["shard_table"]}

    def balanced(self, count: int) -> dict[str, Any] | None:
        """The status when ``count`` Ready pods are exactly the live members and hold every shard of the
        group's count (``shards``) where the assignment puts it (nothing unowned, expired or misplaced, no
        switch to a new count still waiting for old handlers); else ``None``."""
        try:
            view = self.status()
        except AssertionError as exc:  # e.g. no Lease of the group yet, right after `kubectl apply`
            self.last_error = str(exc)
            return None
        live = {m["identity"] for m in view["members"] if m["live"]}
        summary = view["summary"]
        ready = self.ready_pods()
        ok = (len(ready) == count and live == ready and view["shards"] == self.shards
              and summary["owned"] == self.shards and not summary["unowned"] and not summary["expired"]
              and not summary["misplaced"] and not view.get("switch_pending"))
        return view if ok else None

    def unworked_seconds_until(self, done: Callable[[], object], timeout: float,
                               on_sample: Callable[[set[int]], None] | None = None) -> tuple[float, float]:
        """Sample the status (about once a second: each read is a process start) until ``done()`` is
        true: ``(elapsed seconds, shard-seconds without a working holder)``. A shard counts as without
        one while it is unowned, its Lease expired (the holder stopped renewing), or, during a switch
        to a new count, it waits for the old generation's handlers to stop (held, but no handler of
        the new generation runs it yet). ``on_sample(idle shards)`` sees every sample.

        Only the time between two consecutive samples that both found a shard idle is counted: a lower
        bound. A shard seen idle in one sample only was idle for anything between a few milliseconds (a
        release the next holder took at once, as in every handoff) and the whole interval, which is
        several seconds here; counting the interval would report a routine handoff as seconds of
        outage. :class:`LeaseWatch` gives the unowned time exactly."""
        began = last = time.monotonic()
        previous: set[int] = set()
        gap = 0.0
        while time.monotonic() - began < timeout:
            try:
                view = self.status()
                summary = view["summary"]
                idle = set(summary["unowned"]) | set(summary["expired"]) | set(view.get("switch_pending") or ())
            except AssertionError:  # no status this instant: count nothing rather than guess
                idle = set()
            if on_sample is not None:
                on_sample(idle)
            now = time.monotonic()
            gap += len(idle & previous) * (now - last)
            last, previous = now, idle
            if done():
                return now - began, gap
        raise AssertionError(f"not done within {timeout:g} s ({gap:.1f} shard-seconds without a holder so far)")

    @staticmethod
    def wait(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
        """Poll ``probe`` until it returns something true; ``AssertionError`` with the last value after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


class LeaseWatch:
    """Every change of the group's shard Leases as ``kubectl get leases --watch`` delivers it, stamped
    with this process's monotonic clock: who held each shard when, to the watch's latency (tens of
    milliseconds) rather than the second of a ``shardlease status`` poll. A shard released by a
    leaving pod and taken by another a few milliseconds later is unowned for those milliseconds; a
    poll that happens to land in between cannot tell that from a gap of a whole poll interval.

    Use as a context manager around the operation; :meth:`unowned_seconds` sums, per shard, the time
    its Lease named no holder."""

    def __init__(self, group: PodGroup) -> None:
        self._argv = ["kubectl", "-n", group.namespace, "get", "leases", "-l", shard_selector(group.group),
                      "--watch", "--output-watch-events", "-o", "json"]
        self._env = group.env
        #: (monotonic time, shard, holder or None), in arrival order; the initial list comes first.
        self.changes: list[tuple[float, int, str | None]] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._read, name="lease-watch", daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._proc = subprocess.Popen(self._argv, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._thread.join(timeout=10)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        fd = self._proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            at = time.monotonic()
            buffer += chunk.decode()
            while True:
                buffer = buffer.lstrip()
                try:
                    event, end = decoder.raw_decode(buffer)
                except ValueError:  # an event split across reads: wait for the rest
                    break
                buffer = buffer[end:]
                lease = event.get("object") or {}
                shard = (lease.get("metadata", {}).get("labels") or {}).get(LABEL_SHARD)
                if shard is None:
                    continue
                holder = None if event.get("type") == "DELETED" else (lease.get("spec") or {}).get("holderIdentity")
                self.changes.append((at, int(shard), holder or None))

    def wait_started(self, timeout: float = 30.0) -> None:
        """Until the initial list has arrived (the first event), so nothing before the operation is missed."""
        PodGroup.wait("the Lease watch's first events", lambda: bool(self.changes), timeout, every=0.1)

    def handoff_time(self, group: PodGroup, since: float, staying: set[str], timeout: float) -> float:
        """Wait until ``shardlease status`` shows every shard held by one of ``staying``, then return the
        moment (monotonic, at or after ``since``) the watch first showed it: the status read says that the
        handoff happened, the watch says when, to its latency rather than a poll's second."""

        def handed_off(holders: dict[int, str | None]) -> bool:
            return all(holder in staying for holder in holders.values())

        group.wait("every shard held by the staying pods", lambda: handed_off(group.holders()), timeout)
        return group.wait("the Lease watch to show the handoff", lambda: self.first_time(since, handed_off), 10)

    def first_time(self, start: float, done: Callable[[dict[int, str | None]], bool]) -> float | None:
        """The first moment at or after ``start`` (monotonic) when the shard holders, replayed from the
        watch, satisfy ``done(shard -> holder)``; ``None`` if they have not yet."""
        holders: dict[int, str | None] = {}
        changes = list(self.changes)
        for index, (at, shard, holder) in enumerate(changes):
            holders[shard] = holder
            last_at_this_instant = index + 1 == len(changes) or changes[index + 1][0] != at
            if at >= start and last_at_this_instant and done(holders):
                return at
            if at < start and last_at_this_instant and (index + 1 == len(changes) or changes[index + 1][0] >= start) \
                    and done(holders):
                return start
        return None

    def unowned_seconds(self, start: float, end: float) -> dict[int, float]:
        """Per shard, the seconds within [start, end] (monotonic) during which its Lease named no holder
        (released, or deleted); only shards with some such time are listed."""
        idle: dict[int, float] = {}
        state: dict[int, tuple[float, str | None]] = {}
        for at, shard, holder in [*self.changes, *((end, s, "") for s in {c[1] for c in self.changes})]:
            if shard in state:
                since, was = state[shard]
                lo, hi = max(since, start), min(at, end)
                if was is None and hi > lo:
                    idle[shard] = idle.get(shard, 0.0) + hi - lo
            state[shard] = (at, holder)
        return idle
