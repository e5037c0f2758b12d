"""Scenario ``scale``: what a settled group costs as shards and replicas grow.

Cases (full run, client-go's default timings, renew interval = retry period = 2 s): one replica
holding S = 1,024, 4,096 and 8,192 shards; N = 2, 4 and 8 replicas sharing S = 1,024. ``--quick``
runs tiny sizes with the scaled timings. Every case starts a fresh dev-server (its own process) and
the replicas as processes (``python -m shardlease run bench.scenarios.idle:handle``), waits until
every shard is held as assigned, then (N > 1) one more lease duration so each replica's shard watch
has shrunk to the shards that matter to it, then measures over a window:

* per-replica CPU (``/proc/<pid>/stat``), and CPU per renewal = replicas' CPU / Lease PUTs served;
* API writes/s from the dev-server's request counters, against what the schedule asks,
  (S + N) / renew interval (shard Leases plus one member Lease per replica);
* shard renewals the observer saw per second, the largest gap between two renewals of one Lease
  (also over the interval), late (> 1.5 x interval) and missed (>= renew deadline) renewals;
* losses: holder changes in the window plus each replica's ``shardlease_losses_total``;
* watch events delivered per second to each replica (the dev-server's per-client counter, keyed by
  the ``X-Shardlease-Client`` header that replicas set to their identity), beside the model
  (N member Leases + W watched shard Leases) / interval, W computed with the pure assignment
  functions exactly as the manager computes it (held | assigned | inheritable, all shards once that
  is more than half of them).

Why a fresh server per case: the counters and the server's CPU then belong to that case alone, and a
case that overloads the server (8,192 shards) cannot slow the next one.

Before each case the 1-minute load average is read; above ``LOAD_LIMIT`` the case waits (up to
``max_load_wait`` s) and the load it started at is recorded, since the machine is shared.

The baseline (one ``kubernetes.leaderelection`` elector per shard per replica) runs one replica
with S = 1,024 and 4,096, and N = 2 with S = 1,024. Each elector polls with a GET every retry period,
so it costs S x N / retry GETs/s; the cases it is not run for say so, with the figure measured for
it at S = 1,024.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardlease.core.assignment import assign, inheritable

from .common import (
    BASELINE,
    DEFAULT,
    DEV_SERVER,
    OBSERVER_ID,
    OURS,
    SCALED,
    Group,
    Profile,
    Server,
    percentile,
    proc_cpu_seconds,
    scrape_metrics,
)

Log = Callable[[str], None]

#: Above this 1-minute load average a case waits before it starts (2 cores, shared).
LOAD_LIMIT = 1.5
#: Lease verbs that are writes.
WRITE_VERBS = ("create", "update", "patch", "delete")


@dataclass(frozen=True)
class Case:
    """One measured configuration: ``replicas`` replicas sharing ``shards`` shards, each replica with
    ``--max-write-rate`` when ``max_write_rate`` is set."""

    replicas: int
    shards: int
    max_write_rate: float | None = None

    @property
    def name(self) -> str:
        budget = f" W={self.max_write_rate:g}" if self.max_write_rate is not None else ""
        return f"N={self.replicas} S={self.shards}{budget}"


@dataclass(frozen=True)
class Plan:
    """Sizes and timings of a run."""

    profile: Profile
    cases: tuple[Case, ...]
    baseline_cases: tuple[Case, ...]
    window: float
    max_load_wait: float
    #: Title of the report and stem of its files (``scale`` -> scale.json, scale.md).
    title: str = "Scale: cost as shards and replicas grow"
    stem: str = "scale"


FULL = Plan(DEFAULT, (Case(1, 1024), Case(1, 4096), Case(1, 8192), Case(2, 1024), Case(4, 1024), Case(8, 1024)),
            (Case(1, 1024), Case(1, 4096), Case(2, 1024)), 30.0, 180.0)
QUICK = Plan(SCALED, (Case(1, 32), Case(1, 128), Case(5, 60)), (Case(1, 32),), 3.0, 0.0)
#: ``--server real``: one replica, default timings, up to the 2,048 shards of the target, and the baseline
#: up to where it stops keeping up; short windows so the run ends in minutes on 2 shared cores.
REAL = Plan(DEFAULT, (Case(1, 512), Case(1, 1024), Case(1, 2048)), (Case(1, 256), Case(1, 512), Case(1, 1024)),
            20.0, 30.0, title="Scale on a real kube-apiserver + etcd", stem="scale_real")
#: ``write-budget``: one replica under ``--max-write-rate`` at the default timings (bound: renew deadline
#: - retry period = 8 s): two budgets it can meet (renewals spaced to ~5 s) and one it cannot (1,024
#: shards need 128.5 writes/s even every 8 s).
WRITE_BUDGET = Plan(DEFAULT, (Case(1, 256, 50.0), Case(1, 1024, 200.0), Case(1, 1024, 100.0)), (), 40.0, 60.0,
                    title="Write budget: served writes and renewal gaps under --max-write-rate", stem="write_budget")
#: ``same-cpu``: twice the baseline's shards for the baseline's write rate. The baseline asks S / RP writes/s
#: (one elector per shard, no membership Lease) plus as many GETs; one replica of ours holds 2S
#: shards under ``--max-write-rate`` (S + 1) / RP, renewing each Lease every ~2 x RP (4 s, within the 8 s
#: bound). Read the control plane's CPU of the two columns side by side.
SAME_CPU = Plan(DEFAULT, (Case(1, 512, 128.5), Case(1, 1024, 256.5)), (Case(1, 256), Case(1, 512)), 20.0, 30.0,
                title="Twice the shards at the baseline's write rate: control-plane CPU", stem="same_cpu")
WRITE_BUDGET_QUICK = Plan(SCALED, (Case(1, 64, 60.0), Case(1, 64, 30.0)), (), 6.0, 0.0,
                          title="Write budget: served writes and renewal gaps under --max-write-rate",
                          stem="write_budget")


# --------------------------------------------------------------------------------------------------
# The model (pure)
# --------------------------------------------------------------------------------------------------


def watched_shards(group: str, shards: int, members: Sequence[str], member: str) -> int:
    """How many shard Leases ``member``'s shard watch covers once settled: held = assigned, plus the
    shards it would inherit if any one peer left; all ``shards`` once that is more than half (the
    manager then drops the selector, see ``ShardManager._watch_shards``)."""
    mine = {s for s, owner in assign(group, shards, members).items() if owner == member}
    wanted = len(mine | inheritable(group, shards, members, member))
    return shards if 2 * wanted > shards else wanted


def model(group: str, shards: int, members: Sequence[str], interval: float) -> dict[str, Any]:
    """API writes/s and watch events/s per replica that the protocol implies for a settled group.

    writes/s = (S + N) / interval; events/s to a replica = (N + W) / interval (every member Lease,
    its own included, and every watched shard Lease, its own renewals echoed back included); the API
    server's fan-out is the sum over replicas."""
    n = len(members)
    watched = {m: watched_shards(group, shards, members, m) for m in members}
    per_replica = {m: round((n + w) / interval, 2) for m, w in watched.items()}
    return {"writes_per_s": round((shards + n) / interval, 2), "watched": watched,
            "events_per_s": per_replica, "fanout_per_s": round(sum(per_replica.values()), 2)}


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------


