"""DevServer lifecycle and the read-only endpoints: discovery, version, health, namespaces."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client import ApiException, CoordinationV1Api

from shardlease.devserver import DevServer

from .conftest import make_client
from .helpers import lease_body, status_of


def test_several_servers_in_one_process_are_independent(tmp_path: Path) -> None:
    with DevServer() as one, DevServer() as two:
        assert one.port != two.port and one.url == f"http://127.0.0.1:{one.port}"
        api_one = CoordinationV1Api(make_client(one.write_kubeconfig(tmp_path / "one")))
        api_two = CoordinationV1Api(make_client(two.write_kubeconfig(tmp_path / "two")))
        api_one.create_namespaced_lease("default", lease_body("only-here"))
        assert api_two.list_namespaced_lease("default").items == []
        assert len(api_one.list_namespaced_lease("default").items) == 1


def test_stop_is_idempotent_and_closes_watches(tmp_path: Path) -> None:
    srv = DevServer().start()
    api = CoordinationV1Api(make_client(srv.write_kubeconfig(tmp_path / "kc")))
    response = api.list_namespaced_lease("default", watch=True, _preload_content=False)
    srv.stop()
    srv.stop()
    with pytest.raises(Exception):
        for _ in response.stream():
            pass
    with pytest.raises(Exception):
        api.list_namespaced_lease("default", _request_timeout=2)


def test_refuses_non_loopback_without_allow_remote() -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        DevServer(host="0.0.0.0")


def test_kubeconfig_context(devserver: DevServer, tmp_path: Path) -> None:
    path = devserver.write_kubeconfig(tmp_path / "nested" / "config")
    contexts, active = kubernetes.config.list_kube_config_contexts(config_file=str(path))
    assert active["name"] == "shardlease-dev"
    assert active["context"]["namespace"] == "default"
    assert make_client(path).configuration.host == devserver.url


def test_version(api_client: kubernetes.client.ApiClient) -> None:
    info = kubernetes.client.VersionApi(api_client).get_code()
    assert info.major == "1" and info.minor == "32" and info.platform == "linux/amd64"


def test_discovery(api_client: kubernetes.client.ApiClient) -> None:
    groups = kubernetes.client.ApisApi(api_client).get_api_versions()
    # kube-apiserver's order; the two review groups answer `kubectl auth can-i` / `whoami`.
    assert [g.name for g in groups.groups] == ["authentication.k8s.io", "authorization.k8s.io", "coordination.k8s.io"]
    group = kubernetes.client.CoordinationApi(api_client).get_api_group()
    assert group.preferred_version.group_version == "coordination.k8s.io/v1"
    resources = kubernetes.client.CoordinationV1Api(api_client).get_api_resources()
    (lease,) = resources.resources
    assert (lease.name, lease.kind, lease.namespaced) == ("leases", "Lease", True)
    assert sorted(lease.verbs) == ["create", "delete", "deletecollection", "get", "list", "patch",
                                   "update", "watch"]
    core = kubernetes.client.CoreV1Api(api_client).get_api_resources()
    assert "configmaps" in [r.name for r in core.resources]
    versions = kubernetes.client.CoreApi(api_client).get_api_versions()
    assert versions.versions == ["v1"]


def test_health(devserver: DevServer) -> None:
    for path in ("/healthz", "/readyz", "/livez"):
        with urllib.request.urlopen(devserver.url + path, timeout=5) as response:
            assert response.read() == b"ok"


def test_namespace_is_created_by_the_first_write_into_it(api_client: kubernetes.client.ApiClient,
                                                          coord: CoordinationV1Api, ns: str) -> None:
    """Compatibility default: writing into a namespace nobody created creates it (kube-apiserver
    would answer 404; see test_strict_namespaces_reject_writes_like_kube_apiserver)."""
    core = kubernetes.client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as err:
        core.read_namespace(ns)
    assert err.value.status == 404
    assert coord.list_namespaced_lease(ns).items == []  # reading an empty namespace works, as in kube
    coord.create_namespaced_lease(ns, lease_body("a"))
    made = core.read_namespace(ns)
    assert made.status.phase == "Active" and made.metadata.labels == {"kubernetes.io/metadata.name": ns}
    assert ns in [n.metadata.name for n in core.list_namespace().items]
    assert core.list_namespaced_event(ns).items == []
    with pytest.raises(ApiException) as err:
        core.read_namespace("Not_Valid")
    assert err.value.status == 404


def test_default_namespaces_exist_and_the_system_ones_cannot_be_deleted(
        api_client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    with pytest.raises(ApiException) as err:
        core.delete_namespace("default")
    assert err.value.status == 403
    assert "this namespace may not be deleted" in err.value.body


def test_deleting_a_namespace_deletes_what_it_holds(api_client: kubernetes.client.ApiClient,
                                                    coord: CoordinationV1Api, ns: str) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": ns}})
    coord.create_namespaced_lease(ns, lease_body("a"))
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    answer = core.delete_namespace(ns)  # typed V1Status by the client, so it gives the raw dict back
    assert answer["status"]["phase"] == "Terminating" and answer["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as err:
        core.read_namespace(ns)
    assert err.value.status == 404
    assert coord.list_namespaced_lease(ns).items == []
    assert core.list_namespaced_config_map(ns).items == []


def test_strict_namespaces_reject_writes_like_kube_apiserver(tmp_path: Path) -> None:
    with DevServer(strict_namespaces=True) as srv:
        client = kubernetes.config.new_client_from_config(
            config_file=str(srv.write_kubeconfig(tmp_path / "config")))
        coord, core = CoordinationV1Api(client), kubernetes.client.CoreV1Api(client)
        with pytest.raises(ApiException) as err:
            coord.create_namespaced_lease("missing", lease_body("a"))
        body = status_of(err.value)
        assert (body["code"], body["reason"], body["message"], body["details"]) == (
            404, "NotFound", 'namespaces "missing" not found', {"name": "missing", "kind": "namespaces"})
        coord.create_namespaced_lease("default", lease_body("a"))  # the defaults exist from the start
        core.create_namespace({"metadata": {"name": "made"}})
        coord.create_namespaced_lease("made", lease_body("a"))
