"""Scenario ``load --live``: load-aware assignment with live replica processes (docs/load.md).

Where ``bench/scenarios/load.py`` computes the rule, this one runs it: N replica processes (default 8)
of ``shardlease run`` on a LocalCluster (dev-server, or ``--server real``), S shards (default 256) whose
handler (``bench/load_handler.py``) reports Zipf(1.1) loads, with scaled timings (lease 3 s, renew
deadline 2 s, retry 0.5 s, rebalance period 5 s, load half-life 1 s). Three phases: the group from a
cold start, then replica-3 restarted with ``--capacity 2``, then a load shift (the hottest shard cools
to the median, the median shard heats to the old hottest). The same run is repeated with handlers that
report nothing (the count-only assignment) as the baseline.

Every figure comes from the cluster, not from the rule: holders from the shard Leases (sampled each
second), rebalances from the group Lease (``shardlease.io/rebalanced``, its move count and the
snapshot's sequence), API writes from the dev-server's request counters (none on a real server). The
max/fair figure weighs each holder's shards with the loads the handlers report.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardlease.core.loadbalance import LoadSnapshot, bounds, imbalance, member_loads, min_moves
from shardlease.core.records import ANNOTATION_LOAD_SNAPSHOT, ANNOTATION_REBALANCED, group_lease_name
from shardlease.harness.localcluster import LocalCluster, Timings

BENCH_DIR = Path(__file__).resolve().parent.parent
EXPONENT = 1.1
SEED = 2026
THRESHOLD = 0.15
EPSILON = 0.1  # the replicas' rebalance_epsilon (the default): the bound min_moves counts towards
WRITE_VERBS = ("create", "update", "patch", "delete")


@dataclass(frozen=True)
class LiveConfig:
    """Sizes and timings of one live run; ``tiny()`` is the smoke test's."""

    shards: int = 256
    replicas: int = 8
    period: float = 5.0
    half_life: float = 1.0
    max_moves: int = 32
    phase_seconds: float = 45.0
    steady_seconds: float = 20.0  # the tail of the first phase over which writes/s are taken
    #: The first phase runs this many rebalance periods longer, so that its loads stay constant for at
    #: least that long after the group first reaches the bound (the "constant window").
    constant_periods: int = 10
    timings: Timings = Timings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
    start_timeout: float = 180.0

    @staticmethod
    def tiny() -> LiveConfig:
        return LiveConfig(shards=12, replicas=3, period=1.0, half_life=0.5, max_moves=4, phase_seconds=8.0,
                          steady_seconds=4.0, constant_periods=2, start_timeout=60.0)


def zipf_loads(shards: int, exponent: float = EXPONENT, seed: int = SEED) -> list[float]:
    """Zipf loads scaled so the median-ranked shard costs about 1, ranks shuffled with ``seed``."""
    values = [shards / (rank + 1) ** exponent / 10 for rank in range(shards)]
    random.Random(seed).shuffle(values)
    return [round(v, 4) for v in values]


def _group_lease(cluster: LocalCluster) -> dict[str, Any]:
    for item in cluster.leases():
        if item["metadata"]["name"] == group_lease_name(cluster.group):
            return dict(item["metadata"].get("annotations") or {})
    return {}


def _writes(cluster: LocalCluster) -> int | None:
    if cluster.devserver_mode == "real":
        return None
    return sum(n for (verb, resource), n in cluster.request_counts().items()
               if verb in WRITE_VERBS and resource == "leases")


class _Recorder:
    """Samples the Leases once a second and keeps what the report needs."""

    def __init__(self, cluster: LocalCluster, loads: list[float], caps: dict[str, float]) -> None:
        self.cluster = cluster
        self.loads = loads
        self.caps = caps
        self.started = time.monotonic()
        self.rebalances: list[dict[str, Any]] = []
        self._last_mark: str | None = None
        #: The holders at the last sample that had every shard held.
        self.last_owners: list[str] | None = None

    def sample(self) -> dict[str, Any]:
        snap = self.cluster.snapshot()
        holders = snap.holders()
        annotations = _group_lease(self.cluster)
        mark = annotations.get(ANNOTATION_REBALANCED)
        decoded = LoadSnapshot.decode(annotations.get(ANNOTATION_LOAD_SNAPSHOT))
        if mark and mark != self._last_mark:
            parts = mark.split(" ", 2)
            self.rebalances.append({"t": round(snap.taken - self.started, 1), "mark": mark,
                                    "moves": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None,
                                    "seq": decoded.seq if decoded else None})
            self._last_mark = mark
        held = [holders.get(i) for i in range(len(self.loads))]
        row: dict[str, Any] = {"t": round(snap.taken - self.started, 1), "held": sum(1 for h in held if h),
                               "writes": _writes(self.cluster)}
        if all(h in self.caps for h in held):
            owners = [str(h) for h in held]
            self.last_owners = owners
            row["max_over_fair"] = round(imbalance(owners, self.loads, self.caps), 3)
            limits = bounds(self.caps, owners, self.loads, THRESHOLD)
            carried = member_loads(owners, self.loads, self.caps)
            row["within"] = all(carried[m] <= limits.limit[m] * (1 + 1e-9) for m in self.caps)
            row["max_over_fair_hot_aside"] = round(max(carried[m] / limits.share[m] for m in self.caps
                                                       if limits.share[m] > 0), 3)
            row["hot"] = sorted(limits.hot)
            row["shares"] = {m: round(carried[m] / sum(self.loads), 4) for m in sorted(self.caps)}
        row["owners"] = held
        return row


