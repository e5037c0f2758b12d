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
import time
from collections.abc import Callable
from typing import Any, TypeVar

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

    def unworked_seconds_until(self, done: Callable[[], object], timeout: float) -> tuple[float, float]:
        """Sample the status (about once a second: each read is a process start) until ``done()`` is
        true: ``(elapsed seconds, shard-seconds without a working holder)``. A shard counts as without
        one while it is unowned or, during a switch to a new count, waiting for the old generation's
        handlers to stop (held, but no handler of the new generation runs it yet)."""
        began = last = time.monotonic()
        gap = 0.0
        while time.monotonic() - began < timeout:
            try:
                view = self.status()
                idle = set(view["summary"]["unowned"]) | set(view.get("switch_pending") or ())
            except AssertionError:  # no status this instant: count nothing rather than guess
                idle = set()
            now = time.monotonic()
            gap += len(idle) * (now - last)
            last = now
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
