"""pytest fixtures that give your tests a real Kubernetes API server for Leases, like envtest in Go.

Installing shardlease registers this module as a pytest plugin (entry point ``pytest11``), so the
fixtures below are available in every test without any import. They start the embedded dev-server
(``shardlease.devserver.DevServer``) on 127.0.0.1 once per test session, so code that talks to the
Kubernetes API through the official ``kubernetes`` client (your shard handlers, your own elector,
shardlease itself) can be tested against real HTTP, real resourceVersions and real 409 Conflicts,
without a cluster.

Fixtures:

``kube_devserver`` (session)
    The running :class:`~shardlease.devserver.DevServer`: ``.url``, ``.port``, ``.faults``,
    ``.request_counts()``. Stopped when the session ends. Objects persist across tests, so give your
    Leases names (or namespaces) unique to each test.
``kubeconfig`` (session)
    Path (a ``str``, as ``kubernetes.config.load_kube_config`` wants it) of a kubeconfig for that
    server, in a session temp directory. Point subprocesses at it via ``KUBECONFIG``.
``kube_api_client`` (function)
    A ``kubernetes.client.ApiClient`` built from a fresh ``Configuration`` loaded from that
    kubeconfig, closed after the test. The client library's global default configuration is never
    touched, so tests cannot leak settings into each other.
``kube_faults`` (function)
    ``kube_devserver.faults`` (latency, injected errors, per-client partitions), cleared after the
    test so a fault never outlives the test that injected it.
``kube_apiserver`` (session)
    A real etcd + kube-apiserver (:class:`~shardlease.controlplane.RealControlPlane`: ``.url``,
    ``.token``, ``.ca_file``, ``.version``, ``.restart_apiserver()``), started once per session from
    the binaries :func:`~shardlease.controlplane.find_assets` finds: ``$KUBEBUILDER_ASSETS`` (an
    envtest directory works), else the cache of ``scripts/build-kube-assets``. Without them the test
    is skipped, saying how to build them, except under ``CI=true``, where it fails: a CI run must not
    pass by skipping the real server. It has authentication, TLS and RBAC, and Namespaces must exist
    before objects are created in them (``default`` does). Logs: ``.apiserver_log``, ``.etcd_log``.
``kube_apiserver_kubeconfig`` (session)
    Path (``str``) of a kubeconfig for ``kube_apiserver`` (CA embedded, admin bearer token), for
    ``load_kube_config``, kubectl and subprocesses.

Tests that start their own :class:`~shardlease.controlplane.RealControlPlane` (to restart or kill
it) get the binaries from :func:`require_kube_assets`, which skips or fails the same way; one that
needs feature gates (``{"ShardedListAndWatch": True}``) uses :func:`real_control_plane` in a fixture.

Example (``test_my_handler.py``)::

    from kubernetes import client

    def test_lease_round_trip(kube_api_client):
        leases = client.CoordinationV1Api(kube_api_client)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name="my-lock"),
            spec=client.V1LeaseSpec(holder_identity="me", lease_duration_seconds=15),
        )
        leases.create_namespaced_lease("default", body)
        assert leases.read_namespaced_lease("my-lock", "default").spec.holder_identity == "me"

    def test_code_that_loads_kubeconfig_itself(kubeconfig, monkeypatch):
        monkeypatch.setenv("KUBECONFIG", kubeconfig)
        run_my_controller_once()          # calls kubernetes.config.load_kube_config()

    def test_survives_partition(kube_faults, kube_api_client):
        kube_faults.partition("replica-1")  # requests from that client now fail with 503
        ...

    def test_on_the_real_thing(kube_apiserver_kubeconfig):
        api = client.CoordinationV1Api(config.new_client_from_config(kube_apiserver_kubeconfig))
        ...

If the plugin is not active (shardlease not installed, or ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set),
load it explicitly with ``pytest -p shardlease.testing`` or ``pytest_plugins = ["shardlease.testing"]``
in your top-level ``conftest.py``; doing so while the entry point is also active is harmless.

This module is imported by every pytest run in an environment where shardlease is installed, so it
imports nothing but pytest at import time: the dev-server, the control plane and the
``kubernetes`` client are imported inside the fixtures, and a broken or missing dependency fails
only the tests that use them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only, never imported at run time
    from kubernetes.client import ApiClient

    from shardlease.controlplane import RealControlPlane
    from shardlease.devserver import DevServer
    from shardlease.devserver.faults import Faults

__all__ = ["kube_devserver", "kubeconfig", "kube_api_client", "kube_faults", "kube_apiserver",
           "kube_apiserver_kubeconfig"]

#: The names this module can be registered under: the entry-point name, and the module name that
#: ``-p shardlease.testing`` / ``pytest_plugins = [...]`` use.
_PLUGIN_NAMES = ("shardlease", "shardlease.testing")


def pytest_plugin_registered(plugin: object, plugin_name: str, manager: Any) -> None:
    """Make loading the plugin twice (entry point and ``-p``/``pytest_plugins``) a no-op.

    pluggy refuses to register one module object under two names ("Plugin already registered
    under a different name") and pytest turns that into a crash at start-up. Whichever name
    registers us first, block the other one, so the second registration is skipped instead.
    """
    if plugin is not sys.modules[__name__] or plugin_name not in _PLUGIN_NAMES:
        return
    for other in _PLUGIN_NAMES:
        if other != plugin_name and manager.get_plugin(other) is None and not manager.is_blocked(other):
            manager.set_blocked(other)


@pytest.fixture(scope="session")
def kube_devserver() -> Iterator[DevServer]:
    """One dev-server for the whole session; started on first use, stopped at the end."""
    from shardlease.devserver import DevServer

    with DevServer(host="127.0.0.1", port=0, faults=True) as server:
        yield server


@pytest.fixture(scope="session")
def kubeconfig(kube_devserver: DevServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig file for ``kube_devserver``, usable by ``load_kube_config`` and kubectl."""
    path = tmp_path_factory.mktemp("shardlease-kube") / "kubeconfig"
    kube_devserver.write_kubeconfig(path)
    return str(path)


@pytest.fixture
def kube_api_client(kubeconfig: str) -> Iterator[ApiClient]:
    """An ``ApiClient`` for the dev-server, from a fresh ``Configuration``; closed after the test."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def kube_faults(kube_devserver: DevServer) -> Iterator[Faults]:
    """The dev-server's fault injection knobs, reset to normal service after the test."""
    faults = kube_devserver.faults
    try:
        yield faults
    finally:
        faults.clear()


#: How to get the binaries, for skip and failure messages.
BUILD_ASSETS_HINT = ("build them with `scripts/build-kube-assets` (needs Go >= 1.26; prints the "
                     "directory) and set KUBEBUILDER_ASSETS to that directory, or point "
                     "KUBEBUILDER_ASSETS at an envtest assets directory")


def require_kube_assets() -> Path:
    """The kube-apiserver/etcd assets directory (see ``find_assets``); when there is none, skip the
    calling test saying how to build them, or fail it under ``CI=true``, since CI must prove the real
    server rather than skip it. For tests that start their own control plane."""
    from shardlease.controlplane import find_assets

    assets = find_assets()
    if assets is None:
        why = f"no kube-apiserver/etcd binaries found for the real-server tests; {BUILD_ASSETS_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return assets


@contextlib.contextmanager
def real_control_plane(work_dir: Path, *,
                       feature_gates: Mapping[str, bool] | None = None) -> Iterator[RealControlPlane]:
    """A started real etcd + kube-apiserver for a fixture of any scope, stopped on exit; the binaries
    come from :func:`require_kube_assets` (skip, or fail under ``CI=true``), and a failed start fails
    the test with the reason. ``feature_gates`` as kube-apiserver's ``--feature-gates``, e.g.
    ``{"ShardedListAndWatch": True}``: a gate is fixed for a server's life, so a test that needs one
    on starts its own plane with this (about 3 s) rather than changing the session's."""
    from shardlease.controlplane import ControlPlaneError, RealControlPlane

    assets = require_kube_assets()
    try:
        plane = RealControlPlane(assets, work_dir=work_dir, feature_gates=feature_gates).start()
    except ControlPlaneError as exc:
        pytest.fail(f"the real kube-apiserver did not start: {exc}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealControlPlane]:
    """One real etcd + kube-apiserver for the whole session (see :func:`require_kube_assets`)."""
    with real_control_plane(tmp_path_factory.mktemp("kube-apiserver")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_apiserver_kubeconfig(kube_apiserver: RealControlPlane,
                              tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig file for ``kube_apiserver``, usable by ``load_kube_config`` and kubectl."""
    return kube_apiserver.write_kubeconfig(tmp_path_factory.mktemp("kube-apiserver-config") / "kubeconfig")