def wait_for_quiet_machine(max_wait: float, log: Log) -> dict[str, float]:
    """Wait while the 1-minute load average is above ``LOAD_LIMIT`` (at most ``max_wait`` s)."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    if load > LOAD_LIMIT and max_wait > 0:
        log(f"  load {load:.2f} > {LOAD_LIMIT}: waiting up to {max_wait:g} s")
    while load > LOAD_LIMIT and time.monotonic() - t0 < max_wait:
        time.sleep(5)
        load = os.getloadavg()[0]
    return {"load1_at_start": round(load, 2), "waited_s": round(time.monotonic() - t0, 1)}


def counters(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """The dev-server's Lease request counts ``{verb: n}`` and watch events delivered ``{client: n}``."""
    with urllib.request.urlopen(f"{url}/_shardlease/requests", timeout=10) as response:
        body = json.loads(response.read())
    requests = {r["verb"]: int(r["count"]) for r in body.get("requests", []) if r["resource"] == "leases"}
    events = {w["client"]: int(w["events"]) for w in body.get("watchEvents", [])}
    return requests, events


def _delta(after: dict[str, int], before: dict[str, int], keys: Iterable[str]) -> int:
    return sum(after.get(k, 0) - before.get(k, 0) for k in keys)


def _settle(group: Group, replicas: int, impl: str, plan: Plan) -> dict[str, Any]:
    """Start the replicas and wait until settled; for shardlease with peers, one more lease duration so
    every shard watch has shrunk to its steady size (the reactor shrinks it a lease duration late)."""
    p = plan.profile
    t0 = time.monotonic()
    for _ in range(replicas):
        group.spawn()
    timeout = 60 + 6 * p.lease_duration if impl == OURS else 30 + 3 * p.lease_duration
    settled = group.wait_settled(timeout)
    out: dict[str, Any] = {"settled": settled, "settle_s": round(time.monotonic() - t0, 2)}
    if not settled:
        if impl == OURS:
            raise RuntimeError(f"group did not settle within {timeout} s; load {group.obs.load()}\n"
                               + group.log_tails())
        out["held_at_timeout"] = sum(group.obs.load().values())
        return out
    group.obs.quiet_for(max(1.0, 2 * p.retry_period), timeout=2 * p.lease_duration + 10)
    if impl == OURS and replicas > 1:
        time.sleep(p.lease_duration + 2 * p.retry_period)
    return out


