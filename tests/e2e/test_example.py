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

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.configmap_controller import ANNOTATION_BY, ANNOTATION_FENCE
from shardlease import shard_for_object
from shardlease.controlplane.node import LocalNode
from shardlease.harness.podgroup import LeaseWatch, PodGroup
from tests.examples.test_examples import Attempt, find_overlaps, load_attempts

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
    with LeaseWatch(g) as watch:
        watch.wait_started()
        ordered = time.monotonic()
        g.kubectl("scale", f"deployment/{DEPLOYMENT}", "--replicas", "4")
        leaving = g.wait("2 pods terminating", lambda: t if len(t := g.terminating_pods()) == 2 else None, 30)
        # When it happened, from the Lease watch (a status read takes a second or more here).
        at = watch.handoff_time(g, ordered, before - leaving, 45)
    handoff = at - ordered
    if handoff >= HANDOFF_BOUND:  # what the leaving pods did, from the kubelet's log files (gone with the pods)
        for name in leaving:
            for log in (local_node.work_dir / "pod-logs").glob(f"{NAMESPACE}_{name}_*/shardlease/*.log"):
                print(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-60:]))
    g.wait("leaving pods gone", lambda: not ({p["metadata"]["name"] for p in g.pods()} & leaving), 60)
    gone = time.monotonic() - ordered
    print(f"scale 6 -> 4: the leaving pods' shards held by the stayers {handoff:.2f} s after kubectl scale "
          f"(Lease watch), the pods gone after {gone:.1f} s")
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
    with LeaseWatch(g) as watch:
        watch.wait_started()
        began = time.monotonic()
        g.kubectl("rollout", "restart", f"deployment/{DEPLOYMENT}")
        g.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=400s", timeout=420)
        view = g.wait("balanced on the new pods", lambda: g.balanced(4), 60)
        took = time.monotonic() - began
        unowned = watch.unowned_seconds(began, began + took)
    assert not ({row["holder"] for row in view["shard_table"]} & before), "an old pod still holds a shard"
    print(f"rollout restart of 4 pods: balanced on the new ones {took:.1f} s after kubectl rollout restart; "
          f"{sum(unowned.values()):.2f} shard-seconds unowned over {len(unowned)} shards (longest "
          f"{max(unowned.values(), default=0.0):.2f} s)")
    # Each leaving pod releases its shards on SIGTERM and the others take them at once: no shard may
    # wait anything like the lease a crash would cost.
    assert max(unowned.values(), default=0.0) < HANDOFF_BOUND, unowned


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


