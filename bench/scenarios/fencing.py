"""``bench/run.py fencing``: what fencing the API server enforces costs, on a fresh real etcd +
kube-apiserver (docs/fencing.md).

For each shard count S (64, 256, 1,024; quick: 8, 16) one group of S shard Leases and
``install_fencing(..., shards=S)``, then:

* latency of a ConfigMap create, in alternating pairs so the machine's noise hits both alike: without
  any policy (measured once, before the first install), unfenced with the policies installed (every
  binding's selector is still matched against the object), and fenced (stamped, one rule evaluation
  against one Lease). Client-side wall time over a persistent connection, median and p90;
* kube-apiserver CPU per write (utime + stime of its process from /proc over a batch), fenced vs unfenced;
* the window after a takeover: the shard Lease is taken over (PUT with leaseTransitions + 1), then a
  writer with the old fence writes in a tight loop; the window is the time from the takeover's reply
  to the first refusal (the API server's informer for the Lease catching up). Repeated, median and max.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Log = Callable[[str], None]
FULL_COUNTS = (64, 256, 1024)
QUICK_COUNTS = (8, 16)
NS = "default"
EPOCH = 1_790_000_000_000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 2), "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
            "n": len(ordered)}


class _Bench:
    def __init__(self, kubeconfig: str, pid: int, log: Log) -> None:
        import kubernetes
        from kubernetes.client import CoordinationV1Api, CoreV1Api

        self.api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.core = CoreV1Api(self.api)
        self.leases = CoordinationV1Api(self.api)
        self.pid = pid
        self.log = log
        self.seq = 0
        self.last_error = ""

    def lease_body(self, group: str, shard: int, transitions: int) -> dict[str, Any]:
        from shardlease.core.records import ANNOTATION_EPOCH, ANNOTATION_GENERATION, shard_labels

        return {"metadata": {"name": f"{group}-shard-{shard}", "labels": shard_labels(group, shard),
                             "annotations": {ANNOTATION_GENERATION: "1", ANNOTATION_EPOCH: str(EPOCH)}},
                "spec": {"holderIdentity": f"h{transitions}", "leaseTransitions": transitions}}

    def create(self, body: dict[str, Any]) -> tuple[float, int]:
        """Wall milliseconds and HTTP status of one ConfigMap create."""
        self.seq += 1
        body = {**body, "metadata": {**body.get("metadata", {}), "name": f"bench-{self.seq}"}}
        t0 = time.perf_counter()
        try:
            self.core.create_namespaced_config_map(NS, body, _preload_content=False)
            status = 201
        except Exception as exc:  # an ApiException: the policy refused it
            status = int(getattr(exc, "status", 0) or 0)
            self.last_error = str(getattr(exc, "body", exc))
        return (time.perf_counter() - t0) * 1000, status

    def stamped(self, group: str, shard: int, transitions: int) -> dict[str, Any]:
        from shardlease import Shard

        return Shard(shard, 1, (EPOCH << 20) + transitions, group=group).stamp({"metadata": {}, "data": {"k": "v"}})

    def wait_enforced(self, group: str, count: int, transitions: int, timeout: float = 120) -> float:
        """Wait until the policies are in force for every shard: a stale write refused as stale, and a
        current one accepted (right after an install, a new policy's Lease informer is not synced yet
        and every fenced write is refused with "no params found"). Returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        pending = list(range(count))
        while pending:
            shard = pending[0]
            if self.create(self.stamped(group, shard, transitions))[1] == 201:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"fenced writes to shard {shard} still refused: {self.last_error}")
            time.sleep(0.1)
        while not (self.create(self.stamped(group, 0, transitions - 1))[1] != 201
                   and "stale shard fence" in self.last_error):
            if time.monotonic() > deadline:
                raise RuntimeError("stale writes are not refused")
            time.sleep(0.1)
        return time.monotonic() - t0

    def pairs(self, bodies: dict[str, Callable[[], dict[str, Any]]], n: int) -> dict[str, dict[str, float]]:
        lat: dict[str, list[float]] = {k: [] for k in bodies}
        for _ in range(n):
            for kind, make in bodies.items():
                ms, status = self.create(make())
                if status != 201:
                    raise RuntimeError(f"{kind} write refused ({status}): {self.last_error}")
                lat[kind].append(ms)
        return {k: _stats(v) for k, v in lat.items()}

    def cpu(self, make: Callable[[], dict[str, Any]], n: int) -> float:
        """kube-apiserver CPU milliseconds per write over ``n`` writes."""
        before = _cpu_seconds(self.pid)
        for _ in range(n):
            self.create(make())
        return round((_cpu_seconds(self.pid) - before) * 1000 / n, 3)

    def window(self, group: str, rounds: int) -> dict[str, Any]:
        """Takeover -> first refusal of the old fence, ``rounds`` times on shard 0."""
        windows, accepted_after = [], []
        transitions = 3
        for _ in range(rounds):
            current = self.leases.read_namespaced_lease(f"{group}-shard-0", NS)
            body = self.lease_body(group, 0, transitions + 1)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            self.leases.replace_namespaced_lease(f"{group}-shard-0", NS, body)
            taken = time.perf_counter()
            stale = self.stamped(group, 0, transitions)
            passed = 0
            while True:
                _, status = self.create(stale)
                if status != 201:
                    break
                passed += 1
            windows.append((time.perf_counter() - taken) * 1000)
            accepted_after.append(passed)
            transitions += 1
            time.sleep(0.2)
        return {"window_ms": _stats(windows), "max_ms": round(max(windows), 2),
                "stale_writes_accepted_after_takeover": {"total": sum(accepted_after), "max": max(accepted_after),
                                                         "rounds": rounds}}


