"""Fixtures for the dev-server tests: one shared server for the session, reached only through the
official ``kubernetes`` client (and kubectl in test_kubectl.py). Each test works in its own namespace,
so tests never see each other's objects even though they share the server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from shardlease.devserver import DevServer, Faults


@pytest.fixture(scope="session")
def devserver() -> Iterator[DevServer]:
    with DevServer(faults=True, bookmark_interval=0.5) as srv:
        yield srv


@pytest.fixture(scope="session")
def kubeconfig(devserver: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return devserver.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")


def make_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return make_client(kubeconfig)


@pytest.fixture(scope="session")
def coord(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoordinationV1Api:
    return kubernetes.client.CoordinationV1Api(api_client)


@pytest.fixture(scope="session")
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture
def ns() -> str:
    """A fresh namespace name: any valid name works on the dev-server without creating it."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
def faults(devserver: DevServer) -> Iterator[Faults]:
    devserver.faults.clear()
    yield devserver.faults
    devserver.faults.clear()



@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test also checks that the server logged no internal error while it ran: a handler bug
    answered as a 500 or a dropped connection must not pass unnoticed."""
    caplog.set_level(logging.ERROR, logger="shardlease.devserver")
    yield
    errors = [r for r in caplog.records
              if r.name.startswith("shardlease.devserver") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() + (r.exc_text or "") for r in errors]
