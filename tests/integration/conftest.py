"""Shared set-up for the integration tests: real replica processes against an in-process dev-server,
and (for the tests marked :data:`BOTH_SERVERS`) against a real etcd + kube-apiserver as well.

Timings are scaled down (lease 2 s, renew deadline 1.2 s, retry 0.3 s) so that a failover takes
seconds, and every bound asserted is generous: the machine is small and shared, and what these tests
prove is ordering (nobody works on a shard while someone else still may) rather than speed. Speed is
*measured* and printed in the terminal summary ("shardlease integration figures").

Every test ends with :func:`finish`, which stops the cluster gracefully and then checks, over the
whole journal, that no two replicas ever worked on one shard at the same time and that fencing tokens
only grew -- and that no process was left behind.

Servers: a test decorated with :data:`BOTH_SERVERS` runs twice, ids ``dev`` (a fresh in-process
dev-server per cluster, as every other test) and ``real`` (kube-apiserver 1.36 on etcd, the session's
``kube_apiserver`` fixture: started once, shared by every such test, each cluster with a group name of
its own so they cannot see each other's Leases). Without the binaries the ``real`` cases skip saying
how to build them; under ``CI=true`` they fail.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shardlease.harness.journal import Entry, Overlap
from shardlease.harness.localcluster import LocalCluster, Timings, child_processes, runtime_missing

TIMINGS = Timings(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3)
GROUP = "it"
SHARDS = 12
#: Seconds per unit of journaled work: short, so a unit never spans a whole handoff.
WORK_UNIT = "0.05"
#: Generous bound for a group of fresh processes to start, join and settle on this machine.
SETTLE_TIMEOUT = 45.0

#: Parametrise a test over both servers; the test must take ``make_cluster`` (or ``server``).
BOTH_SERVERS = pytest.mark.parametrize("server", ["dev", "real"], indirect=True)
#: The same, for a long scenario whose dev-server run adds little to the real one in the default run:
#: the dev-server run goes to the slower tier (`pytest -m slow`, which .ci/run runs too).
BOTH_SERVERS_DEV_SLOW = pytest.mark.parametrize(
    "server", [pytest.param("dev", marks=pytest.mark.slow), "real"], indirect=True)
_GROUP_SERIAL = itertools.count()

#: (test, figure, value) rows for the terminal summary.
FIGURES: list[tuple[str, str, str]] = []


@pytest.fixture
def server(request: pytest.FixtureRequest) -> str:
    """Which API server the test's clusters use: ``"dev"`` unless parametrised by
    :data:`BOTH_SERVERS`."""
    return str(getattr(request, "param", "dev"))


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest,
                 server: str) -> Iterator[Callable[..., LocalCluster]]:
    """A factory of started :class:`LocalCluster` s; all are stopped (and checked for leftover
    processes) at teardown even when the test failed half-way. On the ``real`` server they share the
    session's kube-apiserver, each under a group name of its own."""
    reason = runtime_missing()
    if reason:
        pytest.skip(reason)
    placement: dict[str, Any] = {}
    if server == "real":
        # Skips (locally) or fails (CI=true) without the binaries, through the plugin's fixture.
        placement = {"devserver": "real", "control_plane": request.getfixturevalue("kube_apiserver")}
    clusters: list[LocalCluster] = []

    def make(replicas: int = 3, *, shards: int = SHARDS, timings: Timings = TIMINGS,
             env: dict[str, str] | None = None, **kwargs: Any) -> LocalCluster:
        group = GROUP if server == "dev" else f"{GROUP}{next(_GROUP_SERIAL)}"
        cluster = LocalCluster(
            group=group, shards=shards, timings=timings, work_dir=tmp_path / f"cluster{len(clusters)}",
            env={"SHARDLEASE_JOURNAL_WORK": WORK_UNIT, **(env or {})}, **placement, **kwargs)
        clusters.append(cluster)
        cluster.start(replicas=replicas)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop(grace=5.0)
        leftovers = cluster.leftover_processes()
        assert not leftovers, f"processes left behind by {cluster.work_dir}: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def no_child_processes_at_the_end() -> Iterator[None]:
    """The final check the suite promises: nothing it started is still running."""
    before = set(child_processes())
    yield
    left = set(child_processes()) - before
    assert not left, f"integration tests left child processes running: {sorted(left)}"


def finish(cluster: LocalCluster, excuse: Callable[[Overlap], bool] | None = None) -> list[Entry]:
    """Stop the cluster gracefully, then check the whole journal (exclusion and fencing) and that no
    process is left. Returns the journal for further measurements. ``excuse`` accepts overlaps a
    scenario causes on purpose (see the SIGSTOP test); everything else must be clean."""
    cluster.stop(grace=10.0)
    assert not cluster.leftover_processes(), "replica processes survived stop()"
    # A replica the test did not SIGKILL must have exited 0 on SIGTERM within the grace period
    # (stop() SIGKILLs stragglers, which then show up here as -9).
    unclean = [(r.identity, r.returncode) for r in cluster.replicas
               if r.returncode != 0 and not any(s == "SIGKILL" for _, s in r.signals)]
    entries = cluster.check_journal(excuse=excuse)
    assert not unclean, f"replicas exited uncleanly: {unclean}\n{cluster.diagnostics()}"
    return entries


def balanced_cap(shards: int, members: int) -> int:
    return math.ceil(shards / members)


def record_figure(request: pytest.FixtureRequest, name: str, value: float, unit: str = "s") -> None:
    """Keep a measured figure for the terminal summary and the junit report."""
    FIGURES.append((request.node.name, name, f"{value:.3f} {unit}"))
    request.node.user_properties.append((name, value))
    print(f"{name}: {value:.3f} {unit}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("shardlease integration figures")
    for test, name, value in FIGURES:
        terminalreporter.write_line(f"{test}: {name} = {value}")


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
