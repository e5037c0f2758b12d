"""The e2e tier: shardlease as real pods on a one-node Kubernetes built on this machine.

Not part of the default run (every test here is marked ``e2e``, which pyproject's ``addopts``
deselects); run it with ``python -m pytest tests/e2e -m e2e`` (as root: the kubelet needs it). The
binaries and images are built (cached) by ``scripts/build-kube-assets``, ``scripts/build-node-assets``
and ``scripts/build-images``; ``.ci/run`` builds them first. Without them, or without root, the tests
skip saying what is missing, except under ``CI=true``, where they fail.

The ``local_node`` fixture starts one node for the session (:class:`shardlease.controlplane.node.LocalNode`)
and stops it at the end, checking that no process, mount, cgroup or network interface is left.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardlease.controlplane import ControlPlaneError, find_assets
from shardlease.controlplane.node import BRIDGE, CGROUP_ROOT, LocalNode, find_node_assets

REPO = Path(__file__).resolve().parents[2]


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the e2e tier cannot run: {why}", pytrace=False)
    pytest.skip(why)


def examples_image() -> Path:
    """The shardlease-examples image archive (scripts/build-images; cached, rebuilt when sources change)."""
    if os.geteuid() != 0:
        _missing("building the image and running the node need root")
    proc = subprocess.run([str(REPO / "scripts" / "build-images")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        _missing(f"scripts/build-images failed:\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def image_archive() -> Path:
    return examples_image()


@pytest.fixture(scope="session")
def local_node(image_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    kube, node_assets = find_assets(), find_node_assets()
    if kube is None:
        _missing("no kube-apiserver/etcd: run scripts/build-kube-assets")
    if node_assets is None:
        _missing("no node binaries: run scripts/build-node-assets")
    assert kube is not None and node_assets is not None
    try:
        node = LocalNode(kube, node_assets, [image_archive], work_dir=tmp_path_factory.mktemp("node"))
        node.start()
    except ControlPlaneError as exc:
        pytest.fail(f"the local node did not start: {exc}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()
        assert_nothing_left(node)


def assert_nothing_left(node: LocalNode) -> None:
    """What `scripts/local-cluster down` promises: no process, mount, cgroup or interface of the node."""
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(node.work_dir) in line]
    assert not mounts, f"mounts left under {node.work_dir}: {mounts}"
    assert not Path("/sys/class/net", BRIDGE).exists(), f"bridge {BRIDGE} left behind"
    assert not Path("/sys/fs/cgroup/pids", CGROUP_ROOT).exists(), f"cgroup /{CGROUP_ROOT} left behind"
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(node.work_dir).encode() in (entry / "cmdline").read_bytes():
                    left.append(entry.name)
            except OSError:
                pass
    assert not left, f"processes of the node still running: {left}"
    links = [p for p in Path("/var/log/containers").glob("*") if str(node.work_dir) in os.path.realpath(p)] \
        if Path("/var/log/containers").is_dir() else []
    assert not links, f"kubelet log links left in /var/log/containers: {links}"
    assert not list(Path("/run/containerd/s").glob("*")) if Path("/run/containerd/s").is_dir() else True, \
        "shim sockets left in /run/containerd/s"