def _server_counters(group: Group) -> tuple[dict[str, int], dict[str, int]]:
    """Lease requests served ``{verb: n}`` (less, on a real server, the writes kube-apiserver makes to its
    own identity Lease) and, on the dev-server, watch events delivered ``{client: n}``."""
    if not group.server.real:
        return counters(group.cluster.url)
    requests = {key.partition(" ")[0]: n for key, n in group.request_counts().items() if key.endswith(" leases")}
    requests["update"] = requests.get("update", 0) - group.server_own_writes()
    return requests, {}


def _server_cpu(group: Group) -> dict[str, float]:
    """CPU seconds so far of the server processes: ``devserver``, or ``apiserver`` and ``etcd``."""
    plane = group.cluster.control_plane
    if plane is not None:
        return {name: proc_cpu_seconds(pid) for name, pid in (("apiserver", plane.apiserver_pid),
                                                             ("etcd", plane.etcd_pid)) if pid}
    pid = group.cluster.server_pid
    return {"devserver": proc_cpu_seconds(pid)} if pid else {}


def measure(impl: str, case: Case, plan: Plan, work_dir: Path, log: Log,
            server: Server = DEV_SERVER) -> dict[str, Any]:
    """One case for one implementation; an ``error`` key instead of figures when it failed."""
    p = plan.profile
    interval = p.retry_period
    out: dict[str, Any] = {"impl": impl, "case": case.name, "replicas": case.replicas, "shards": case.shards,
                           "profile": p.describe(), "renew_interval_s": interval, "window_s": plan.window,
                           "server": server.kind, **wait_for_quiet_machine(plan.max_load_wait, log)}
    if case.max_write_rate is not None:
        out["max_write_rate"] = case.max_write_rate
        out["renew_bound_s"] = max(interval, p.renew_deadline - p.retry_period)
    log(f"{plan.stem}: {impl} {case.name}, {p.name} timings, {server.kind} server, load {out['load1_at_start']}")
    budget_args = ("--max-write-rate", f"{case.max_write_rate:g}") if case.max_write_rate is not None else ()
    with Group(impl, case.shards, p, work_dir, metrics=(impl == OURS), server=server,
               replica_args=budget_args).start() as group:
        try:
            out.update(_settle(group, case.replicas, impl, plan))
            if case.max_write_rate is not None:
                # Taking every shard at once is a burst no budget spaces (acquisitions do not wait);
                # the renewals right after it may go at the bound. Measure the steady state after it.
                time.sleep(out["renew_bound_s"] + p.retry_period)
            replicas = group.running()
            ids = [r.identity for r in replicas]
            ports = {i: group.metrics_ports[i] for i in ids if i in group.metrics_ports}
            metrics0 = {i: scrape_metrics(port) for i, port in ports.items()}
            obs = group.obs
            mark = obs.mark()
            obs.record_renewals(True)
            req0, ev0 = _server_counters(group)
            cpu0 = {r.identity: proc_cpu_seconds(r.pid) for r in replicas}
            server0 = _server_cpu(group)
            bench0 = proc_cpu_seconds(os.getpid())
            t0 = time.monotonic()
            oldest = dict.fromkeys(ports, 0.0)
            while time.monotonic() - t0 < plan.window:
                time.sleep(min(1.0, max(0.0, plan.window - (time.monotonic() - t0))))
                for identity, port in ports.items():
                    try:
                        age = scrape_metrics(port).get("shardlease_oldest_renewal_age_seconds", 0.0)
                        oldest[identity] = max(oldest[identity], age)
                    except OSError:
                        pass
            cpu1 = {r.identity: proc_cpu_seconds(r.pid) for r in replicas}
            server1 = _server_cpu(group)
            bench1 = proc_cpu_seconds(os.getpid())
            req1, ev1 = _server_counters(group)
            elapsed = time.monotonic() - t0
            obs.record_renewals(False)
            gaps = list(obs.gaps)
            metrics1 = {i: scrape_metrics(port) for i, port in ports.items()}
            load = obs.load()
            predicted = model(group.group, case.shards, ids, interval) if impl == OURS else None
            puts = _delta(req1, req0, ("update",))
            writes = _delta(req1, req0, WRITE_VERBS)
            cpu = {i: cpu1[i] - cpu0[i] for i in ids}
            losses = {i: metrics1[i].get("shardlease_losses_total", 0.0) - metrics0[i].get("shardlease_losses_total", 0.0)
                      for i in ports}
            per_replica = []
            for i in ids:
                row: dict[str, Any] = {"identity": i, "held": load.get(i, 0), "cpu_cores": round(cpu[i] / elapsed, 4),
                                       "watch_events_per_s": round((ev1.get(i, 0) - ev0.get(i, 0)) / elapsed, 2)
                                       if not server.real else None}
                if predicted is not None:
                    row["watched_shards_model"] = predicted["watched"][i]
                    row["watch_events_per_s_model"] = predicted["events_per_s"][i]
                    row["oldest_renewal_age_max_s"] = round(oldest.get(i, 0.0), 3)
                    row["losses"] = losses.get(i, 0.0)
                per_replica.append(row)
            # kube-apiserver has no per-client count of watch events delivered: those rows stay empty.
            replica_events = None if server.real else sum(r["watch_events_per_s"] for r in per_replica)
            asked_writes = (case.shards + (case.replicas if impl == OURS else 0)) / interval
            cores = [r["cpu_cores"] for r in per_replica]
            server_cores = {name: round((server1[name] - server0.get(name, 0.0)) / elapsed, 3) for name in server1}
            if puts:
                out["server_cpu_ms_per_renewal"] = {name: round(1000 * (server1[name] - server0.get(name, 0.0)) / puts, 3)
                                                    for name in server1}
            renewed = sum(metrics1[i].get("shardlease_renew_latency_seconds_count", 0.0)
                          - metrics0[i].get("shardlease_renew_latency_seconds_count", 0.0) for i in ports)
            if renewed:
                # Mean latency of a successful renewal as the replicas saw it: with writes/s, how many
                # requests were in flight (Little's law), against the writer threads a replica may use.
                latency = sum(metrics1[i].get("shardlease_renew_latency_seconds_sum", 0.0)
                              - metrics0[i].get("shardlease_renew_latency_seconds_sum", 0.0) for i in ports) / renewed
                out["renew_latency_mean_ms"] = round(1000 * latency, 2)
                out["renewals_in_flight_mean"] = round(latency * renewed / elapsed, 2)
            if case.max_write_rate is not None:
                budget = case.max_write_rate * case.replicas
                bound = out["renew_bound_s"]
                out.update({
                    "write_budget_total": budget,
                    "served_vs_budget": round(writes / elapsed / budget, 3),
                    "gaps_over_bound": sum(1 for g in gaps if g > bound + 0.5),
                    "write_budget_exceeded": {i: metrics1[i].get("shardlease_write_budget_exceeded") for i in ports},
                    "writes_planned": {i: metrics1[i].get("shardlease_writes_planned") for i in ports},
                    "forced_renewals": {i: metrics1[i].get("shardlease_write_budget_forced_total", 0.0)
                                        - metrics0[i].get("shardlease_write_budget_forced_total", 0.0) for i in ports},
                    "budget_renew_interval_s": {i: metrics1[i].get("shardlease_write_budget_renew_interval_seconds")
                                                for i in ports},
                })
            out.update({
                "elapsed_s": round(elapsed, 2),
                "held": sum(load.values()),
                "replica_cpu_cores_max": max(cores),
                "replica_cpu_cores_mean": round(sum(cores) / len(cores), 4),
                "cpu_ms_per_renewal": round(1000 * sum(cpu.values()) / puts, 4) if puts else None,
                "lease_puts_per_s": round(puts / elapsed, 2),
                "api_writes_per_s": round(writes / elapsed, 2),
                "api_writes_per_s_asked": round(asked_writes, 2),
                "api_gets_per_s": round(_delta(req1, req0, ("get",)) / elapsed, 2),
                "shard_renewals_per_s": round(len(gaps) / elapsed, 2),
                "shard_renewals_per_s_asked": round(case.shards / interval, 2),
                "gap_p50_s": round(percentile(gaps, 50), 3) if gaps else None,
                "gap_max_s": round(max(gaps), 3) if gaps else None,
                "gap_max_x_interval": round(max(gaps) / interval, 3) if gaps else None,
                "late_renewals": sum(1 for g in gaps if g > 1.5 * interval),
                "missed_renewals": sum(1 for g in gaps if g >= p.renew_deadline),
                "holder_changes": len(obs.changes_since(mark)),
                "losses": sum(losses.values()) if ports else None,
                "watch_events_per_s_per_replica_mean": None if replica_events is None else round(replica_events / len(ids), 2),
                "watch_events_per_s_observer": None if server.real else
                round((ev1.get(OBSERVER_ID, 0) - ev0.get(OBSERVER_ID, 0)) / elapsed, 2),
                "watch_fanout_per_s_replicas": None if replica_events is None else round(replica_events, 2),
                "server_cpu_cores": round(sum(server_cores.values()), 3) if server_cores else None,
                "server_cpu_cores_by_process": server_cores,
                "bench_process_cpu_cores": round((bench1 - bench0) / elapsed, 3),
                "per_replica": per_replica,
            })
            if predicted is not None:
                out["model"] = {k: v for k, v in predicted.items() if k != "watched"}
            if case.max_write_rate is not None:
                log(f"  budget {out['write_budget_total']:g}/s: served {out['api_writes_per_s']}/s "
                    f"({out['served_vs_budget']} x), gap max {out['gap_max_s']} s (bound {out['renew_bound_s']:g} s), "
                    f"exceeded {out['write_budget_exceeded']}")
            log(f"  cpu/replica max {out['replica_cpu_cores_max']} cores, {out['cpu_ms_per_renewal']} ms/renewal, "
                f"writes {out['api_writes_per_s']}/s of {out['api_writes_per_s_asked']}, gap max "
                f"{out['gap_max_x_interval']} x interval, losses {out['losses']}, changes {out['holder_changes']}, "
                f"events/replica {out['watch_events_per_s_per_replica_mean']}/s, server {server_cores} cores")
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  ERROR {out['error'][:500]}")
    return out


