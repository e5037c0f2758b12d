"""The proof fencing exists for, on a real kube-apiserver: a replica frozen (SIGSTOP) inside its write
path, after its ``valid()`` check, past its lease; another replica takes the shard; SIGCONT. Its write
and its delete are refused by the API server with the policy's message and nothing it sent lands, while
the new holder's writes and unfenced objects are unaffected. Two ``shardlease run`` processes with
scaled timings; ~10 s, so in the slow tier. Fails under CI=true without the server's binaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from shardlease import Shard, install_fencing, uninstall_fencing
from shardlease.core.fencing import ANNOTATION_FENCE

REPO = Path(__file__).resolve().parents[2]
NS = "default"


def steps(directory: Path, identity: str) -> list[dict[str, Any]]:
    path = directory / f"{identity}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_step(directory: Path, identity: str, step: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in steps(directory, identity):
            if record["step"] == step:
                return record
        time.sleep(0.02)
    raise AssertionError(f"{identity} never reached {step!r}: {steps(directory, identity)}")


@pytest.mark.slow
def test_a_replica_frozen_inside_its_write_is_refused_after_a_takeover(
        kube_apiserver_kubeconfig: str, tmp_path: Path) -> None:
    group = f"st{uuid.uuid4().hex[:6]}"
    api = kubernetes.config.new_client_from_config(config_file=kube_apiserver_kubeconfig)
    core = CoreV1Api(api)
    install_fencing(group, "v1/configmaps", shards=1, namespace=NS, api_client=api)
    env = {**os.environ, "FENCE_DIR": str(tmp_path), "SHARDLEASE_KUBECONFIG": kube_apiserver_kubeconfig,
           "PYTHONPATH": str(REPO), "SHARDLEASE_NAMESPACE": NS}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(identity: str) -> None:
        procs[identity] = subprocess.Popen(
            [sys.executable, "-m", "shardlease", "run", "tests.fencing.stale_replica:handle", "--group", group,
             "--shards", "1", "--lease-duration", "2", "--renew-deadline", "1.2", "--retry-period", "0.3"],
            env={**env, "SHARDLEASE_IDENTITY": identity}, cwd=REPO,
            stdout=(tmp_path / f"{identity}.log").open("wb"), stderr=subprocess.STDOUT)

    try:
        start("stale")
        stale_fence = wait_step(tmp_path, "stale", "created")["fence"]
        # The policy is in force once a write below the Lease's fence is refused.
        _, _, generation, stale_token = stale_fence.split("/")
        probe = Shard(0, 1, int(stale_token) - 1, group=group, generation=int(generation))
        deadline = time.monotonic() + 15
        while True:
            try:
                core.create_namespaced_config_map(NS, probe.stamp({"metadata": {"name": f"{group}-probe"}}))
                core.delete_namespaced_config_map(f"{group}-probe", NS)
            except ApiException as exc:
                assert exc.status == 403, exc.body
                break
            assert time.monotonic() < deadline, "the fencing policy never took effect"
            time.sleep(0.2)

        start("fresh")
        (tmp_path / "go").touch()
        wait_step(tmp_path, "stale", "checked")
        os.kill(procs["stale"].pid, signal.SIGSTOP)
        fresh_fence = wait_step(tmp_path, "fresh", "created")["fence"]  # took the shard, and wrote
        time.sleep(0.5)
        os.kill(procs["stale"].pid, signal.SIGCONT)
        update = wait_step(tmp_path, "stale", "update")
        delete = wait_step(tmp_path, "stale", "delete")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
        uninstall_fencing(group, "v1/configmaps", namespace=NS, api_client=api)

    fresh_token = fresh_fence.split("/")[3]
    assert int(fresh_token) > int(stale_token)
    expected = f"stale shard fence {stale_fence}: shard Lease {group}-shard-0 is at generation {generation}, " \
               f"token {fresh_token}"
    assert update["outcome"] == "refused" and update["status"] == 403 and expected in update["body"], update
    assert delete["outcome"] == "refused" and delete["status"] == 403, delete
    assert f"stale shard fence {stale_fence} on the object to delete" in delete["body"]
    landed = core.read_namespaced_config_map(f"{group}-stale", NS)
    assert landed.data == {"v": "0"} and landed.metadata.annotations[ANNOTATION_FENCE] == stale_fence
    assert core.read_namespaced_config_map(f"{group}-fresh", NS).metadata.annotations[ANNOTATION_FENCE] == fresh_fence
    api.close()


@pytest.mark.slow
def test_fencing_still_enforced_after_the_last_fenced_resource_was_uninstalled(tmp_path: Path) -> None:
    """kube-apiserver stops its Lease parameter informer once no binding uses Leases for a refresh tick
    and never starts it again (kubernetes/kubernetes#130887): without the anchor binding ``install``
    leaves behind, an install after an uninstall refuses every fenced write with "no params found".
    A fresh server, so that no earlier test's anchor hides the problem."""
    from kubernetes.client import CoordinationV1Api

    from shardlease.core.records import ANNOTATION_EPOCH, shard_labels
    from shardlease.testing import real_control_plane

    with real_control_plane(tmp_path / "plane") as plane:
        api = kubernetes.config.new_client_from_config(config_file=plane.write_kubeconfig(tmp_path / "kubeconfig"))
        core, leases = CoreV1Api(api), CoordinationV1Api(api)

        def lease(group: str) -> None:
            leases.create_namespaced_lease(NS, {
                "metadata": {"name": f"{group}-shard-0", "labels": shard_labels(group, 0),
                             "annotations": {ANNOTATION_EPOCH: "5"}},
                "spec": {"holderIdentity": "h", "leaseTransitions": 1}})

        def enforced(group: str) -> None:
            """A stale write is refused as stale (not merely for missing params), a current one accepted."""
            deadline = time.monotonic() + 20
            while True:
                try:
                    core.create_namespaced_config_map(
                        NS, Shard(0, 1, 5 << 20, group=group).stamp({"metadata": {"generateName": f"{group}-"}}))
                    message = "accepted"
                except ApiException as exc:
                    message = str(exc.body)
                if "stale shard fence" in message:
                    break
                assert time.monotonic() < deadline, f"a stale write of {group} was not refused as stale: {message}"
                time.sleep(0.2)
            core.create_namespaced_config_map(
                NS, Shard(0, 1, (5 << 20) + 1, group=group).stamp({"metadata": {"generateName": f"{group}-"}}))

        lease("first")
        install_fencing("first", "v1/configmaps", shards=1, namespace=NS, api_client=api)
        enforced("first")
        uninstall_fencing("first", "v1/configmaps", namespace=NS, api_client=api)
        time.sleep(3)  # a few policy refresh ticks (1 s) with no fencing binding left
        lease("second")  # a group started since: a stopped informer never sees its Lease
        install_fencing("second", "v1/configmaps", shards=1, namespace=NS, api_client=api)
        enforced("second")
        api.close()