def _phase(rec: _Recorder, name: str, seconds: float, *, steady: float = 0.0) -> dict[str, Any]:
    """Sample for ``seconds``; the moves are holder changes between samples."""
    began = time.monotonic()
    first_rebalance = len(rec.rebalances)
    base = rec.last_owners
    rows: list[dict[str, Any]] = []
    previous: list[str | None] | None = None
    settled: float | None = None
    while time.monotonic() - began < seconds:
        row = rec.sample()
        owners = row.pop("owners")
        if base is None:
            base = rec.last_owners
        row["moved"] = 0 if previous is None else sum(1 for a, b in zip(previous, owners, strict=True)
                                                         if a != b and b is not None)
        previous = owners
        row["since_phase"] = round(time.monotonic() - began, 1)
        if settled is None and row.get("within"):
            settled = row["since_phase"]
        rows.append(row)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - began - row["since_phase"])))
    result: dict[str, Any] = {"phase": name, "samples": rows, "within_bound_after_s": settled,
                              "rebalances": rec.rebalances[first_rebalance:],
                              "holder_changes": sum(r["moved"] for r in rows),
                              "max_over_fair_end": rows[-1].get("max_over_fair") if rows else None,
                              "max_over_fair_hot_aside_end": rows[-1].get("max_over_fair_hot_aside") if rows else None}
    if base is not None:
        # The fewest moves that bring every replica within its bound from where the phase began (the
        # holders at the end of the previous phase; the first complete sample for the first phase),
        # with the phase's loads and capacities.
        result["min_moves"] = min_moves(base, rec.loads, rec.caps, EPSILON)
        if rec.last_owners is not None:
            # Shards on another replica at the end than at the start: what the phase moved, net of the
            # shards that went away and came back (a restarted replica's).
            result["net_moves"] = sum(1 for a, b in zip(base, rec.last_owners, strict=True) if a != b)
    result["snapshot_moves"] = sum(r["moves"] or 0 for r in result["rebalances"])
    if settled is not None:
        # The constant window: from the first sample within the bound to the phase's end (the loads do
        # not change within a phase): what the group still did once it had got there.
        at = next(r["t"] for r in rows if r["since_phase"] == settled)
        later = [r for r in rows if r["t"] > at]
        result["constant_window_s"] = round(rows[-1]["t"] - at, 1)
        result["constant_snapshots"] = sum(1 for r in result["rebalances"] if r["t"] > at)
        result["constant_snapshot_moves"] = sum(r["moves"] or 0 for r in result["rebalances"] if r["t"] > at)
        result["constant_holder_changes"] = sum(r["moved"] for r in later)
    tail = [r for r in rows if r["since_phase"] >= seconds - steady] if steady else []
    if len(tail) >= 2 and tail[0]["writes"] is not None:
        span = tail[-1]["t"] - tail[0]["t"]
        result["steady_writes_per_s"] = round((tail[-1]["writes"] - tail[0]["writes"]) / span, 2)
        result["steady_window_s"] = round(span, 1)
        result["steady_holder_changes"] = sum(r["moved"] for r in tail[1:])
    return result


