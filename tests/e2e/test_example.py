"""deploy/overlays/example as users run it: `kubectl apply -k`, scale, kill pods, on a real node.

One Deployment for the module, in the order a user meets things: apply the overlay exactly as
shipped (the image it names is the one scripts/build-images imported), then the same overlay with the
ConfigMap controller's journal switched on (a hostPath directory, so the records of pods that are gone
stay readable; that apply is itself a rolling update), then scale up and down, force-delete a pod,
kill a container's main process. The last test reads every journal: no two pods ever wrote for the
same shard at the same time, and fencing tokens on each ConfigMap only grew.

Timings are the Deployment's own (lease 15 s, renew deadline 10 s, drain timeout 30 s, grace 45 s):
the bounds below come from them, with slack for this 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardlease.controlplane.node import LocalNode
from shardlease.harness.podgroup import PodGroup
from tests.examples.test_examples import find_overlaps, load_attempts, token_regressions

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "shardlease-example"
DEPLOYMENT = "example-shardlease"
GROUP = "configmaps"
SHARDS = 32
CONFIGMAPS = 48
LEASE_DURATION = 15.0
#: How long a scale-down handoff may take, from the pods' deletion to the stayers holding their shards:
#: the kubelet's SIGTERM, the handlers' return, the release, the watch, the acquire (well under a
#: lease, which is what a replica that died without releasing would cost).
HANDOFF_BOUND = 10.0


def configmaps_reconciled(g: PodGroup, by: set[str]) -> bool:
    items = g.json("get", "configmaps", "-l", "e2e=shardlease")["items"]
    stamped = [(cm["metadata"].get("annotations") or {}).get("shardlease.io/reconciled-by") for cm in items]
    return len(items) == CONFIGMAPS and all(s in by for s in stamped)


@pytest.fixture(scope="module")
def g(local_node: LocalNode) -> Iterator[PodGroup]:
    group = PodGroup(local_node.kubeconfig, namespace=NAMESPACE, deployment=DEPLOYMENT, group=GROUP, shards=SHARDS)
    yield group
    group.kubectl("delete", "-k", str(REPO / "deploy/overlays/example"), "--wait=false", check=False,
                  namespaced=False)


@pytest.fixture(scope="module")
def journal_dir(local_node: LocalNode) -> Path:
    path = local_node.work_dir / "journal"
    path.mkdir(exist_ok=True)
    path.chmod(0o1777)  # the pods run as 10001
    return path


def journal_overlay(tmp: Path, journal: Path) -> Path:
    """The example overlay plus the controller's journal on a hostPath: a test-only overlay on top."""
    overlay = tmp / "journaled"
    overlay.mkdir(exist_ok=True)
    (overlay / "kustomization.yaml").write_text(f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {os.path.relpath(REPO / 'deploy/overlays/example', overlay)}
patches:
  - target: {{kind: Deployment, name: {DEPLOYMENT}}}
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: {DEPLOYMENT}}}
      spec:
        template:
          spec:
            containers:
              - name: shardlease
                env:
                  - {{name: CONFIGMAP_JOURNAL_DIR, value: /journal}}
                volumeMounts:
                  - {{name: journal, mountPath: /journal}}
            volumes:
              - name: journal
                hostPath: {{path: {journal}, type: Directory}}
