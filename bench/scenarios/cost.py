"""Scenarios 6 and 7: what a settled group costs the API server, and what one replica costs its host.

API cost (scenario 6): S shards, N replicas, settled and quiet; then the dev-server's request
counters are read before and after a window and turned into requests per second by verb. The
observer's own watch was opened before the window and does not count inside it; the counters'
admin endpoint is not counted by the server. Targets: zero GETs, and at most one PUT per held Lease
(shard Leases plus, for shardlease, one member Lease per replica) per renew interval.

On the real kube-apiserver (``--server real``) the counters are its own ``apiserver_request_total``
from ``/metrics``, read the same way before and after the window. They include the server's own
traffic: it renews its identity Lease in ``kube-system`` (one PUT about every 10 s, no GET). A watch
on ``kube-system`` counts those writes during the window; they are reported
(``server_own_updates``) and taken out of the PUT rate (``rates`` is net, ``rates_raw`` as counted).

Replica cost (scenario 7): one replica holding all S (1,024) shards. Over a window:
* CPU seconds per renewal = (utime + stime of the process, all threads) / renewals, where a renewal is
  a watch event in which a shard Lease's ``renewTime`` changed with the same holder;
* peak RSS = ``VmHWM`` (the kernel's high-water mark, start-up and acquisition included);
* lateness, two ways: the gaps between consecutive renewals of each shard as the observer saw them
  (late = longer than 1.5 renew intervals; missed = at least the renew deadline, when the holder
  itself would have given the shard up), and, for shardlease, the replica's own Prometheus metrics
  (``shardlease_losses_total``, the renew-latency histogram, and the largest
  ``shardlease_oldest_renewal_age_seconds`` sampled once a second).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import (
    DEV_SERVER,
    OURS,
    Group,
    Profile,
    Server,
    latency_summary,
    load_summary,
    percentile,
    proc_cpu_seconds,
    proc_status,
    rate_by_verb,
    scrape_metrics,
)

Log = Callable[[str], None]


def _settle(group: Group, replicas: int, log: Log) -> float:
    """Start the replicas, wait until settled and quiet; returns seconds until every shard was held."""
    p = group.profile
    t0 = time.monotonic()
    for _ in range(replicas):
        group.spawn()
    timeout = 60 + 6 * p.lease_duration
    if not group.wait_settled(timeout):
        raise RuntimeError(f"group did not settle within {timeout} s; holders {group.obs.load()}\n"
                           + group.log_tails())
    held = time.monotonic() - t0
    group.obs.quiet_for(max(1.0, 2 * p.retry_period), timeout=2 * p.lease_duration + 10)
    return held


def api_cost(impl: str, profile: Profile, shards: int, replicas: int, window: float, work_dir: Path,
             log: Log, *, server: Server = DEV_SERVER) -> dict[str, Any]:
    log(f"api cost: {impl}, {profile.name} timings, S={shards}, N={replicas}, {window:g} s window")
    out: dict[str, Any] = {"impl": impl, "profile": profile.describe(), "shards": shards, "replicas": replicas,
                           "window_s": window, "server": server.kind}
    with Group(impl, shards, profile, work_dir, server=server).start() as group:
        try:
            out["settle_s"] = round(_settle(group, replicas, log), 3)
            pids = [r.pid for r in group.running()]
            server_pids = group.server_pids()
            cpu0 = sum(proc_cpu_seconds(pid) for pid in pids)
            server0 = sum(proc_cpu_seconds(pid) for pid in server_pids)
            own0 = group.server_own_writes()
            before = group.request_counts()
            mark = group.obs.mark()
            t0 = time.monotonic()
            time.sleep(window)
            after = group.request_counts()
            elapsed = time.monotonic() - t0
            own = group.server_own_writes() - own0
            cpu1 = sum(proc_cpu_seconds(pid) for pid in pids)
            server1 = sum(proc_cpu_seconds(pid) for pid in server_pids)
            raw = rate_by_verb(before, after, elapsed)
            rates = dict(raw)
            if own:
                rates["update"] = round(max(0.0, rates.get("update", 0.0) - own / elapsed), 3)
            held_leases = shards + (replicas if impl == OURS else 0)
            puts = rates.get("update", 0.0)
            out.update({
                "elapsed_s": round(elapsed, 2),
                "rates": rates,
                "rates_raw": raw,
                "server_own_updates": own,
                "total_per_s": round(sum(rates.values()), 2),
                "get_per_s": rates.get("get", 0.0),
                "put_per_s": puts,
                "held_leases": held_leases,
                "puts_per_held_lease_per_interval": round(puts * profile.retry_period / held_leases, 4),
                "gets_per_shard_per_interval": round(rates.get("get", 0.0) * profile.retry_period / shards, 4),
                "holder_changes": len(group.obs.changes_since(mark)),
                "replica_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
                "server_cpu_cores": round((server1 - server0) / elapsed, 3) if server_pids else None,
                # What the protocol asks for if every request were served at once.
                "nominal_per_s": ({"update": round(held_leases / profile.retry_period, 1)} if impl == OURS else
                                  {"get": round(shards * replicas / profile.retry_period, 1),
                                   "update": round(shards / profile.retry_period, 1)}),
                "load": load_summary(group.obs.load(), shards, replicas),
            })
            log(f"  {rates} per s; PUT per held Lease per interval {out['puts_per_held_lease_per_interval']}; "
                f"replicas use {out['replica_cpu_cores']} cores")
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  ERROR {out['error'][:500]}")
    return out


def replica_cost(impl: str, profile: Profile, shards: int, window: float, work_dir: Path,
                 log: Log, *, server: Server = DEV_SERVER) -> dict[str, Any]:
    log(f"replica cost: {impl}, {profile.name} timings, one replica, S={shards}, {window:g} s window")
    out: dict[str, Any] = {"impl": impl, "profile": profile.describe(), "shards": shards, "window_s": window,
                           "server": server.kind}
    with Group(impl, shards, profile, work_dir, metrics=(impl == OURS), server=server).start() as group:
        try:
            out["all_held_s"] = round(_settle(group, 1, log), 3)
            replica = group.running()[0]
            pid = replica.pid
            port = group.metrics_ports.get(replica.identity)
            metrics0 = scrape_metrics(port) if port else {}
            obs = group.obs
            mark = obs.mark()
            obs.record_renewals(True)
            cpu0 = proc_cpu_seconds(pid)
            counts0 = group.request_counts()
            own0 = group.server_own_writes()
            t0 = time.monotonic()
            oldest_age = 0.0
            rss_peak_window = 0
            while time.monotonic() - t0 < window:
                time.sleep(min(1.0, max(0.0, window - (time.monotonic() - t0))))
                status = proc_status(pid)
                rss_peak_window = max(rss_peak_window, status.get("VmRSS", 0))
                if port:
                    try:
                        sample = scrape_metrics(port).get("shardlease_oldest_renewal_age_seconds", 0.0)
                        oldest_age = max(oldest_age, sample)
                    except OSError:
                        pass
            cpu1 = proc_cpu_seconds(pid)
            elapsed = time.monotonic() - t0
            counts1 = group.request_counts()
            obs.record_renewals(False)
            status = proc_status(pid)
            gaps = list(obs.gaps)
            renewals = obs.renewals
            metrics1 = scrape_metrics(port) if port else {}
            rates = rate_by_verb(counts0, counts1, elapsed)
            late_at = 1.5 * profile.retry_period
            # The server's PUT count is exact and covers the same window as the CPU readings; the
            # observer's count (renewTime changes seen) is kept as a cross-check.
            puts = (counts1.get("update leases", 0) - counts0.get("update leases", 0)
                    - (group.server_own_writes() - own0))
            out.update({
                "elapsed_s": round(elapsed, 2),
                "renewals": puts,
                "renewals_observed": renewals,
                "renewals_per_s": round(puts / elapsed, 2),
                "expected_renewals_per_s": round(shards / profile.retry_period, 2),
                "cpu_s": round(cpu1 - cpu0, 3),
                "cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
                "cpu_ms_per_renewal": round(1000 * (cpu1 - cpu0) / puts, 4) if puts else None,
                "peak_rss_mib": round(status.get("VmHWM", 0) / 1024, 1),
                "rss_mib": round(rss_peak_window / 1024, 1),
                "threads": status.get("Threads"),
                "rates": rates,
                "gap_s": latency_summary(gaps, profile.lease_duration) if gaps else {"n": 0},
                "gap_p50_x_retry": round(percentile(gaps, 50) / profile.retry_period, 3) if gaps else None,
                "gap_max_x_retry": round(max(gaps) / profile.retry_period, 3) if gaps else None,
                "late_renewals": sum(1 for g in gaps if g > late_at),
                "missed_renewals": sum(1 for g in gaps if g >= profile.renew_deadline),
                "holder_changes": len(obs.changes_since(mark)),
                "load": load_summary(obs.load(), shards, 1),
            })
            if port:
                def delta(name: str) -> float:
                    return metrics1.get(name, 0.0) - metrics0.get(name, 0.0)

                count = delta("shardlease_renew_latency_seconds_count")
                out["metrics"] = {
                    "losses": delta("shardlease_losses_total"),
                    "acquisitions": delta("shardlease_acquisitions_total"),
                    "renewals": count,
                    "renew_latency_mean_ms": round(1000 * delta("shardlease_renew_latency_seconds_sum") / count, 3)
                    if count else None,
                    "renew_latency_over_100ms": count - delta("shardlease_renew_latency_seconds_bucket[0.1]"),
                    "renew_latency_over_1s": count - delta("shardlease_renew_latency_seconds_bucket[1.0]"),
                    "oldest_renewal_age_max_s": round(oldest_age, 3),
                    "api_errors": sum(v - metrics0.get(k, 0.0) for k, v in metrics1.items()
                                      if k.startswith("shardlease_api_errors_total")),
                }
            out["missed_any"] = bool(out["missed_renewals"] or out["holder_changes"]
                                     or (out.get("metrics", {}).get("losses") or 0) > 0)
            log(f"  {puts} renewals ({out['renewals_per_s']}/s of {out['expected_renewals_per_s']}), "
                f"{out['cpu_ms_per_renewal']} CPU ms each, peak RSS {out['peak_rss_mib']} MiB, "
                f"late {out['late_renewals']}, missed {out['missed_renewals']}, "
                f"gap max x retry {out['gap_max_x_retry']}")
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  ERROR {out['error'][:500]}")
    return out
