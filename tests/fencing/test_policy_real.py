"""Fencing the API server enforces, on a real kube-apiserver 1.36: the installed policies refuse a write
whose shard fence is below its shard Lease's, and nothing else. Each test fences its own group; the
Leases are written by hand here (the takeover by real replicas is tests/fencing/test_stale_replica.py).
Under CI=true these fail without the server's binaries, never skip (the ``kube_apiserver`` fixture)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client import AdmissionregistrationV1Api, CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from shardlease import Shard, install_fencing, uninstall_fencing
from shardlease.cli import main
from shardlease.core.fencing import ANNOTATION_FENCE
from shardlease.core.records import ANNOTATION_EPOCH, ANNOTATION_GENERATION, shard_labels

NS = "default"
EPOCH = 1_790_000_000_000
PROPAGATION = 15.0  # how long a policy change may take to reach the admission chain


def token(transitions: int) -> int:
    return (EPOCH << 20) + transitions


class Fenced:
    """One fenced group on the session's kube-apiserver: its shard Leases, and ConfigMaps to write."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.group = f"f{uuid.uuid4().hex[:8]}"
        self.core = CoreV1Api(api)
        self.leases = CoordinationV1Api(api)

    def lease(self, shard: int, transitions: int, generation: int = 1) -> None:
        """Create or overwrite shard Lease ``shard`` as a holder at (``generation``, ``token(transitions)``)."""
        name = f"{self.group}-shard-{shard}"
        body = {"metadata": {"name": name, "labels": shard_labels(self.group, shard),
                             "annotations": {ANNOTATION_GENERATION: str(generation), ANNOTATION_EPOCH: str(EPOCH)}},
                "spec": {"holderIdentity": f"holder-{transitions}", "leaseTransitions": transitions}}
        try:
            body["metadata"]["resourceVersion"] = self.leases.read_namespaced_lease(name, NS).metadata.resource_version
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.leases.create_namespaced_lease(NS, body)
            return
        self.leases.replace_namespaced_lease(name, NS, body)

    def shard(self, shard: int, transitions: int, generation: int = 1) -> Shard:
        return Shard(shard, 4, token(transitions), group=self.group, generation=generation)

    def write(self, name: str, holder: Shard | None, data: str = "x") -> dict[str, Any]:
        """Create or update ConfigMap ``name`` stamped by ``holder`` (unfenced when ``None``)."""
        try:
            current = self.core.read_namespaced_config_map(name, NS).to_dict()
            body = {"metadata": {"name": name, "resourceVersion": current["metadata"]["resource_version"],
                                 "labels": current["metadata"]["labels"],
                                 "annotations": current["metadata"]["annotations"]}, "data": {"v": data}}
        except ApiException as exc:
            if exc.status != 404:
                raise
            body, current = {"metadata": {"name": name}, "data": {"v": data}}, None
        if holder is not None:
            holder.stamp(body)
        if current is None:
            return self.core.create_namespaced_config_map(NS, body).to_dict()  # type: ignore[no-any-return]
        return self.core.replace_namespaced_config_map(name, NS, body).to_dict()  # type: ignore[no-any-return]


@pytest.fixture
def fenced(kube_apiserver_kubeconfig: str) -> Iterator[Fenced]:
    api = kubernetes.config.new_client_from_config(config_file=kube_apiserver_kubeconfig)
    f = Fenced(api)
    yield f
    uninstall_fencing(f.group, "v1/configmaps", namespace=NS, api_client=api)
    api.close()


def refused(call: Callable[[], Any]) -> str:
    """The message of the API server's refusal of ``call``; fails the test if it was accepted."""
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status in (403, 422), info.value.body
    return str(info.value.body)


