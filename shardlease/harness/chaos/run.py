"""One chaos run end to end: start the group, apply the plan in real time, recover, judge.

:class:`ChaosRun` starts a :class:`~shardlease.harness.localcluster.LocalCluster` whose replicas run
the journaling (or object) handler, applies the plan while writing the fault log
(``<work_dir>/faults.jsonl``, next to the ``journal`` directory), then stops the faults, measures how
the group recovers and runs every check. The parts it is made of hold one concern each:
:class:`~shardlease.harness.chaos.faults.FaultInjector`,
:class:`~shardlease.harness.chaos.recovery.RecoveryWait` and
:class:`~shardlease.harness.chaos.verdict.RunChecks`, over the shared
:class:`~shardlease.harness.chaos.state.RunState`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

from shardlease.harness.chaos.checkers import scan_log
from shardlease.harness.chaos.faults import FaultInjector
from shardlease.harness.chaos.handlers import (
    DRAINING_HANDLER,
    ENV_INNER,
    ENV_LOADS,
    LOADED_HANDLER,
    LOADS_FILE,
    OBJECT_HANDLER,
    write_loads,
)
from shardlease.harness.chaos.idlewatch import IdleHolderWatch
from shardlease.harness.chaos.plan import convergence_bound
from shardlease.harness.chaos.proxy import ProxyFaults
from shardlease.harness.chaos.recovery import RecoveryWait, Unrecovered
from shardlease.harness.chaos.report import ChaosReport
from shardlease.harness.chaos.verdict import RunChecks
from shardlease.harness.localcluster import DEFAULT_HANDLER, LocalCluster, child_processes
from shardlease.harness.objectjournal import ENV_DRAIN, ENV_NAMESPACE, ENV_PATCH, ENV_WRITE_DELAY, UserWriter


class _ErrorCollector(logging.Handler):
    """Keeps ERROR records of the in-process dev-server (and asyncio) while a run lasts: faults in the
    test harness itself, reported next to the results rather than lost in pytest's captured stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.messages.append(text)


