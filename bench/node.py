"""Benchmark: Deployment operations on shardlease pods, on the local one-node Kubernetes.

What users do to the example Deployment (deploy/overlays/example: 32 shards, lease 15 s, renew
deadline 10 s, drain timeout 30 s), timed with kubectl and ``shardlease status`` the way an operator
would watch it (:class:`shardlease.harness.podgroup.PodGroup`; each status read is a process start, so
figures carry about 1 s of resolution):

* ``apply``: ``kubectl apply -k`` until 4 pods are Ready and hold all 32 shards as planned;
* ``scale_up``: ``kubectl scale --replicas 6`` until the 6 are balanced (includes pod start);
* ``scale_down``: ``--replicas 4``: from the pods' deletion until the stayers hold every shard
  (``handoff``), and until the leaving pods are gone;
* ``force_delete``: ``kubectl delete pod --force --grace-period=0`` until others hold its shards;
* ``rollout_restart``: ``kubectl rollout restart`` until balanced on the new pods, and the
  shard-seconds without a holder seen during it (status sampled about once a second);
* ``resources``: per pod, CPU seconds and peak memory from the pods' cgroups (v1 ``cpuacct.usage``,
  ``memory.max_usage_in_bytes``) over the whole run, next to the Deployment's requests and limits.

Usage (root; the binaries and images from scripts/build-*)::

    python bench/node.py [--out bench/results/node] [--rounds 3]

Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shardlease.controlplane import find_assets  # noqa: E402
from shardlease.controlplane.node import CGROUP_ROOT, LocalNode, find_node_assets  # noqa: E402
from shardlease.harness.podgroup import PodGroup  # noqa: E402

NAMESPACE, DEPLOYMENT, GROUP, SHARDS = "shardlease-example", "example-shardlease", "configmaps", 32


def unowned_seconds_during(g: PodGroup, done: Any, timeout: float) -> tuple[float, float]:
    """Sample the status until ``done()`` is true: (elapsed, shard-seconds without a holder)."""
    began = last = time.monotonic()
    gap = 0.0
    while time.monotonic() - began < timeout:
        unowned = len(g.status()["summary"]["unowned"])
        now = time.monotonic()
        gap += unowned * (now - last)
        last = now
        if done():
            return now - began, gap
    raise AssertionError("rollout did not finish")


def pod_resources() -> dict[str, dict[str, float]]:
    """CPU seconds and peak memory (MiB) per pod cgroup under the node's kubepods."""
    out: dict[str, dict[str, float]] = {}
    for memory in Path("/sys/fs/cgroup/memory", CGROUP_ROOT).rglob("pod*/memory.max_usage_in_bytes"):
        pod = memory.parent.name
        cpu = Path(str(memory.parent).replace("/memory/", "/cpuacct/")) / "cpuacct.usage"
        out[pod] = {"peak_memory_mib": int(memory.read_text()) / 2**20,
                    "cpu_seconds": int(cpu.read_text()) / 1e9 if cpu.exists() else float("nan")}
    return out


def one_round(g: PodGroup, note: Any) -> None:
    """Scale up and down, force-delete a pod, restart the rollout; each timed."""
    began = time.monotonic()
    g.kubectl("scale", f"deployment/{DEPLOYMENT}", "--replicas", "6")
    g.wait("scale up", lambda: g.balanced(6), 120)
    note("scale_up_to_balanced_s", time.monotonic() - began)
    before = g.ready_pods()
    g.kubectl("scale", f"deployment/{DEPLOYMENT}", "--replicas", "4")
    leaving = g.wait("terminating", lambda: g.terminating_pods() or None, 30)
    began = time.monotonic()
    staying = before - leaving
    g.wait("handoff", lambda: all(h in staying for h in g.holders().values()), 60)
    note("scale_down_handoff_s", time.monotonic() - began)
    g.wait("gone", lambda: not ({p["metadata"]["name"] for p in g.pods()} & leaving), 90)
    note("scale_down_pods_gone_s", time.monotonic() - began)
    g.wait("balanced", lambda: g.balanced(4), 60)

    victim = sorted(g.ready_pods())[0]
    theirs = {s for s, h in g.holders().items() if h == victim}
    began = time.monotonic()
    g.kubectl("delete", "pod", victim, "--force", "--grace-period=0")
    g.wait("failover", lambda: all(h not in (None, victim) for s, h in g.holders().items() if s in theirs), 60)
    note("force_delete_failover_s", time.monotonic() - began)
    g.wait("balanced", lambda: g.balanced(4), 120)

    g.kubectl("rollout", "restart", f"deployment/{DEPLOYMENT}")
    took, gap = unowned_seconds_during(g, lambda: g.balanced(4) is not None and
                                       "successfully rolled out" in g.kubectl(
                                           "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=1s",
                                           check=False), 600)
    note("rollout_restart_s", took)
    note("rollout_restart_unowned_shard_s", gap)


def run(rounds: int) -> dict[str, Any]:
    image = subprocess.run([str(REPO / "scripts/build-images")], capture_output=True, text=True,
                           check=True).stdout.split()[-1]
    kube, node_assets = find_assets(), find_node_assets()
    assert kube and node_assets, "build the assets first (scripts/build-kube-assets, scripts/build-node-assets)"
    figures: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        figures.setdefault(name, []).append(round(value, 2))
        print(f"{name}: {value:.2f}", flush=True)

    with LocalNode(kube, node_assets, [image], work_dir=tempfile.mkdtemp(prefix="bench-node-")) as node:
        note("node_start_s", node.ready_seconds or 0.0)
        g = PodGroup(node.kubeconfig, namespace=NAMESPACE, deployment=DEPLOYMENT, group=GROUP, shards=SHARDS)
        began = time.monotonic()
        g.kubectl("apply", "-k", str(REPO / "deploy/overlays/example"), namespaced=False)
        g.wait("apply", lambda: g.balanced(4), 300)
        note("apply_to_balanced_s", time.monotonic() - began)
        for _ in range(rounds):
            one_round(g, note)
        resources = pod_resources()
        container = g.json("get", "deployment", DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]
    return {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
        "rounds": rounds,
        "figures": {k: {"values": v, "median": statistics.median(v), "max": max(v)} for k, v in figures.items()},
        "resources": {"requests": container["resources"]["requests"], "limits": container["resources"]["limits"],
                      "pods": resources},
    }


def render(result: dict[str, Any]) -> str:
    lines = ["# shardlease pods on the local node (bench/node.py)", "",
             f"{result['machine']['cpus']} CPUs, kernel {result['machine']['kernel']}; example overlay "
             f"(32 shards, lease 15 s); {result['rounds']} rounds. Times from the kubectl command (scale down, "
             "from the pods' deletion), read with `shardlease status` (about 1 s resolution).", "",
             "| figure | median | max | values |", "|---|---|---|---|"]
    for name, f in result["figures"].items():
        lines.append(f"| {name} | {f['median']:.1f} | {f['max']:.1f} | {', '.join(str(v) for v in f['values'])} |")
    res = result["resources"]
    lines += ["", f"Per pod (requests {res['requests']}, limits {res['limits']}), whole run:", "",
              "| pod cgroup | CPU s | peak memory MiB |", "|---|---|---|"]
    for pod, r in sorted(res["pods"].items()):
        lines.append(f"| {pod[:20]} | {r['cpu_seconds']:.1f} | {r['peak_memory_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/node")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = run(args.rounds)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