def run_one(config: LiveConfig, *, report_loads: bool, server: str = "dev", work_dir: Path | None = None,
            assets: str | None = None) -> dict[str, Any]:
    """One live run of the three phases; ``report_loads=False`` is the count-only baseline."""
    loads = zipf_loads(config.shards)
    work = Path(work_dir or tempfile.mkdtemp(prefix="shardlease-loadlive-"))
    load_file = work / "loads"
    work.mkdir(parents=True, exist_ok=True)
    load_file.write_text(",".join(f"{v:g}" for v in loads))
    names = [f"replica-{i}" for i in range(config.replicas)]
    caps = dict.fromkeys(names, 1.0)
    placement: dict[str, Any] = ({"devserver": "real", "assets": assets} if server == "real"
                                 else {"devserver": "process"})
    cluster = LocalCluster(
        group="loadlive", shards=config.shards, timings=config.timings, work_dir=work / "cluster",
        cwd=str(BENCH_DIR), handler="load_handler:handle",
        env={"LOAD_FILE": str(load_file), "LOAD_REPORT": "1" if report_loads else "0"},
        extra_args=["--rebalance-period", f"{config.period:g}", "--rebalance-max-moves", str(config.max_moves),
                    "--load-half-life", f"{config.half_life:g}"], **placement)
    phases = []
    with cluster:
        cluster.start()
        started = time.monotonic()
        for name in names:
            cluster.add_replica(name)
        cluster.wait_for(lambda s: s.all_held(by=names), timeout=config.start_timeout, what="every shard held")
        all_held_after = round(time.monotonic() - started, 1)
        rec = _Recorder(cluster, loads, caps)
        phases.append(_phase(rec, f"Zipf {EXPONENT}, {config.replicas} equal replicas (from the start)",
                             config.phase_seconds + config.constant_periods * config.period,
                             steady=config.steady_seconds))
        big = names[min(3, len(names) - 1)]
        cluster.replica(big).terminate()
        cluster.replica(big).wait(15)
        cluster.add_replica(big, extra_args=["--capacity", "2"])
        caps[big] = 2.0
        result = _phase(rec, f"{big} restarted with capacity 2", config.phase_seconds)
        last = next((r for r in reversed(result["samples"]) if "shares" in r), None)
        result["big_replica"] = big
        result["big_share"] = last["shares"][big] if last else None
        result["big_target_share"] = round(2 / (config.replicas + 1), 4)
        phases.append(result)
        shifted = list(loads)
        hottest = max(range(len(loads)), key=lambda s: loads[s])
        median = sorted(range(len(loads)), key=lambda s: loads[s])[len(loads) // 2]
        shifted[hottest], shifted[median] = shifted[median], shifted[hottest]
        load_file.write_text(",".join(f"{v:g}" for v in shifted))
        rec.loads = shifted
        phases.append(_phase(rec, f"load shift (shard {hottest} cools to the median, shard {median} heats up)",
                             config.phase_seconds))
    return {"report_loads": report_loads, "all_held_after_s": all_held_after, "phases": phases,
            "work_dir": str(work)}


def run(config: LiveConfig = LiveConfig(), server: str = "dev", assets: str | None = None) -> dict[str, Any]:
    """The load-aware run, then the count-only one, on fresh clusters."""
    return {"scenario": "load --live", "server": server, "shards": config.shards, "replicas": config.replicas,
            "zipf_exponent": EXPONENT, "seed": SEED, "rebalance_period_s": config.period,
            "load_half_life_s": config.half_life, "max_moves": config.max_moves, "threshold": THRESHOLD,
            "phase_seconds": config.phase_seconds,
            "timings": {"lease_duration": config.timings.lease_duration,
                        "renew_deadline": config.timings.renew_deadline,
                        "retry_period": config.timings.retry_period},
            "load_aware": run_one(config, report_loads=True, server=server, assets=assets),
            "count_only": run_one(config, report_loads=False, server=server, assets=assets)}


def _end(phase: dict[str, Any]) -> dict[str, Any]:
    """The phase's last sample with every shard held (a handoff in flight leaves a sample incomplete)."""
    return next((r for r in reversed(phase["samples"]) if "max_over_fair" in r), {})


def _summary(run_: dict[str, Any], period: float) -> list[str]:
    lines = []
    for phase in run_["phases"]:
        rebal = phase["rebalances"]
        moves = [r["moves"] for r in rebal]
        end = _end(phase)
        notes = []
        if "net_moves" in phase and (rebal or phase["holder_changes"]):
            notes.append(f"{phase['net_moves']} shard(s) on another replica at the end than at the start "
                         f"({phase['snapshot_moves']} snapshot moves), at least {phase['min_moves']} needed")
        if "constant_window_s" in phase:
            notes.append(f"once within: {phase['constant_snapshots']} snapshot(s), {phase['constant_snapshot_moves']} "
                         f"move(s), {phase['constant_holder_changes']} holder change(s) in the remaining "
                         f"{phase['constant_window_s']} s ({phase['constant_window_s'] / period:.1f} periods)")
        if "big_share" in phase:
            notes.append(f"{phase['big_replica']} carries {phase['big_share']:.1%} of the load "
                         f"(target {phase['big_target_share']:.1%})")
        if "steady_writes_per_s" in phase:
            tail = phase["steady_window_s"]
            last_t = phase["samples"][-1]["t"]
            snaps = sum(1 for r in rebal if r["t"] >= last_t - tail)
            notes.append(f"last {tail} s: {phase['steady_writes_per_s']} Lease writes/s in all, {snaps} snapshot "
                         f"write(s) (budget {tail / period:.0f}), {phase['steady_holder_changes']} holder changes")
        lines.append(f"| {phase['phase']} | {phase['within_bound_after_s']} | {end.get('max_over_fair')} | "
                     f"{end.get('max_over_fair_hot_aside')} | {len(rebal)} | {moves} | {phase['holder_changes']} | "
                     f"{'; '.join(notes)} |")
    return lines


def write(out: Path, result: dict[str, Any], meta: dict[str, Any]) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "load_live.json").write_text(json.dumps({**meta, **result}, indent=1) + "\n")
    lines = [
        "# Load-aware vs count-only with live replicas (`bench/run.py load --live`)",
        "",
        f"{result['replicas']} replica processes, {result['shards']} shards, Zipf {result['zipf_exponent']} "
        f"loads (seed {result['seed']}) reported by `bench/load_handler.py`, server `{result['server']}`; "
        f"rebalance period {result['rebalance_period_s']} s, load half-life {result['load_half_life_s']} s, at most "
        f"{result['max_moves']} moves per rebalance, lease {result['timings']['lease_duration']} s / renew "
        f"{result['timings']['renew_deadline']} s / retry {result['timings']['retry_period']} s; "
        f"{result['phase_seconds']} s per phase, sampled each second. Generated {meta['generated']} from "
        f"{meta['git']} by `{meta['command']}`.",
        "",
        "Read from the cluster: holders from the shard Leases, rebalances (and their move counts) from the group",
        "Lease's `shardlease.io/rebalanced`, writes from the dev-server's request counters. `within`: seconds from",
        f"the phase's start until every replica is within (1 + {result['threshold']}) x its fair share (shards too hot",
        "for any bound set aside). `max/fair`: the busiest replica's load over its fair share at the phase's end;",
        "`(hot aside)`: the same with the shards hotter than any bound set aside (each carried alone by its replica:",
        "no placement does better). `moves per rebalance`: from each `shardlease.io/rebalanced` seen.",
        "",
    ]
    for key, title in (("load_aware", "Load-aware (handlers report loads)"),
                       ("count_only", "Count-only (no loads reported)")):
        r = result[key]
        lines += [f"## {title}", "", f"All {result['shards']} shards held {r['all_held_after_s']} s after the "
                  "replicas were started.", "",
                  "| phase | within after (s) | max/fair at end | (hot aside) | rebalances | moves per rebalance "
                  "| holder changes | notes |",
                  "|---|---|---|---|---|---|---|---|", *_summary(r, result["rebalance_period_s"]), ""]
    aware = result["load_aware"]["phases"][0].get("steady_writes_per_s")
    count = result["count_only"]["phases"][0].get("steady_writes_per_s")
    if aware is not None and count is not None:
        lines += [f"Lease writes/s in the steady window: load-aware {aware}, count-only {count}. Both are "
                  "mostly renewals (every held Lease each retry period), whose pace varies with how busy the "
                  "replicas are, so their difference is noise, not the snapshot's cost: the snapshot writes "
                  "are counted directly in the notes above (one per `shardlease.io/rebalanced` change).",
                  ""]
    lines += ["## max/fair over time (load-aware, one sample per 5 s)", "",
              "| phase | t (s) | max/fair | (hot aside) | moved since previous sample |", "|---|---|---|---|---|"]
    for phase in result["load_aware"]["phases"]:
        for row in phase["samples"][::5]:
            lines.append(f"| {phase['phase'][:40]} | {row['since_phase']} | {row.get('max_over_fair')} | "
                         f"{row.get('max_over_fair_hot_aside')} | {row['moved']} |")
    (out / "load_live.md").write_text("\n".join(lines) + "\n")


def tiny_check(result: dict[str, Any]) -> Sequence[str]:
    """Problems in a tiny run (for the smoke test): empty means it measured what it should."""
    problems = []
    for key in ("load_aware", "count_only"):
        for phase in result[key]["phases"]:
            if not phase["samples"] or "max_over_fair" not in phase["samples"][-1]:
                problems.append(f"{key}: {phase['phase']}: no complete sample")
    if not result["load_aware"]["phases"][0]["rebalances"] and not result["load_aware"]["phases"][1]["rebalances"]:
        problems.append("load_aware: no rebalance seen on the group Lease")
    return problems