def targets(cases: Sequence[dict[str, Any]], full: bool) -> list[dict[str, Any]]:
    """Issue 9's targets, judged on the shardlease figures (only meaningful for the full run)."""

    def find(replicas: int, shards: int) -> dict[str, Any] | None:
        return next((c for c in cases if c["impl"] == OURS and c["replicas"] == replicas
                     and c["shards"] == shards and "error" not in c), None)

    out: list[dict[str, Any]] = []

    def judge(name: str, case: dict[str, Any] | None, figure: Callable[[dict[str, Any]], str],
              met: Callable[[dict[str, Any]], bool]) -> None:
        out.append({"target": name, "figure": figure(case) if case else "not run",
                    "met": (met(case) if case else None) if full else None})

    judge("S=4,096, one replica: <= 0.5 core, no loss, no renewal later than 1.5 x interval", find(1, 4096),
          lambda c: f"{c['replica_cpu_cores_max']} cores, {c['losses']} losses, {c['holder_changes']} holder changes, "
                    f"gap max {c['gap_max_x_interval']} x interval",
          lambda c: c["replica_cpu_cores_max"] <= 0.5 and not c["losses"] and not c["holder_changes"]
          and (c["gap_max_x_interval"] or 0) <= 1.5)
    judge("S=8,192, one replica: held with no loss", find(1, 8192),
          lambda c: f"{c['held']} held, {c['losses']} losses, {c['holder_changes']} holder changes",
          lambda c: c["held"] == c["shards"] and not c["losses"] and not c["holder_changes"])
    judge("CPU per renewal <= 0.25 ms (one replica, S=1,024)", find(1, 1024),
          lambda c: f"{c['cpu_ms_per_renewal']} ms", lambda c: (c["cpu_ms_per_renewal"] or 1e9) <= 0.25)
    judge("N=8, S=1,024: <= 0.05 core per replica", find(8, 1024),
          lambda c: f"max {c['replica_cpu_cores_max']} cores", lambda c: c["replica_cpu_cores_max"] <= 0.05)

    def proportional(c: dict[str, Any]) -> bool:
        # within 25% of (N + W) / interval, and well under S / interval
        return all(abs(r["watch_events_per_s"] - r["watch_events_per_s_model"]) <= 0.25 * r["watch_events_per_s_model"]
                   and r["watch_events_per_s"] < 0.75 * c["shards"] / c["renew_interval_s"] for r in c["per_replica"])

    judge("N=8, S=1,024: watch events in proportion to held shards, not S / interval", find(8, 1024),
          lambda c: f"mean {c['watch_events_per_s_per_replica_mean']}/s per replica; model "
                    f"{round(sum(c['model']['events_per_s'].values()) / c['replicas'], 1)}/s; S / interval = "
                    f"{c['shard_renewals_per_s_asked']}/s", proportional)
    return out