def eventually(call: Callable[[], Any], timeout: float = PROPAGATION) -> Any:
    """``call()`` once it stops raising (an admission policy change reaches the server's informer first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (ApiException, AssertionError, pytest.fail.Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_stale_fence_refused_current_and_unfenced_allowed(fenced: Fenced) -> None:
    fenced.lease(0, 3)
    fenced.lease(1, 5)
    install_fencing(fenced.group, "v1/configmaps", shards=2, namespace=NS, api_client=fenced.api)
    message = eventually(lambda: refused(lambda: fenced.write("a", fenced.shard(0, 2))))
    assert (f"stale shard fence {fenced.group}/0/1/{token(2)}: shard Lease {fenced.group}-shard-0 is at "
            f"generation 1, token {token(3)}") in message
    fenced.write("a", fenced.shard(0, 3))  # the current holder
    fenced.write("b", fenced.shard(1, 5))  # another shard's holder
    fenced.write("c", None)  # an object without a fence
    # The shard moves on: the old holder's update is refused, the new holder's accepted.
    fenced.lease(0, 4)
    eventually(lambda: refused(lambda: fenced.write("a", fenced.shard(0, 3), data="late")))
    assert fenced.core.read_namespaced_config_map("a", NS).data == {"v": "x"}
    # Someone else's edit (read-modify-write keeping the stamp it read) is not a holder's write: allowed,
    # though the fence it carries is now stale.
    fenced.write("a", None, data="edited by a user")
    assert fenced.core.read_namespaced_config_map("a", NS).data == {"v": "edited by a user"}
    fenced.write("a", fenced.shard(0, 4), data="new")
    assert fenced.core.read_namespaced_config_map("a", NS).metadata.annotations[ANNOTATION_FENCE] == \
        f"{fenced.group}/0/1/{token(4)}"


def test_update_never_lowers_the_fence_an_object_carries_across_a_reshard(fenced: Fenced) -> None:
    # Generation 2 runs: shard 0's holder wrote the object. Shard 1's Lease still shows generation 1
    # (its old holder, paused, has not seen the switch yet), so only the stored fence can refuse it.
    fenced.lease(0, 3, generation=2)
    fenced.lease(1, 5, generation=1)
    install_fencing(fenced.group, "v1/configmaps", shards=2, namespace=NS, api_client=fenced.api)
    eventually(lambda: refused(lambda: fenced.write("probe", fenced.shard(0, 2, generation=2))))
    fenced.write("moved", fenced.shard(0, 3, generation=2))
    message = refused(lambda: fenced.write("moved", fenced.shard(1, 5, generation=1)))
    assert f"the object already carries the newer fence {fenced.group}/0/2/{token(3)}" in message
    # The reverse move (an older generation's fence replaced by a newer one) is how a reshard hands over.
    fenced.write("old", fenced.shard(1, 5, generation=1))
    fenced.write("old", fenced.shard(0, 3, generation=2))


def test_delete_checks_the_stored_fence_and_missing_lease_fails_closed(fenced: Fenced) -> None:
    fenced.lease(0, 3)
    fenced.lease(1, 5)
    install_fencing(fenced.group, "v1/configmaps", shards=2, namespace=NS, api_client=fenced.api)
    eventually(lambda: refused(lambda: fenced.write("probe", fenced.shard(0, 2))))
    fenced.write("d", fenced.shard(0, 3))
    fenced.write("plain", None)
    fenced.lease(0, 4)  # taken over: a delete by anyone but a holder that stamps first is refused
    message = eventually(lambda: refused(lambda: fenced.core.delete_namespaced_config_map("d", NS)))
    assert f"stale shard fence {fenced.group}/0/1/{token(3)} on the object to delete" in message
    written = fenced.write("d", fenced.shard(0, 4))
    fenced.core.delete_namespaced_config_map(
        "d", NS, body={"preconditions": {"resourceVersion": written["metadata"]["resource_version"]}})
    # Shard 1's Lease is gone (deleted by an operator): its fenced writes are refused until it is back,
    # unfenced objects are untouched.
    fenced.leases.delete_namespaced_lease(f"{fenced.group}-shard-1", NS)
    eventually(lambda: refused(lambda: fenced.write("e", fenced.shard(1, 5))))
    fenced.write("plain", None, data="still")
    fenced.core.delete_namespaced_config_map("plain", NS)


@pytest.mark.slow  # four installs, each waiting for the admission chain to see it: ~4 s
def test_a_shard_without_binding_is_refused_until_install_runs_again(fenced: Fenced, capsys: Any,
                                                                    kube_apiserver_kubeconfig: str) -> None:
    fenced.lease(0, 3)
    fenced.lease(2, 1)
    argv = ["fencing", "install", "--group", fenced.group, "--namespace", NS, "--resource", "v1/configmaps",
            "--kubeconfig", kube_apiserver_kubeconfig]
    assert main([*argv, "--shards", "2"]) == 0
    message = eventually(lambda: refused(lambda: fenced.write("g", fenced.shard(2, 1))))
    assert f"shard 2 of group {fenced.group} has no fencing binding (installed for 2 shards)" in message
    assert main([*argv, "--shards", "3"]) == 0
    eventually(lambda: fenced.write("g", fenced.shard(2, 1)))
    assert main([*argv, "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert f"deleted ValidatingAdmissionPolicyBinding/shardlease-fence.{NS}.{fenced.group}.configmaps-2" in out
    assert main(["fencing", "uninstall", "--group", fenced.group, "--namespace", NS, "--resource", "v1/configmaps",
                 "--kubeconfig", kube_apiserver_kubeconfig]) == 0
    admission = AdmissionregistrationV1Api(fenced.api)
    assert [p.metadata.name for p in admission.list_validating_admission_policy().items
            if fenced.group in p.metadata.name] == []
    assert [b.metadata.name for b in admission.list_validating_admission_policy_binding().items
            if fenced.group in b.metadata.name] == []
    eventually(lambda: fenced.write("stale", fenced.shard(0, 1)))  # nothing enforced any more