class ChaosRun(FaultInjector, RecoveryWait, RunChecks):
    """Run one :class:`ChaosConfig` end to end and return a :class:`ChaosReport`.

    ``progress`` receives one-line status messages (the bench prints them; the test keeps them for
    the failure report). The cluster is always stopped, even when the run itself raises.
    """

    def run(self) -> ChaosReport:
        config = self.config
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "plan.json").write_text(json.dumps(
            {"config": config.describe(), "plan": [asdict(f) for f in self.plan]}, indent=1, default=str))
        report = ChaosReport(config, self.work_dir, self.plan)
        before = set(child_processes())
        handler = config.handler
        if handler == DEFAULT_HANDLER:
            handler = OBJECT_HANDLER if config.workload == "objects" else \
                DRAINING_HANDLER if config.drain_delay > 0 else DEFAULT_HANDLER
        cluster = LocalCluster(
            handler=handler, group=config.group, shards=config.shards, timings=config.timings,
            work_dir=self.work_dir, devserver=config.devserver, faults=config.devserver != "real",
            assets=config.assets if config.devserver == "real" else None,
            feature_gates={"ShardedListAndWatch": True} if config.sharded_watch else None,
            env={"SHARDLEASE_JOURNAL_WORK": f"{config.work_unit:g}", ENV_DRAIN: f"{config.drain_delay:g}",
                 ENV_WRITE_DELAY: f"{config.write_delay:g}", ENV_PATCH: "1" if config.patch_writes else "0"})
        if config.load_aware:
            # Every shard costs 1 until a load_shift fault makes some hot; the replicas rebalance by
            # load at a period of a lease duration (docs/load.md).
            write_loads(self.work_dir / LOADS_FILE, [1.0] * (2 * config.shards))
            cluster.handler = LOADED_HANDLER
            cluster.env.update({ENV_LOADS: str(self.work_dir / LOADS_FILE), ENV_INNER: handler})
            cluster.extra_args += ["--rebalance-period", f"{config.lease:g}", "--load-half-life", "0.5"]
        if config.max_write_rate is not None:
            cluster.extra_args += ["--max-write-rate", f"{config.max_write_rate:g}"]
        cluster.env[ENV_NAMESPACE] = cluster.namespace
        self.cluster = cluster
        collector = _ErrorCollector()
        watched = [logging.getLogger(name) for name in ("shardlease.devserver", "asyncio")]
        for logger in watched:
            logger.addHandler(collector)
        bound = convergence_bound(config)
        report.figures["bound_s"] = round(bound["asserted"], 3)
        report.figures["bound_derived_s"] = round(bound["derived"], 3)
        outcome: BaseException | None = None
        watch: IdleHolderWatch | None = None
        try:
            started = time.monotonic()
            cluster.start()
            if config.devserver == "real":
                self._start_relay(report)
            if config.fencing:
                from shardlease.runtime.fencing import install_fencing

                # Each reshard fault installs for its new count first (docs/fencing.md, "Resharding").
                install_fencing(config.group, "v1/configmaps", shards=config.shards, namespace=cluster.namespace,
                                api_client=cluster.api_client())
            if config.workload == "objects":
                from kubernetes.client import CoreV1Api

                self.user = UserWriter(CoreV1Api(cluster.api_client()), cluster.namespace, cluster.journal_dir,
                                       seed=config.seed, rate=config.change_rate)
                self.user.create(config.objects)
            for i in range(config.initial_replicas):
                self._add_replica(f"replica-{i}")
            cluster.wait_working(timeout=60)
            report.figures["settle_s"] = round(time.monotonic() - started, 3)
            self.progress(f"settled with {config.initial_replicas} replicas; {len(self.plan)} planned "
                          f"events over {config.duration:g} s")
            self._window_start = time.monotonic()
            report.figures["window_start"] = self._window_start
            watch = IdleHolderWatch(self, limit=config.drain_delay + 2.0).start()
            if self.user is not None:
                self.user.marker("window_start")
                self.user.start()
            for fault in self.plan:
                due = self._window_start + fault.at
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._apply(fault)
                self.progress(fault.describe())
            remaining = self._window_start + config.duration - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            self._quiesce()
            cleared = time.monotonic()
            if self.user is not None:
                self.user.stop()
                self.user.marker("faults_cleared", at=cleared)
            self._end_duplicates()
            self.failures.extend(watch.stop())
            report.figures["idle_holder_samples"] = watch.samples
            report.figures["idle_holder_samples_failed"] = watch.skipped
            watch = None
            report.figures["window_end"] = cleared
            report.figures["window_overrun_s"] = round(cleared - self._window_start - config.duration, 3)
            since = max(cleared, self._wait_joined(timeout=60))
            report.figures["recovery_clock_start_s"] = round(since - cleared, 3)
            if self.user is not None:
                # The change every object must reach: made once the faults are over and every process
                # is up, so the final holders have something to reconcile after the last move.
                self.user.change_all(timeout=30.0)
                self.user.marker("final_changes", since=since)
                report.figures["final_changes_s"] = round(time.monotonic() - since, 3)
            stability = config.stability if config.stability is not None else config.lease
            try:
                times = self._wait_recovered(since, bound["asserted"], stability)
            finally:
                if self.user is not None:
                    self._wait_reconciled(report, since, bound["asserted"] + config.object_allowance)
            report.figures.update({k: round(v, 3) for k, v in times.items()})
            if config.max_write_rate is not None and config.devserver != "real":
                self._measure_write_budget(report, seconds=2 * config.lease)
            self.progress(f"recovered: balanced after {times['balanced_after_s']:.2f} s, as assigned "
                          f"and stable after {times['assigned_after_s']:.2f} s (bound "
                          f"{bound['asserted']:.1f} s)")
        except Unrecovered as exc:
            report.failures.append(str(exc))
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            if watch is not None:  # the run failed half-way: stop sampling before the cluster goes
                watch.stop()
            if self.user is not None:
                self.user.stop()
            grace = 15.0 if outcome is None else 3.0
            stopped = time.monotonic()
            try:
                cluster.stop(grace=grace)
            finally:
                report.figures["stop_s"] = round(time.monotonic() - stopped, 3)
                if self._toxiproxy is not None:
                    self._toxiproxy.stop()
                report.applied = self._applied
                report.failures[:0] = self.failures
                for logger in watched:
                    logger.removeHandler(collector)
                report.infrastructure = list(collector.messages) + self.infrastructure
                server_log = cluster.log_dir / "dev-server.log"
                if server_log.exists():  # devserver="process": its errors are in its own log
                    report.infrastructure += scan_log(server_log.read_text(errors="replace"))
        self._check_routes(report)
        self._check_processes(report, before)
        self._check_logs(report)
        self._check_journal(report)
        (self.work_dir / "chaos-report.json").write_text(json.dumps(report.to_json(), indent=1,
                                                                    default=str))
        return report

    def _measure_write_budget(self, report: ChaosReport, seconds: float) -> None:
        """The Lease writes the dev-server served for ``seconds`` once the group is stable, against what
        the replicas' write budgets allow for the shards each holds (``figures["write_budget"]``).

        Each replica may write ``max_write_rate`` a second (or what its Leases cost without a budget, if
        that is less), or, for a replica holding more shards than
        the budget can renew in time, its plan's pace (:class:`~shardlease.core.writebudget.WriteBudget`:
        every held shard renewed about every ``renew_deadline - retry_period``). More than that, by 10 %
        plus two writes, is a failure: the budget did not hold. The slack is for writes no budget
        spaces (acquisitions, the group Lease's load snapshot) that may fall into the window; a budget
        that does not work costs the unbudgeted rate, about twice the allowance here. The precise
        check (within 5 % of W) is the real-server test of the budget alone. ``unbudgeted_per_s`` is what
        the same holdings cost without a budget (a renewal every retry period), so a reader sees that the
        budget bound.
        """
        from collections import Counter

        from shardlease.core.writebudget import WriteBudget

        cluster = self.cluster
        assert cluster is not None and self.config.max_write_rate is not None
        t = self.config.timings

        def lease_writes() -> tuple[float, int]:
            counts = cluster.request_counts()
            return time.monotonic(), sum(n for (verb, resource), n in counts.items()
                                         if resource == "leases" and verb in ("create", "update", "patch", "delete"))

        start, before = lease_writes()
        time.sleep(seconds)
        end, after = lease_writes()
        held: Counter[str] = Counter()
        for lease in cluster.leases():
            labels = (lease.get("metadata") or {}).get("labels") or {}
            holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
            if labels.get("shardlease.io/role") == "shard" and holder:
                held[holder] += 1
        replicas = sorted({r.identity for r in cluster.replicas if r.running})
        budget = WriteBudget(self.config.max_write_rate, renew_every=t.retry_period,
                             renew_deadline=t.renew_deadline, retry_period=t.retry_period)
        allowed = 0.0
        for identity in replicas:
            # Never more than the same Leases cost without a budget (a replica holding few shards).
            plan = budget.plan_for(held[identity])
            allowed += plan.planned * 1.03 if plan.exceeded else min(plan.rate, plan.asked)
        measured = (after - before) / (end - start)
        figure = {"max_write_rate": self.config.max_write_rate, "measured_s": round(end - start, 3),
                  "lease_writes_per_s": round(measured, 3), "allowed_per_s": round(allowed, 3),
                  "unbudgeted_per_s": round(sum((held[i] + 1) / t.retry_period for i in replicas), 3),
                  "held": {i: held[i] for i in replicas}}
        report.figures["write_budget"] = figure
        self.progress(f"write budget: {figure}")
        if measured > allowed * 1.10 + 2.0 / (end - start):
            self.failures.append(f"BUDGET: the server served {measured:.2f} Lease writes/s over {end - start:.1f} s "
                                 f"of a stable group, over the {allowed:.2f}/s the replicas' write budgets "
                                 f"(max_write_rate {self.config.max_write_rate:g}) allow: {figure}")

    def _start_relay(self, report: ChaosReport) -> None:
        """Real server: toxiproxy in front of kube-apiserver and (``apiservers=2``) a second
        kube-apiserver on the same etcd; the replicas' kubeconfigs name the relay (replicas with an
        odd index: the second apiserver, directly), while snapshots read kube-apiserver directly, so
        the observer never suffers the faults it judges."""
        from shardlease.controlplane import Toxiproxy

        cluster = self.cluster
        assert cluster is not None
        plane = cluster.control_plane
        self._toxiproxy = Toxiproxy(plane.assets_dir, self.work_dir).start()
        proxy = self._toxiproxy.proxy("kube-apiserver", upstream=plane.url)
        proxied = proxy.write_kubeconfig(plane, self.work_dir / "kubeconfig-via-toxiproxy",
                                         cluster.namespace)
        extra = None
        if self.config.apiservers == 2:
            extra = plane.add_apiserver()
            second = extra.write_kubeconfig(self.work_dir / "kubeconfig-apiserver-2", cluster.namespace)
            report.figures["apiserver_2_url"] = extra.url

            def route(identity: str) -> str:
                suffix = identity.rsplit("-", 1)[-1]
                return str(second) if suffix.isdigit() and int(suffix) % 2 else str(proxied)
            cluster.replica_kubeconfig = route
        else:
            cluster.replica_kubeconfig = proxied
        self.proxy_faults = ProxyFaults(proxy, plane, extra)
        report.figures["apiserver_url"] = plane.url
        report.figures["proxy_url"] = proxy.url
        report.figures["kube_version"] = plane.version