def run(quick: bool, assets: Path, work_dir: Path, log: Log) -> dict[str, Any]:
    from shardlease.client.fencing import install, uninstall
    from shardlease.controlplane import RealControlPlane
    from shardlease.core.fencing import target

    counts = QUICK_COUNTS if quick else FULL_COUNTS
    n = 30 if quick else 200
    rounds = 5 if quick else 20
    plane = RealControlPlane(assets, work_dir=work_dir / "fencing-plane").start()
    results: dict[str, Any] = {"server": plane.version, "counts": {}}
    try:
        kubeconfig = plane.write_kubeconfig(work_dir / "fencing.kubeconfig")
        pid = plane.apiserver_pid
        assert pid is not None
        b = _Bench(str(kubeconfig), pid, log)
        plain = lambda: {"metadata": {}, "data": {"k": "v"}}  # noqa: E731
        b.pairs({"warmup": plain}, 20)
        results["no_policy"] = {"latency": b.pairs({"unfenced": plain}, n)["unfenced"], "cpu_ms": b.cpu(plain, n)}
        for count in counts:
            group = f"bench{count}"
            log(f"fencing: {count} shard Leases and bindings, load {os.getloadavg()[0]:.2f}")
            for shard in range(count):
                b.leases.create_namespaced_lease(NS, b.lease_body(group, shard, 3))
            t = target(group, NS, "v1/configmaps")
            t0 = time.monotonic()
            install(b.api, t, count)
            installed_s = time.monotonic() - t0
            ready_s = b.wait_enforced(group, count, 3)
            shard_of = iter(range(10**9))

            def fenced(group: str = group, count: int = count, shard_of: Any = shard_of) -> dict[str, Any]:
                return b.stamped(group, next(shard_of) % count, 3)

            latency = b.pairs({"unfenced": plain, "fenced": fenced}, n)
            cpu = {"unfenced": b.cpu(plain, n), "fenced": b.cpu(fenced, n)}
            row = {"latency": latency, "cpu_ms": cpu, "install_s": round(installed_s, 1), "in_force_after_s": round(ready_s, 1),
                   "added_median_ms": round(latency["fenced"]["median_ms"] - latency["unfenced"]["median_ms"], 2),
                   "added_cpu_ms": round(cpu["fenced"] - cpu["unfenced"], 3), "load1": round(os.getloadavg()[0], 2)}
            row.update(b.window(group, rounds))
            results["counts"][str(count)] = row
            log(f"fencing S={count}: {json.dumps(row)}")
            uninstall(b.api, t)
            # The stale writes of the window test carry old fences: deleting them is refused until the
            # policies' removal has reached the admission chain.
            deadline = time.monotonic() + 60
            while True:
                try:
                    b.core.delete_collection_namespaced_config_map(NS)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        b.api.close()
    finally:
        plane.stop()
    return results


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# Fencing the API server enforces: cost and window", "",
             f"`{meta['command']}` at {meta['generated']} (git {meta['git']}), {results['server']}, "
             f"load average {meta['load_avg']['start']} -> {meta['load_avg']['end']} on {meta['cpus']} CPUs. "
             "Latency: client wall time of a ConfigMap create, fenced and unfenced writes alternating; CPU: "
             "kube-apiserver utime+stime per write over a batch; window: takeover reply -> first refusal of the "
             "old fence; in force: from the end of the install until a current fence was accepted on every shard, probed one "
             "shard after another (so it includes one write per shard).", "",
             f"Without any policy: median {results['no_policy']['latency']['median_ms']} ms, "
             f"{results['no_policy']['cpu_ms']} ms CPU per write.", "",
             "| shards | unfenced median / p90 ms | fenced median / p90 ms | added median ms | CPU ms/write "
             "unfenced / fenced | window median / max ms | stale writes accepted after takeover (total / max "
             "per round) | install s | in force after s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for count, row in results["counts"].items():
        u, f = row["latency"]["unfenced"], row["latency"]["fenced"]
        stale = row["stale_writes_accepted_after_takeover"]
        lines.append(f"| {count} | {u['median_ms']} / {u['p90_ms']} | {f['median_ms']} / {f['p90_ms']} | "
                     f"{row['added_median_ms']} | {row['cpu_ms']['unfenced']} / {row['cpu_ms']['fenced']} | "
                     f"{row['window_ms']['median_ms']} / {row['max_ms']} | {stale['total']} / {stale['max']} "
                     f"of {stale['rounds']} rounds | {row['install_s']} | {row['in_force_after_s']} |")
    return "\n".join(lines) + "\n"