def run(plan: Plan, work_root: Path, log: Log, impls: Sequence[str] = (OURS, BASELINE),
        server: Server = DEV_SERVER) -> list[dict[str, Any]]:
    """Every case of ``plan`` for shardlease, then the baseline cases; one result dict per run."""
    results = []
    for impl in impls:
        for n, case in enumerate(plan.cases if impl == OURS else plan.baseline_cases):
            work = work_root / f"{plan.stem}-{impl}-{case.replicas}x{case.shards}-{n}"
            results.append(measure(impl, case, plan, work, log, server=server))
    return results


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


ROWS: tuple[tuple[str, str], ...] = (
    ("CPU per replica, max (cores)", "replica_cpu_cores_max"),
    ("CPU per replica, mean (cores)", "replica_cpu_cores_mean"),
    ("CPU per renewal (ms)", "cpu_ms_per_renewal"),
    ("API writes / s", "api_writes_per_s"),
    ("API writes / s asked ((S + N) / interval)", "api_writes_per_s_asked"),
    ("API GETs / s", "api_gets_per_s"),
    ("shard renewals / s seen", "shard_renewals_per_s"),
    ("shard renewals / s asked (S / interval)", "shard_renewals_per_s_asked"),
    ("renewal latency, mean (ms)", "renew_latency_mean_ms"),
    ("renewals in flight, mean", "renewals_in_flight_mean"),
    ("renewal gap p50 (s)", "gap_p50_s"),
    ("renewal gap max (x interval)", "gap_max_x_interval"),
    ("late renewals (> 1.5 x interval)", "late_renewals"),
    ("missed renewals (>= renew deadline)", "missed_renewals"),
    ("holder changes in the window", "holder_changes"),
    ("losses (replica metric)", "losses"),
    ("watch events / s per replica (mean)", "watch_events_per_s_per_replica_mean"),
    ("watch fan-out to replicas / s", "watch_fanout_per_s_replicas"),
    ("server CPU, all processes (cores)", "server_cpu_cores"),
    ("  dev-server (cores)", "server_cpu_cores_by_process.devserver"),
    ("  kube-apiserver (cores)", "server_cpu_cores_by_process.apiserver"),
    ("  etcd (cores)", "server_cpu_cores_by_process.etcd"),
    ("  kube-apiserver CPU per renewal (ms)", "server_cpu_ms_per_renewal.apiserver"),
    ("  etcd CPU per renewal (ms)", "server_cpu_ms_per_renewal.etcd"),
    ("  dev-server CPU per renewal (ms)", "server_cpu_ms_per_renewal.devserver"),
    ("bench observer process CPU (cores)", "bench_process_cpu_cores"),
    ("1-min load at case start", "load1_at_start"),
)

