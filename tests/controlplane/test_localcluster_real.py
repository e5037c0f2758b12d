"""``LocalCluster(devserver="real")``: replica processes of ``shardlease run`` share out the shards on
a real kube-apiserver, in a namespace the cluster creates, and nothing survives ``stop()``."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardlease.harness.localcluster import LocalCluster, Timings, runtime_missing
from shardlease.testing import require_kube_assets

from .helpers import wait_gone


def test_replicas_settle_on_the_real_server(tmp_path: Path) -> None:
    missing = runtime_missing()
    if missing:
        pytest.skip(missing)
    assets = require_kube_assets()
    cluster = LocalCluster(devserver="real", assets=assets, group="cpreal", shards=4,
                           namespace="cp-real", work_dir=tmp_path / "lc",
                           timings=Timings(lease_duration=4, renew_deadline=2.4, retry_period=0.5))
    with cluster:
        cluster.start(replicas=2)
        assert cluster.faults is None and cluster.control_plane is not None
        assert cluster.url.startswith("https://")
        cluster.wait_working(timeout=45)
        plane_pids = [cluster.control_plane.etcd_pid, cluster.control_plane.apiserver_pid]
        with pytest.raises(RuntimeError, match="real kube-apiserver has none"):
            cluster.request_counts()
    cluster.check_journal()
    assert cluster.leftover_processes() == []
    assert wait_gone([pid for pid in plane_pids if pid is not None], 5) == []


def test_assets_need_the_real_server() -> None:
    with pytest.raises(ValueError, match="assets= is for devserver='real'"):
        LocalCluster(devserver="thread", assets="/somewhere")
