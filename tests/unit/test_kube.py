"""load_api_client finds its configuration where kubectl would, and identifies the replica."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes.client.rest import ApiException

from shardlease.client.connect import CLIENT_ID_HEADER, default_user_agent, load_api_client
from shardlease.errors import ConfigError, ShardleaseError


def write_kubeconfig(path: Path, clusters: dict[str, str], current: str | None = None) -> Path:
    """A kubeconfig with one context, cluster and user per entry of ``clusters`` (name -> server)."""
    lines = ["apiVersion: v1", "kind: Config", "clusters:"]
    for name, server in clusters.items():
        lines += [f"- name: {name}", f"  cluster: {{server: {json.dumps(server)}}}"]
    lines.append("contexts:")
    for name in clusters:
        lines += [f"- name: {name}", f"  context: {{cluster: {name}, user: {name}}}"]
    lines.append("users:")
    for name in clusters:
        lines += [f"- name: {name}", f"  user: {{token: token-{name}}}"]
    if current:
        lines.append(f"current-context: {current}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No KUBECONFIG, an empty home directory, not in a cluster."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_explicit_path_and_current_context(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", {"one": "https://one.example:6443"}, current="one")
    api = load_api_client(str(path))
    assert api.configuration.host == "https://one.example:6443"
    assert api.configuration.api_key["BearerToken"] == "Bearer token-one"


def test_explicit_context(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc", {"one": "https://one.example", "two": "https://two.example"}, current="one"
    )
    assert load_api_client(str(path), context="two").configuration.host == "https://two.example"
    with pytest.raises(ConfigError, match="context 'three'"):
        load_api_client(str(path), context="three")


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist.*--kubeconfig"):
        load_api_client(str(tmp_path / "missing"))


def test_malformed_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_api_client(str(path))


def test_kubeconfig_env_is_a_merged_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_kubeconfig(tmp_path / "a", {"one": "https://one.example"}, current="one")
    second = write_kubeconfig(tmp_path / "b", {"two": "https://two.example"})
    missing = tmp_path / "missing"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(missing), str(first), str(second)]))
    assert load_api_client().configuration.host == "https://one.example"
    assert load_api_client(context="two").configuration.host == "https://two.example"


def test_first_current_context_wins_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_kubeconfig(tmp_path / "a", {"one": "https://one.example"}, current="one")
    second = write_kubeconfig(tmp_path / "b", {"two": "https://two.example"}, current="two")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(second)]))
    assert load_api_client().configuration.host == "https://one.example"


def test_kubeconfig_env_wins_over_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    write_kubeconfig(isolated_env / ".kube" / "config", {"home": "https://home.example"}, current="home")
    env_file = write_kubeconfig(tmp_path / "env", {"env": "https://env.example"}, current="env")
    monkeypatch.setenv("KUBECONFIG", str(env_file))
    assert load_api_client().configuration.host == "https://env.example"


def test_kubeconfig_env_naming_only_missing_files_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    # kubectl does not fall back to ~/.kube/config when KUBECONFIG is set, and neither do we.
    write_kubeconfig(isolated_env / ".kube" / "config", {"home": "https://home.example"}, current="home")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="none of these files exists"):
        load_api_client()


def test_home_kubeconfig(isolated_env: Path) -> None:
    write_kubeconfig(isolated_env / ".kube" / "config", {"home": "https://home.example"}, current="home")
    assert load_api_client().configuration.host == "https://home.example"


def test_nothing_found_says_what_was_tried() -> None:
    with pytest.raises(ConfigError) as info:
        load_api_client()
    message = str(info.value)
    for tried in ("--kubeconfig", "$KUBECONFIG", "~/.kube/config", "KUBERNETES_SERVICE_HOST"):
        assert tried in message
    assert isinstance(info.value, ShardleaseError)


@pytest.mark.skipif(
    Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists(), reason="running inside a pod"
)
def test_in_cluster_without_service_account_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="in-cluster service account"):
        load_api_client()
    with pytest.raises(ConfigError, match="context 'x' was requested"):
        load_api_client(context="x")


def test_each_client_has_its_own_configuration(tmp_path: Path) -> None:
    """Loading never touches the library's global default, so clients cannot leak into each other."""
    before = k8s_client.Configuration.get_default_copy().host
    one = load_api_client(str(write_kubeconfig(tmp_path / "1", {"one": "https://one.example"}, "one")))
    two = load_api_client(str(write_kubeconfig(tmp_path / "2", {"two": "https://two.example"}, "two")))
    assert (one.configuration.host, two.configuration.host) == ("https://one.example", "https://two.example")
    assert one.configuration is not two.configuration
    assert k8s_client.Configuration.get_default_copy().host == before


def test_pool_size(tmp_path: Path) -> None:
    path = str(write_kubeconfig(tmp_path / "kc", {"one": "https://one.example"}, "one"))
    assert load_api_client(path).rest_client.pool_manager.connection_pool_kw["maxsize"] == 16
    assert load_api_client(path, pool_size=40).rest_client.pool_manager.connection_pool_kw["maxsize"] == 40
    with pytest.raises(ValueError, match="pool_size"):
        load_api_client(path, pool_size=0)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1", "metadata": {}, "items": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_requests_carry_user_agent_and_client_id(tmp_path: Path, recorder: str) -> None:
    path = str(write_kubeconfig(tmp_path / "kc", {"local": recorder}, "local"))
    k8s_client.CoordinationV1Api(load_api_client(path, client_id="replica-3")).list_namespaced_lease("default")
    k8s_client.CoordinationV1Api(load_api_client(path, user_agent="observer")).list_namespaced_lease("default")
    with_id, plain = _Recorder.seen
    assert with_id["user-agent"] == default_user_agent("replica-3") == "shardlease/0.1.0 (replica-3)"
    assert with_id[CLIENT_ID_HEADER.lower()] == "replica-3"
    assert with_id["authorization"] == "Bearer token-local"
    assert plain["user-agent"] == "observer"
    assert CLIENT_ID_HEADER.lower() not in plain


def test_dev_server_tells_clients_apart_by_client_id(tmp_path: Path) -> None:
    """One real round trip through the dev-server: a partition of one client id spares the others."""
    from shardlease import devserver

    with devserver.DevServer(host="127.0.0.1", port=0, faults=True) as server:
        path = tmp_path / "kc"
        server.write_kubeconfig(path)
        cut = k8s_client.CoordinationV1Api(load_api_client(str(path), client_id="replica-1"))
        fine = k8s_client.CoordinationV1Api(load_api_client(str(path), client_id="replica-2"))
        assert fine.list_namespaced_lease("default").items == []
        server.faults.partition("replica-1")
        with pytest.raises(ApiException):
            cut.list_namespaced_lease("default")
        assert fine.list_namespaced_lease("default").items == []