#: Extra rows of a write-budget run.
BUDGET_ROWS: tuple[tuple[str, str], ...] = (
    ("--max-write-rate W (whole group)", "write_budget_total"),
    ("API writes served / W", "served_vs_budget"),
    ("renewal gap max (s)", "gap_max_s"),
    ("bound: renew deadline - retry period (s)", "renew_bound_s"),
    ("gaps over the bound (+0.5 s observer slack)", "gaps_over_bound"),
)


def _get(case: dict[str, Any], key: str) -> Any:
    """``case[key]``, where ``a.b`` reads ``case[a][b]`` (absent: ``None``)."""
    value: Any = case
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def render(data: dict[str, Any]) -> str:
    """``scale.md``: one column per case, the baseline beside shardlease where it ran."""
    meta = data["meta"]
    cases = data["cases"]
    columns = [c for c in cases if c["impl"] == OURS] + [c for c in cases if c["impl"] != OURS]
    lines = [f"# {meta.get('title', 'Scale: cost as shards and replicas grow')}", "",
             f"Generated {meta['generated']} by `{meta['command']}` (git {meta['git']}, {meta['elapsed_s']} s) "
             f"on {meta['machine']}. Timings: {meta['profile']['name']} (lease {meta['profile']['lease_duration']} s, "
             f"renew deadline {meta['profile']['renew_deadline']} s, retry {meta['profile']['retry_period']} s); "
             f"renew interval = retry period; {meta['window_s']:g} s window per case after settling. Every case has "
             f"its own {'kube-apiserver + etcd' if meta.get('server') == 'real' else 'dev-server process'}. "
             "Method: `bench/scenarios/scale.py`; model: `docs/scaling.md`.", ""]
    if len(meta.get("runs", [])) > 1:
        lines += ["Cases merged from several runs: " + "; ".join(
            f"`{r['command']}` at {r['generated']} (git {r['git']}): {', '.join(r['cases'])}" for r in meta["runs"]), ""]
    header = "| | " + " | ".join(f"{'ours' if c['impl'] == OURS else 'baseline'} {c['case']}" for c in columns) + " |"
    lines += [header, "|---|" + "---:|" * len(columns)]
    budget = any("max_write_rate" in c for c in columns)
    for label, key in (BUDGET_ROWS if budget else ()) + ROWS:
        if all(_get(c, key) is None for c in columns if "error" not in c):
            continue  # e.g. etcd rows on the dev-server
        lines.append(f"| {label} | " + " | ".join("error" if "error" in c else _fmt(_get(c, key)) for c in columns) + " |")
    lines.append("")
    lines += ["## Watch events per replica: measured vs model (N + W) / interval", "",
              "| case | replica | held | W (watched shard Leases) | events / s measured | model |",
              "|---|---|---:|---:|---:|---:|"]
    for c in columns:
        for r in c.get("per_replica", []):
            if "watch_events_per_s_model" in r:
                lines.append(f"| {c['case']} | {r['identity']} | {r['held']} | {r['watched_shards_model']} | "
                             f"{_fmt(r['watch_events_per_s'])} | {_fmt(r['watch_events_per_s_model'])} |")
    lines.append("")
    if data.get("targets"):
        lines += ["## Targets", "", "| target | figure | met? |", "|---|---|---|"]
        for t in data["targets"]:
            verdict = "not judged (quick run)" if t["met"] is None else ("**met**" if t["met"] else "**missed**")
            lines.append(f"| {t['target']} | {t['figure']} | {verdict} |")
        lines.append("")
    errors = [f"- {c['impl']} {c['case']}: `{c['error'][:400]}`" for c in cases if "error" in c]
    if errors:
        lines += ["## Errors", "", *errors, ""]
    if data.get("baseline_not_run"):
        lines += ["## Baseline not run", "", data["baseline_not_run"], ""]
    return "\n".join(lines)


