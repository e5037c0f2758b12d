"""The chaos engine on the real server: kube-apiserver + etcd, the replicas behind toxiproxy.

The planner's real-server mode is checked on its own first (which faults it may draw, and that the
dev-server-only ones are refused with a message naming the fix), then the relay itself (each toxic
really reaches a client of kube-apiserver), then one short seeded run (``test_chaos_run_real``, 30 s
of faults) that judges the runtime with the same checks as the dev-server run: the object controller
workload with the ``ShardedListAndWatch`` gate on, so kube-apiserver filters each replica's stream. Its seed is the
session's (printed in the terminal summary; repeat with ``SHARDLEASE_CHAOS_SEED=<seed> pytest
tests/chaos``). Without the kube-apiserver binaries the real-server tests skip saying how to build
them; under ``CI=true`` they fail.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shardlease.harness.chaos import (
    DEV_ONLY_KINDS,
    FAULT_KINDS,
    REAL_FAULT_KINDS,
    ChaosConfig,
    ChaosRun,
    ProxyFaults,
    fault_counts,
    plan_faults,
    recheck_objects,
)
from shardlease.harness.chaos.workdir import judge_work_dir
from shardlease.testing import require_kube_assets

from .conftest import SUMMARY, assert_work_was_measured, missing_runtime

#: Fault window of the default real-server run (about 70 s in all: a kube-apiserver restart holds the
#: schedule up for seconds, and the final reconcile comes on top of the recovery).
REAL_WINDOW = 30.0
#: Mean gap between its faults: the plans of 1,500 random seeds hold 13 or more (at the default 2 s,
#: as few as 4, and the run below asserts at least 10).
REAL_MEAN_GAP = 1.0
PROCESS_KINDS = {"kill", "terminate", "pause", "restart", "scale_up"}


# ---------------------------------------------------------------- the planner, real-server mode


def test_real_plans_use_only_faults_the_real_server_can_take() -> None:
    seen: set[str] = set()
    for seed in range(12):
        config = ChaosConfig(seed=seed, duration=REAL_WINDOW, mean_gap=REAL_MEAN_GAP, devserver="real")
        counts = fault_counts(plan_faults(config))
        assert not set(counts) & set(DEV_ONLY_KINDS), counts
        assert "apiserver_kill" not in counts, "a kill of a second apiserver without one"
        seen |= set(counts)
    wanted = (set(FAULT_KINDS) - set(DEV_ONLY_KINDS)) | (set(REAL_FAULT_KINDS) - {"apiserver_kill"})
    assert seen == wanted, wanted - seen
    ha = set().union(*(fault_counts(plan_faults(ChaosConfig(seed=s, duration=90.0, devserver="real",
                                                            apiservers=2))) for s in range(6)))
    assert "apiserver_kill" in ha


def test_real_network_faults_never_overlap_and_always_end() -> None:
    for seed in range(20):
        plan = plan_faults(ChaosConfig(seed=seed, duration=120.0, devserver="real", apiservers=2))
        on: str | None = None
        killed = False
        for fault in plan:
            if fault.kind in ("resets", "timeouts", "outage"):
                assert on is None, f"seed {seed}: {fault.describe()} while {on} is on"
                on = fault.kind
            elif fault.kind in ("resets_end", "timeouts_end", "outage_end"):
                assert on == fault.kind.removesuffix("_end"), fault.describe()
                on = None
            elif fault.kind == "apiserver_kill":
                assert not killed
                killed = True
            elif fault.kind == "apiserver_start":
                assert killed
                killed = False
            if fault.kind == "outage":
                assert fault.params["for"] > ChaosConfig(seed=1).lease, "an outage shorter than the lease"
        assert on is None and not killed, f"seed {seed}: a network fault or apiserver kill never ended"


def test_dev_plans_are_unchanged_by_the_real_mode() -> None:
    """The dev-server plan of a seed must not move because real-server kinds exist (published
    seeds stay reproducible)."""
    plan = plan_faults(ChaosConfig(seed=20261121, duration=75.0))
    assert not set(fault_counts(plan)) & set(REAL_FAULT_KINDS)
    assert plan == plan_faults(ChaosConfig(seed=20261121, duration=75.0, devserver="process"))


def test_wrong_fault_mixes_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"\['errors', 'partition'\].*resets / timeouts / outage"):
        ChaosConfig(seed=1, devserver="real", weights={"errors": 1.0, "partition": 1.0, "kill": 1.0})
    with pytest.raises(ValueError, match="pass devserver='real'"):
        ChaosConfig(seed=1, weights={"outage": 1.0})
    with pytest.raises(ValueError, match="apiservers=2"):
        ChaosConfig(seed=1, devserver="real", weights={"apiserver_kill": 1.0})
    with pytest.raises(ValueError, match="apiservers"):
        ChaosConfig(seed=1, apiservers=2)


# ---------------------------------------------------------------- the relay


def test_relay_toxics_reach_a_kube_apiserver_client(tmp_path: Path) -> None:
    """Each fault the real mode injects is visible to a client of kube-apiserver going through the
    relay, and ``clear`` gives normal service back: otherwise the run below would prove nothing.
    (A control plane of its own, not the session's: this module checks that it leaves no process.)"""
    from kubernetes.client import CoordinationV1Api

    from shardlease.client.connect import load_api_client
    from shardlease.controlplane import RealControlPlane, Toxiproxy

    assets = require_kube_assets()
    with RealControlPlane(assets, work_dir=tmp_path / "cp") as plane, \
            Toxiproxy(assets, tmp_path) as toxi:
        proxy = toxi.proxy("kube-apiserver", upstream=plane.url)
        config = proxy.write_kubeconfig(plane, tmp_path / "kubeconfig")
        assert proxy.url != plane.url and f'"server": "{proxy.url}"' in Path(config).read_text()
        leases = CoordinationV1Api(load_api_client(kubeconfig=config))
        faults = ProxyFaults(proxy, plane)

        def takes() -> float:
            began = time.monotonic()
            leases.list_namespaced_lease("default", _request_timeout=5)
            return time.monotonic() - began

        takes()
        faults.set_latency(0.4)
        assert takes() >= 0.4
        faults.set_latency(0.0)
        assert takes() < 0.4
        pairs: list[tuple[Callable[[], None], Callable[[], None]]] = [
            (lambda: faults.resets(1.0), lambda: faults.end("resets")),
            (lambda: faults.outage(True), lambda: faults.outage(False))]
        for start, end in pairs:
            start()
            with pytest.raises(Exception):  # urllib3 wraps resets and refusals variously
                leases.list_namespaced_lease("default", _request_timeout=3)
            end()
            takes()
        faults.set_latency(0.3)
        faults.outage(True)          # toxics are never touched on a disabled relay ...
        faults.set_latency(0.0)
        faults.outage(False)         # ... and the wanted state is restored when it comes back
        assert proxy.toxics() == [] and takes() < 0.3
        faults.timeouts(300)
        faults.clear()
        assert proxy.toxics() == [] and proxy.enabled
        takes()


# ---------------------------------------------------------------- the run


@pytest.mark.slow  # about 70 s: in the slower tier .ci/run runs after the default one
def test_chaos_run_real(chaos_seed: int, request: pytest.FixtureRequest) -> None:
    """REAL_WINDOW seconds of faults against 3..5 replicas on kube-apiserver (``ShardedListAndWatch``
    on) through toxiproxy: latency, resets, black holes, an outage longer than the lease,
    kube-apiserver restarts, SIGKILL, SIGTERM, SIGSTOP, restarts, scale-ups, reshards, operator
    deletes and overwrites of shard Leases and duplicate identities, while the replicas reconcile
    ConfigMaps a user keeps changing. Same checks as ``test_chaos_run``."""
    reason = missing_runtime()
    if reason:
        pytest.skip(reason)
    assets = require_kube_assets()
    config = ChaosConfig(seed=chaos_seed, duration=REAL_WINDOW, mean_gap=REAL_MEAN_GAP, devserver="real",
                         assets=str(assets), sharded_watch=True)
    messages: list[str] = []
    work_dir = Path(tempfile.mkdtemp(prefix=f"shardlease-chaos-real-{chaos_seed}-"))
    report = ChaosRun(config, work_dir, progress=messages.append).run()
    SUMMARY.append("real server: " + report.summary())
    for key, value in report.figures.items():
        if isinstance(value, (int, float)) and not key.startswith("window_"):
            request.node.user_properties.append((key, value))
    print(report.summary())
    assert report.ok, (f"repeat with: SHARDLEASE_CHAOS_SEED={chaos_seed} pytest tests/chaos -k real\n"
                       + report.render_failures() + "\n\nprogress:\n" + "\n".join(messages[-80:]))
    applied = report.counts()
    assert sum(applied.values()) >= 10, applied
    assert set(applied) & (set(REAL_FAULT_KINDS) | {"latency"}), f"no network fault applied: {applied}"
    assert set(applied) & PROCESS_KINDS, f"no process fault applied: {applied}"
    assert not set(applied) & set(DEV_ONLY_KINDS), applied
    routes = report.figures["replica_servers"]
    assert routes and set(routes.values()) == {report.figures["proxy_url"]}, routes
    assert_work_was_measured(report.figures)
    # The same verdict from the run's files alone (journal, fault log, plan).
    assert recheck_objects(work_dir) == [], recheck_objects(work_dir)[:5]
    verdict = judge_work_dir(work_dir)  # every check the files decide, by the standalone command
    assert verdict.ok, verdict.failures[:3]
    assert verdict.figures["writes"] == report.figures["writes"], (verdict.figures, report.figures)
    shutil.rmtree(work_dir, ignore_errors=True)


@pytest.mark.slow  # about 60 s
def test_chaos_run_real_with_fencing(chaos_seed: int, request: pytest.FixtureRequest) -> None:
    """The object workload on kube-apiserver with ``shardlease fencing`` installed for its ConfigMaps, under
    mostly SIGSTOP faults and a busy user, with 0.5 s of work between each write's ``valid()`` check and its
    request (so a frozen replica is nearly always inside one: with 0.1 s and half as many pauses, one seed in
    a few saw no stale write reach the API server at all), written as unconditional patches (a conditional PUT
    would mostly get a 409 first, since the new holder rewrites every object of its shard at once): replicas
    frozen inside a write resume after their shard moved, and the API server refuses those writes (counted as
    outcome ``fenced``, more than none), while every check of the plain run holds: no accepted write carries a
    fence below the one the object already had (the object fence check), no unexcused overlap. The recovery
    bounds get 20 s of noise allowance instead of 6: the delayed writes and the admission checks slow the
    final reconciliation on a shared 2-core machine, and timing is not this test's point."""
    reason = missing_runtime()
    if reason:
        pytest.skip(reason)
    assets = require_kube_assets()
    config = ChaosConfig(seed=chaos_seed, duration=REAL_WINDOW, mean_gap=REAL_MEAN_GAP, devserver="real",
                         assets=str(assets), fencing=True, objects=32, change_rate=20.0, write_delay=0.5,
                         patch_writes=True, noise_allowance=20.0,
                         weights={"pause": 8.0, "kill": 0.5, "restart": 0.5, "reshard": 0.5})
    messages: list[str] = []
    work_dir = Path(tempfile.mkdtemp(prefix=f"shardlease-chaos-fenced-{chaos_seed}-"))
    report = ChaosRun(config, work_dir, progress=messages.append).run()
    SUMMARY.append("real server, fencing: " + report.summary())
    print(report.summary(), report.figures.get("write_outcomes"))
    assert report.ok, (f"repeat with: SHARDLEASE_CHAOS_SEED={chaos_seed} pytest tests/chaos -k fencing\n"
                       + report.render_failures() + "\n\nprogress:\n" + "\n".join(messages[-80:]))
    assert report.counts().get("pause", 0) >= 5, report.counts()
    assert report.figures["refused_by_api_server"] > 0, report.figures["write_outcomes"]
    shutil.rmtree(work_dir, ignore_errors=True)