""")
    return overlay


def test_apply_gives_ready_pods_that_hold_every_shard(g: PodGroup) -> None:
    nodes = g.json("get", "nodes", namespaced=False)["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["shardlease-node"]
    g.kubectl("apply", "-k", str(REPO / "deploy/overlays/example"), namespaced=False)
    g.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=240s", timeout=260)
    for i in range(CONFIGMAPS):
        g.kubectl("create", "configmap", f"e2e-{i:03d}", f"--from-literal=n={i}")
    g.kubectl("label", "configmaps", *(f"e2e-{i:03d}" for i in range(CONFIGMAPS)), "e2e=shardlease")
    view = g.wait("4 pods balanced over 32 shards", lambda: g.balanced(4), 90)
    names = g.ready_pods()
    assert {row["holder"] for row in view["shard_table"]} <= names
    g.wait("every ConfigMap reconciled by a pod", lambda: configmaps_reconciled(g, names), 90)
    # The service-account token the kubelet projects is what the replicas use: the Role is enough.
    for name in names:
        logs = g.kubectl("logs", name)
        assert logs.strip(), f"no logs from {name}"
        for word in ("Forbidden", "Unauthorized", "HTTP 401", "HTTP 403"):
            assert word not in logs, f"{name} logged {word}:\n{logs[-3000:]}"
    first = sorted(names)[0]
    described = g.kubectl("describe", "pod", first)
    assert "Container started" in described and "shardlease-examples:0.1.0" in described, described
    # kubectl exec: the container runs as 10001 on a read-only root, with the projected token.
    out = g.kubectl("exec", first, "--", "python3", "-c",
                    "import os; print(os.getuid(), os.access('/app', os.W_OK), "
                    "os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))")
    assert out.split() == ["10001", "False", "True"], out


def test_scale_up_and_down_rebalances(local_node: LocalNode, g: PodGroup, journal_dir: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    # Switch the journal on (a rolling update, one pod at a time), then scale.
    overlay = journal_overlay(tmp_path_factory.mktemp("overlay"), journal_dir)
    g.kubectl("apply", "-k", str(overlay), namespaced=False)
    g.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=400s", timeout=420)
    g.wait("balanced after the journaled rollout", lambda: g.balanced(4), 90)

    began = time.monotonic()
    g.kubectl("scale", f"deployment/{DEPLOYMENT}", "--replicas", "6")
    g.wait("6 pods balanced", lambda: g.balanced(6), 60 + LEASE_DURATION)
    scaled_up = time.monotonic() - began
    print(f"scale 4 -> 6: balanced {scaled_up:.1f} s after kubectl scale")

    before = set(g.ready_pods())
    g.kubectl("scale", f"deployment/{DEPLOYMENT}", "--replicas", "4")
    leaving = g.wait("2 pods terminating", lambda: g.terminating_pods() or None, 30)
    began = time.monotonic()  # the pods are being deleted: the kubelet sends SIGTERM now
    staying = before - leaving

    def handed_off() -> bool:
        table = g.holders()
        return all(h in staying for h in table.values())

    g.wait("the leaving pods' shards held by the staying ones", handed_off, 45)
    handoff = time.monotonic() - began
    g.wait("leaving pods gone", lambda: not ({p["metadata"]["name"] for p in g.pods()} & leaving), 60)
    gone = time.monotonic() - began
    if handoff >= HANDOFF_BOUND:  # what the leaving pods did, from the kubelet's log files
        for name in leaving:
            for log in (local_node.work_dir / "pod-logs").glob(f"{NAMESPACE}_{name}_*/shardlease/*.log"):
                print(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-60:]))
    print(f"scale 6 -> 4: shards handed off {handoff:.1f} s after the pods were marked for deletion, "
          f"the pods gone after {gone:.1f} s")
    assert handoff < HANDOFF_BOUND, (f"handoff took {handoff:.1f} s: the leaving pods did not release their "
                                     f"shards promptly (a lease-duration wait is {LEASE_DURATION:g} s)")
    assert gone < 45, "a leaving pod used up terminationGracePeriodSeconds"
    g.wait("4 pods balanced", lambda: g.balanced(4), 30)


def test_force_delete_fails_over_within_a_lease(g: PodGroup) -> None:
    victim = sorted(g.ready_pods())[0]
    theirs = [s for s, h in g.holders().items() if h == victim]
    assert theirs, f"{victim} holds no shard"
    began = time.monotonic()
    g.kubectl("delete", "pod", victim, "--force", "--grace-period=0")
    g.wait("the victim's shards held by others",
           lambda: all(h not in (None, victim) for s, h in g.holders().items() if s in theirs),
           LEASE_DURATION + 10)
    failover = time.monotonic() - began
    print(f"force delete: {len(theirs)} shards failed over in {failover:.1f} s")
    assert failover < LEASE_DURATION + 10
    g.wait("replacement pod and balance", lambda: g.balanced(4), 90)


def test_killed_main_process_restarts_in_the_same_pod(local_node: LocalNode, g: PodGroup) -> None:
    victim = sorted(g.ready_pods())[-1]
    pod = g.json("get", "pod", victim)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("//")[-1]
    # The container's main process: PID 1 of its PID namespace, `shardlease run` (pid from containerd).
    info = subprocess.run([str(local_node.node_assets / "ctr"), "--address", str(local_node.containerd_socket),
                           "-n", "k8s.io", "tasks", "ls"], capture_output=True, text=True, check=True).stdout
    pid = next(int(line.split()[1]) for line in info.splitlines() if line.startswith(container_id))
    theirs = [s for s, h in g.holders().items() if h == victim]
    began = time.monotonic()
    os.kill(pid, 9)

    def restarted() -> bool:
        now = g.json("get", "pod", victim)["status"]["containerStatuses"][0]
        return bool(now["restartCount"] > restarts and now.get("ready"))

    g.wait("the kubelet restarted the container in the same pod", restarted, 60)
    g.wait("balanced again, the same pod name among the holders", lambda: g.balanced(4), 60)
    back = time.monotonic() - began
    print(f"kill -9 of the main process: pod {victim} Ready and the group balanced {back:.1f} s later "
          f"({len(theirs)} shards it held)")


def test_rollout_restart_keeps_every_shard_covered(g: PodGroup) -> None:
    before = g.ready_pods()
    began = time.monotonic()
    g.kubectl("rollout", "restart", f"deployment/{DEPLOYMENT}")
    g.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=400s", timeout=420)
    view = g.wait("balanced on the new pods", lambda: g.balanced(4), 60)
    took = time.monotonic() - began
    assert not ({row["holder"] for row in view["shard_table"]} & before), "an old pod still holds a shard"
    print(f"rollout restart of 4 pods: balanced on the new ones {took:.1f} s after kubectl rollout restart")


def test_kubelet_stopped_longer_than_a_lease_disturbs_nothing(local_node: LocalNode, g: PodGroup) -> None:
    """The kubelet is a process like any other: stopped, its containers keep running and keep their
    shards (the API server's node controller only marks the node NotReady after 50 s)."""
    held = g.holders()
    local_node.kubelet_stop()
    try:
        time.sleep(LEASE_DURATION + 5)
        assert g.holders() == held, "shards moved while only the kubelet was down"
    finally:
        local_node.kubelet_start()
    g.wait("node Ready again", lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                                           g.json("get", "node", "shardlease-node", namespaced=False)
                                           ["status"]["conditions"]), 60)
    g.wait("balanced, same pods", lambda: g.balanced(4), 60)
    assert g.holders() == held, "shards moved after the kubelet came back"


def test_journal_shows_no_overlap(journal_dir: Path) -> None:
    attempts = [a for a in load_attempts(journal_dir) if a.end is not None]
    assert attempts, "the journal is empty: the controller never wrote"
    overlaps = find_overlaps(attempts)
    assert not overlaps, "\n".join(overlaps[:20])
    regressions = token_regressions(attempts)
    assert not regressions, "\n".join(regressions[:20])