def baseline_note(plan: Plan, cases: Sequence[dict[str, Any]], full: bool) -> str:
    """Why the baseline has no column for the larger cases, with the figure it reached where it ran."""
    ran = {(c["replicas"], c["shards"]) for c in cases if c["impl"] == BASELINE}
    skipped = [c.name for c in plan.cases if (c.replicas, c.shards) not in ran]
    if not skipped or not any(c["impl"] == BASELINE for c in cases):
        return ""
    if not full:
        return f"Quick run: the baseline runs only {', '.join(c.name for c in plan.baseline_cases)}."
    measured = [c for c in cases if c["impl"] == BASELINE and "error" not in c]
    figure = "; ".join(f"{c['case']}: {c['replica_cpu_cores_max']} cores per replica, {c['lease_puts_per_s']} of "
                       f"{c['api_writes_per_s_asked']} renewals/s, gap max {c['gap_max_x_interval']} x interval, "
                       f"{c['missed_renewals']} missed, {c['api_gets_per_s']} GETs/s, dev-server "
                       f"{c['server_cpu_cores']} cores" for c in measured)
    interval = plan.profile.retry_period
    polls = ", ".join(f"{c.name}: {c.shards * c.replicas / interval:,.0f} GETs/s from {c.shards * c.replicas:,} threads"
                      for c in plan.cases if (c.replicas, c.shards) not in ran)
    return (f"Not run for {', '.join(skipped)}. Every baseline replica runs one polling elector (a thread) per shard, "
            f"so the group polls S x N / retry GETs/s ({polls}). Measured where it ran: "
            f"{figure or 'every baseline case failed'}.")


