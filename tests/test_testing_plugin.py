"""The ``shardlease.testing`` pytest plugin, used the way a user's test suite uses it.

Each test writes a small user test file and runs pytest on it in a subprocess (``pytester``), so the
plugin is loaded exactly as in a user's project: through the ``pytest11`` entry point when shardlease
is installed, else explicitly with ``-p shardlease.testing``.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]

USER_TESTS = '''
from kubernetes import client, config


def test_create_and_read_lease(kube_api_client):
    leases = client.CoordinationV1Api(kube_api_client)
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name="user-lock", labels={"app": "mine"}),
        spec=client.V1LeaseSpec(holder_identity="me", lease_duration_seconds=15),
    )
    created = leases.create_namespaced_lease("default", body)
    assert created.metadata.resource_version

    got = leases.read_namespaced_lease("user-lock", "default")
    assert got.spec.holder_identity == "me"
    assert got.metadata.labels == {"app": "mine"}
    assert got.metadata.resource_version == created.metadata.resource_version


def test_state_and_server_are_shared_by_the_session(kubeconfig, kube_devserver):
    # A client built by the user's own code from the kubeconfig sees the Lease made above.
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease("user-lock", "default")
    assert lease.spec.holder_identity == "me"
    assert configuration.host == kube_devserver.url
    assert kube_devserver.request_counts()[("create", "leases")] == 1


def test_default_client_configuration_is_untouched(kube_api_client):
    # The fixture must not point the library-wide default at the dev-server.
    assert client.Configuration.get_default_copy().host != kube_api_client.configuration.host
'''

FAULT_TESTS = '''
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def lease_api(api_client):
    api_client.user_agent = "victim"  # the dev-server names clients by User-Agent
    return client.CoordinationV1Api(api_client)


def test_1_partition_fails_requests(kube_faults, kube_api_client):
    kube_faults.partition("victim")
    with pytest.raises(ApiException) as failure:
        lease_api(kube_api_client).list_namespaced_lease("default")
    assert failure.value.status == 503


def test_2_fault_was_cleared_after_the_test(kube_api_client):
    assert lease_api(kube_api_client).list_namespaced_lease("default").items == []
'''


def entry_point_active() -> bool:
    """True when pytest would load ``shardlease.testing`` by itself (installed, autoload on)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(
        ep.name == "shardlease" and ep.value == "shardlease.testing"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the repo importable in the pytest subprocess even when shardlease is not installed."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)


def plugin_args() -> list[str]:
    return [] if entry_point_active() else ["-p", "shardlease.testing"]


def test_user_tests_create_and_read_a_lease(pytester: pytest.Pytester, user_env: None) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)


def test_kube_faults_are_reset_between_tests(pytester: pytest.Pytester, user_env: None) -> None:
    pytester.makepyfile(test_faults=FAULT_TESTS)
    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("explicit", ["-p", "conftest"])
def test_loading_twice_via_entry_point_and_explicitly_is_harmless(
    pytester: pytest.Pytester, user_env: None, monkeypatch: pytest.MonkeyPatch, explicit: str
) -> None:
    # Make the entry point active whether or not shardlease is installed: a minimal distribution on
    # PYTHONPATH that declares the same pytest11 entry point as pyproject.toml.
    site = pytester.mkdir("fake-site")
    dist = site / "shardlease_entrypoint-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shardlease-entrypoint\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nshardlease = shardlease.testing\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(site), os.environ["PYTHONPATH"])))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)

    args = ["-p", "no:cacheprovider", "-v"]
    if explicit == "-p":
        args += ["-p", "shardlease.testing"]
    else:
        pytester.makeconftest('pytest_plugins = ["shardlease.testing"]\n')
    pytester.makepyfile(
        test_once='''
import sys

def test_registered_exactly_once(request):
    module = sys.modules["shardlease.testing"]
    names = [name for name, plugin in request.config.pluginmanager.list_name_plugin() if plugin is module]
    assert len(names) == 1, names

def test_fixtures_work(kube_devserver):
    assert kube_devserver.url.startswith("http://127.0.0.1:")
'''
    )
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2)


def test_plugin_import_is_cheap_and_lazy() -> None:
    # Every pytest run in an environment with shardlease installed imports this module: it must not
    # drag in the kubernetes client or the dev-server (slow, and a failure there would break runs).
    code = (
        "import sys, shardlease.testing; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes' "
        "or m.startswith('shardlease.devserver')); print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
