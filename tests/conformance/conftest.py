"""One conformance suite, two servers: every test here runs against the embedded dev-server and
against a real kube-apiserver + etcd, and asserts what the real one answers, so any divergence of
the dev-server fails a test (or is listed, with its reason, in docs/fidelity.md).

The real server comes from the ``kube_apiserver`` / ``kube_apiserver_kubeconfig`` fixtures of
``shardlease.testing`` (built assets, see scripts/build-kube-assets). Without them the "real" cases
skip saying why, and FAIL under ``CI=true``. ``SHARDLEASE_REAL_KUBECONFIG=PATH`` points the "real"
cases at any other throw-away kube-apiserver instead (the suite creates namespaces there).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import kubernetes
import pytest

#: kubectl minor versions exercised (binaries from the Cloud SDK's versioned kubectl set).
KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")


@dataclass(frozen=True)
class Server:
    """One API server under test."""

    kind: str  # "dev" or "real"
    kubeconfig: str
    #: The DevServer object (dev only): compaction and other test hooks.
    dev: Any = None
    #: The RealControlPlane (real only, None with SHARDLEASE_REAL_KUBECONFIG): etcd URL, restarts.
    control_plane: Any = None

    @property
    def is_real(self) -> bool:
        return self.kind == "real"


def _real_server(request: pytest.FixtureRequest) -> Server:
    override = os.environ.get("SHARDLEASE_REAL_KUBECONFIG")
    if override:
        return Server("real", override)
    try:
        plane = request.getfixturevalue("kube_apiserver")
    except pytest.FixtureLookupError:
        why = ("the real kube-apiserver fixture (shardlease.controlplane / kube_apiserver) is not "
               "available in this checkout; set SHARDLEASE_REAL_KUBECONFIG or build the assets")
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return Server("real", str(request.getfixturevalue("kube_apiserver_kubeconfig")), control_plane=plane)


@pytest.fixture(scope="session", params=["dev", "real"])
def server(request: pytest.FixtureRequest) -> Server:
    if request.param == "dev":
        return Server("dev", str(request.getfixturevalue("kubeconfig")),
                      request.getfixturevalue("kube_devserver"))
    return _real_server(request)


@pytest.fixture(scope="session")
def api_client(server: Server) -> Iterator[kubernetes.client.ApiClient]:
    """A client for ``server`` from its own Configuration (the library default is never touched)."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=server.kubeconfig, client_configuration=configuration)
    client = kubernetes.client.ApiClient(configuration)
    yield client
    client.close()


@pytest.fixture
def ns(api_client: kubernetes.client.ApiClient) -> str:
    """A fresh namespace, created the way a user would (kube-apiserver needs it to exist). It is
    not deleted afterwards: without kube-controller-manager a real namespace never finishes
    terminating, and each server lives only for the test session."""
    name = "c-" + uuid.uuid4().hex[:10]
    code, body = call(api_client, "POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert code == 201, body
    return name


def auth_headers(api_client: kubernetes.client.ApiClient) -> dict[str, str]:
    """The kubeconfig's bearer token as a header (none for the dev-server)."""
    return {setting["key"]: setting["value"] for setting in api_client.configuration.auth_settings().values()
            if setting["in"] == "header" and setting["value"]}


def call(api_client: kubernetes.client.ApiClient, method: str, path: str, body: Any = None,
         content_type: str = "application/json", accept: str = "application/json",
         query: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
    """A raw request over the official client's connection pool (TLS from the kubeconfig) with its
    credentials; returns (HTTP status, decoded JSON body or None). Raw, so that every status code
    and body is seen exactly as the server sent it."""
    headers = dict(auth_headers(api_client), Accept=accept)
    headers["Content-Type"] = content_type
    url = api_client.configuration.host + path + ("?" + urlencode(query) if query else "")
    data = None if body is None else json.dumps(body).encode()
    response = api_client.rest_client.pool_manager.request(method, url, body=data, headers=headers,
                                                           timeout=30)
    payload = response.data
    return response.status, json.loads(payload) if payload else None


def kubectl_binary(version: str) -> str:
    """The versioned kubectl, or a skip naming what is missing."""
    path = KUBECTL_DIR / f"kubectl.{version}"
    if path.exists():
        return str(path)
    found = shutil.which(f"kubectl.{version}")
    if found is None:
        pytest.skip(f"kubectl {version} not found at {path} or on PATH (kubectl.{version})")
    return found