def write(out: Path, results: list[dict[str, Any]], plan: Plan, meta: dict[str, Any], full: bool) -> dict[str, Any]:
    """``scale.json`` and ``scale.md`` in ``out``; returns the JSON document.

    Cases measured earlier into the same ``scale.json`` (same timings) and not measured again are
    kept, so the baseline can be run apart (``--impls baseline``) without losing shardlease's cases;
    ``meta.runs`` lists every run that contributed."""
    path = out / f"{plan.stem}.json"
    kept: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if (old.get("meta") or {}).get("profile") == plan.profile.describe():
            fresh = {(r["impl"], r["case"]) for r in results}
            kept = [c for c in old.get("cases", []) if (c["impl"], c["case"]) not in fresh]
            kept_ids = {c["case_id"] for c in kept}
            runs = [r | {"cases": [c for c in r.get("cases", []) if c in kept_ids]}
                    for r in old["meta"].get("runs", []) if set(r.get("cases", [])) & kept_ids]
    for r in results:
        r["case_id"] = f"{r['impl']} {r['case']}"
    runs.append({k: meta[k] for k in ("command", "generated", "git", "elapsed_s") if k in meta}
                | {"cases": [r["case_id"] for r in results]})
    cases = sorted(kept + results, key=lambda c: (c["impl"] != OURS, c["replicas"], c["shards"]))
    dev_scale = plan.stem == "scale"
    data = {"meta": {**meta, "runs": runs, "profile": plan.profile.describe(), "window_s": plan.window,
                     "title": plan.title},
            "cases": cases, "targets": targets(cases, full) if dev_scale else [],
            "baseline_not_run": baseline_note(plan, cases, full) if dev_scale else ""}
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / f"{plan.stem}.md").write_text(render(data))
    return data