def pod_condition(pod: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in pod.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def events_for(g: PodGroup, pod: str) -> list[str]:
    """``reason: message`` of the events the kubelet and scheduler recorded for one pod."""
    items = g.json("get", "events", "--field-selector", f"involvedObject.name={pod}")["items"]
    return [f"{e.get('reason')}: {e.get('message')}" for e in items]


def main_process_pid(local_node: LocalNode, g: PodGroup, pod: str) -> int:
    """The host pid of a pod's container main process (``shardlease run``), as containerd lists it."""
    container_id = g.json("get", "pod", pod)["status"]["containerStatuses"][0]["containerID"].split("//")[-1]
    info = subprocess.run([str(local_node.node_assets / "ctr"), "--address", str(local_node.containerd_socket),
                           "-n", "k8s.io", "tasks", "ls"], capture_output=True, text=True, check=True).stdout
    return next(int(line.split()[1]) for line in info.splitlines() if line.startswith(container_id))


def test_drain_of_the_only_node_evicts_one_pod_at_a_time(g: PodGroup) -> None:
    """``kubectl drain`` with the PodDisruptionBudget (maxUnavailable 1): the first eviction goes
    through, its replacement cannot be scheduled on the cordoned node, so every further eviction is
    refused until the drain gives up; the evicted pod hands its shards to the three others within the
    handoff bound. Uncordoned, the replacement starts and the group is balanced over 4 again."""
    # A pod of an earlier test's rollout may still be terminating (45 s of grace, longer while its kubelet
    # was stopped): it would read as a second eviction, and it holds a place the PDB counts.
    g.wait("no pod left terminating by an earlier test", lambda: not g.terminating_pods(), 180)
    try:
        before = g.ready_pods()
        assert len(before) == 4
        with LeaseWatch(g) as watch:
            watch.wait_started()
            ordered = time.monotonic()
            drain = subprocess.Popen(["kubectl", "drain", "shardlease-node", "--ignore-daemonsets", "--delete-emptydir-data",
                                      "--timeout=30s"], env=g.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                evicted = g.wait("a pod evicted", lambda: g.terminating_pods() or None, 30)
                assert len(evicted) == 1, f"the PDB let {sorted(evicted)} go at once"
                staying = before - evicted
                handoff = watch.handoff_time(g, ordered, staying, 45) - ordered
                g.wait("3 pods balanced while the node is cordoned", lambda: g.balanced(3), 60)
                # Until the drain gives up: never fewer than 3 Ready pods, never a second pod evicted, and the
                # replacement Pending (unschedulable: the node is cordoned).
                seen_evicted = set(evicted)
                while drain.poll() is None:
                    pods = g.pods()
                    seen_evicted |= {p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp")}
                    assert len(seen_evicted) == 1, f"a second pod was evicted: {sorted(seen_evicted)}"
                    ready = g.ready_pods()
                    assert ready == staying, f"Ready pods {sorted(ready)} while draining (expected {sorted(staying)})"
                    time.sleep(1)
                output = drain.communicate(timeout=30)[0]
            finally:
                if drain.poll() is None:
                    drain.kill()
                    drain.communicate()
        pending = [p for p in g.pods() if p["status"].get("phase") == "Pending"]
        print(f"drain: 1 pod evicted, its shards held by the others {handoff:.2f} s after kubectl drain started "
              f"(Lease watch); {len(pending)} replacement pending; "
              f"kubectl drain exited {drain.returncode}")
        assert drain.returncode != 0, f"the drain finished, evicting every pod despite the PDB:\n{output}"
        assert "Cannot evict pod as it would violate the pod's disruption budget" in output, output
        assert len(pending) == 1 and pod_condition(pending[0], "PodScheduled") == "False", pending
        assert handoff < HANDOFF_BOUND, f"the evicted pod's handoff took {handoff:.1f} s"
        g.kubectl("uncordon", "shardlease-node", namespaced=False)
        began = time.monotonic()
        g.wait("4 pods balanced after uncordon", lambda: g.balanced(4), 90)
        print(f"uncordon: balanced over 4 pods {time.monotonic() - began:.1f} s later")
    finally:
        # A failure above must not leave the only node cordoned: every later test would wait for pods
        # that cannot be scheduled.
        g.kubectl("uncordon", "shardlease-node", namespaced=False, check=False)


def test_rollout_changing_the_shard_count_reshards_live(g: PodGroup) -> None:
    """``kubectl set env ... SHARDLEASE_SHARDS=24``: a rolling update to a new count. The group
    switches once most members declare it; shard-seconds without a working holder are measured, and
    every ConfigMap ends reconciled by the holder of its shard under the new count."""
    new = 24

    def rolled_out() -> bool:
        status = g.kubectl("rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=1s", check=False)
        return "successfully rolled out" in status and g.balanced(4) is not None

    with LeaseWatch(g) as watch:
        watch.wait_started()
        began = time.monotonic()
        g.kubectl("set", "env", f"deployment/{DEPLOYMENT}", f"SHARDLEASE_SHARDS={new}")
        g.shards = new
        took, unworked = g.unworked_seconds_until(rolled_out, 420)
        # Shards at or past the new count are retired (their Leases deleted): not a gap.
        unowned = {s: t for s, t in watch.unowned_seconds(began, began + took).items() if s < new}
    view = g.wait("balanced over 24 shards", lambda: g.balanced(4), 30)
    print(f"rollout 32 -> {new} shards: balanced {took:.1f} s after kubectl set env, generation "
          f"{view['generation']}; {sum(unowned.values()):.2f} shard-seconds unowned (Lease watch; longest "
          f"{max(unowned.values(), default=0.0):.2f} s), {unworked:.1f} shard-seconds seen without a working "
          "holder (unowned, expired or waiting for the switch) in two status samples in a row")
    assert max(unowned.values(), default=0.0) < LEASE_DURATION, f"a shard waited a lease or more: {unowned}"
    holders = {row["shard"]: row["holder"] for row in view["shard_table"]}

    def not_reconciled_under_new_count() -> list[str]:
        wrong = []
        for cm in g.json("get", "configmaps", "-l", "e2e=shardlease")["items"]:
            notes = cm["metadata"].get("annotations") or {}
            shard = shard_for_object(cm, new)
            fence = notes.get(ANNOTATION_FENCE, "").split("/")
            if (notes.get(ANNOTATION_BY) != holders[shard] or len(fence) != 4
                    or fence[1:3] != [str(shard), str(view["generation"])]):
                wrong.append(f"{cm['metadata']['name']}: shard {shard} held by {holders[shard]}, annotations "
                             f"{notes.get(ANNOTATION_BY)} {notes.get(ANNOTATION_FENCE)}")
        return wrong

    try:
        g.wait("every ConfigMap reconciled under 24 shards", lambda: not not_reconciled_under_new_count(), 60)
    except AssertionError:
        raise AssertionError("\n".join(not_reconciled_under_new_count())) from None


def test_duplicate_identity_is_not_ready_and_reported(g: PodGroup) -> None:
    """A second pod started with a live pod's identity (``SHARDLEASE_IDENTITY``): it stays running and
    alive (liveness passes, no restart) but never Ready, takes no shard, and ``shardlease status``
    reports the refused duplicate; the group is undisturbed."""
    original = sorted(g.ready_pods())[0]
    held = g.holders()
    template = g.json("get", "deployment", DEPLOYMENT)["spec"]["template"]
    container = template["spec"]["containers"][0]
    container["env"] = [*container["env"], {"name": "SHARDLEASE_IDENTITY", "value": original}]
    # Not the Deployment's labels: its ReplicaSet would adopt the pod, and the PDB count it.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e2e-duplicate", "labels": {"e2e": "duplicate"}},
           "spec": template["spec"]}
    g.kubectl("create", "-f", "-", input=json.dumps(pod))
    try:
        g.wait("the duplicate running", lambda: g.json("get", "pod", "e2e-duplicate")["status"].get("phase")
               == "Running", 60)

        def reported() -> list[str] | None:
            problems = [p for p in g.status()["problems"] if original in p]
            return problems or None

        problems = g.wait("status reports the duplicate identity", reported, 45)
        g.wait("its readiness probe failing with 503", lambda: any(
            "Readiness probe failed: HTTP probe failed with statuscode: 503" in e
            for e in events_for(g, "e2e-duplicate")), 45)
        # What /readyz tells whoever looks (from inside the pod, as the kubelet asks it).
        readyz = g.kubectl("exec", "e2e-duplicate", "--", "python3", "-c",
                           "import urllib.request, urllib.error\n"
                           "try: urllib.request.urlopen('http://127.0.0.1:8080/readyz')\n"
                           "except urllib.error.HTTPError as e: print(e.code, e.read().decode())")
        assert readyz.startswith("503") and "not ready" in readyz, readyz
        # Liveness (initial delay 5 s, 3 failures 10 s apart) would have restarted it 35 s after its
        # start, and a 503 from readiness comes 10 s or more after it: 30 s more is past that. It must
        # not have restarted: its control loop is ticking, and refusing is what it should do.
        time.sleep(30)
        dup = g.json("get", "pod", "e2e-duplicate")
        state = dup["status"]["containerStatuses"][0]
        events = events_for(g, "e2e-duplicate")
        print(f"duplicate identity {original}: reported as {problems}; /readyz {readyz.strip()!r}; Ready "
              f"{pod_condition(dup, 'Ready')}, restarts {state['restartCount']}; events {events}")
        assert pod_condition(dup, "Ready") == "False"
        assert state["restartCount"] == 0 and not any("Liveness probe failed" in e for e in events), events
        assert original in g.ready_pods()
        assert g.holders() == held, "a shard moved while the duplicate ran"
    finally:
        g.kubectl("delete", "pod", "e2e-duplicate", "--grace-period=5")
    g.wait("balanced, same holders", lambda: g.balanced(4), 30)


def test_stopped_process_fails_its_probes_and_is_restarted(local_node: LocalNode, g: PodGroup) -> None:
    """A replica that stops answering (SIGSTOP of its main process: a wedged interpreter): readiness
    fails, its Leases expire and the others take its shards within about a lease, liveness fails 3
    times and the kubelet restarts the container under the same pod name, which then gets shards
    back. No write overlaps (the journal test checks it)."""
    victim = sorted(g.ready_pods())[-1]
    restarts = g.json("get", "pod", victim)["status"]["containerStatuses"][0]["restartCount"]
    theirs = {s for s, h in g.holders().items() if h == victim}
    pid = main_process_pid(local_node, g, victim)
    began = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        g.wait("the stopped pod not Ready", lambda: victim not in g.ready_pods(), 45)
        not_ready = time.monotonic() - began
        g.wait("its shards held by the others",
               lambda: all(h not in (None, victim) for s, h in g.holders().items() if s in theirs),
               LEASE_DURATION + 20)
        failover = time.monotonic() - began

        def restarted() -> bool:
            now = g.json("get", "pod", victim)["status"]["containerStatuses"][0]
            return bool(now["restartCount"] > restarts and now.get("ready"))

        # liveness: 3 failures 10 s apart, then the kill with the 45 s grace (a stopped process
        # never acts on SIGTERM, so the kubelet's SIGKILL ends it)
        g.wait("the kubelet restarted the container in the same pod", restarted, 150)
        back = time.monotonic() - began
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # if the test failed before the restart
        except ProcessLookupError:
            pass
    events = events_for(g, victim)
    g.wait("balanced again", lambda: g.balanced(4), 60)
    print(f"SIGSTOP of {victim}: not Ready after {not_ready:.1f} s, {len(theirs)} shards failed over after "
          f"{failover:.1f} s, restarted and Ready after {back:.1f} s")
    assert any("Liveness probe failed" in e for e in events), events
    assert any("Readiness probe failed" in e for e in events), events
    assert failover < LEASE_DURATION + 20


def test_journal_shows_no_overlap(journal_dir: Path) -> None:
    attempts = [a for a in load_attempts(journal_dir) if a.end is not None]
    assert attempts, "the journal is empty: the controller never wrote"
    # Per shard within each generation (shard ids change meaning with the count), and per ConfigMap
    # across the whole run: no two pods ever wrote to one object at once.
    overlaps = [o for gen in {a.generation for a in attempts}
                for o in find_overlaps([a for a in attempts if a.generation == gen])]
    overlaps += object_overlaps(attempts)
    assert not overlaps, "\n".join(overlaps[:20])
    regressions = fence_regressions(attempts)
    assert not regressions, "\n".join(regressions[:20])
    print(f"journal: {len(attempts)} write attempts by {len({a.identity for a in attempts})} pods over "
          f"generations {sorted({a.generation for a in attempts})}, no overlap")


def object_overlaps(attempts: list[Attempt]) -> list[str]:
    """Pairs of attempts on one ConfigMap by different pods whose [start, end] spans intersect."""
    problems = []
    by_key: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_key.setdefault(a.key, []).append(a)
    for key, items in sorted(by_key.items()):
        items.sort(key=lambda a: a.start)
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                if b.start > (a.end or a.start):
                    break
                if b.identity != a.identity:
                    problems.append(f"{key}: {a.identity} [{a.start:.3f}, {a.end}] and {b.identity} "
                                    f"[{b.start:.3f}, {b.end}]")
    return problems


def fence_regressions(attempts: list[Attempt]) -> list[str]:
    """ConfigMaps whose successful writes, in completion order, carry an older fence (generation, token)."""
    by_key: dict[str, list[Attempt]] = {}
    for a in attempts:
        if a.outcome == "written":
            by_key.setdefault(a.key, []).append(a)
    problems = []
    for key, writes in sorted(by_key.items()):
        fences = [(a.generation, a.token) for a in sorted(writes, key=lambda a: a.end or 0.0)]
        if fences != sorted(fences):
            problems.append(f"{key}: fence went backwards: {fences}")
    return problems
