"""Scenario ``load``: load-aware assignment against today's count-only assignment (docs/load.md).

S=256 shards with Zipf-distributed loads (exponent 1.1, ranks shuffled with a fixed seed), N=8
replicas of capacity 1; then one replica rolled to capacity 2; then a load shift (the hottest shard
cools to the median, a median shard heats to the old hottest). Period by period, it reports the
busiest replica's load over its fair share, the moves of every rebalance against the lower bound
(``core.loadbalance.min_moves``), the periods until the group is back within its bound after each
change, and the same figures for the count-only assignment.

The decisions are computed with the functions the replicas run (``core.loadbalance``: quantise,
imbalance, the snapshot and its ``assign``; the steward's rule, ``core.loadplan.worth_rebalancing``), one snapshot
per rebalance period at most, no server involved: this measures the rule, the wire is measured by
``tests/integration/test_load.py`` (real processes, dev-server and kube-apiserver), ``bench/run.py load
--live`` (``bench/scenarios/load_live.py``: 8 live replicas x 256 shards) and
``bench/renew_body.py``. Loads are taken as reported exactly (the smoothing only delays them).

Usage: ``python bench/run.py load`` (writes ``bench/results/load.json`` and ``load.md``).
"""

from __future__ import annotations

import datetime as _dt
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shardlease.core.assignment import assign
from shardlease.core.loadbalance import (
    LoadSnapshot,
    bounds,
    fixable_imbalance,
    imbalance,
    member_loads,
    min_moves,
    quantise,
)
from shardlease.core.loadplan import Rebalance, worth_rebalancing

SHARDS = 256
REPLICAS = 8
EXPONENT = 1.1
SEED = 2026
EPSILON = 0.1
THRESHOLD = 0.15
MAX_MOVES = 32
SETTINGS = Rebalance(period=60.0, threshold=THRESHOLD, epsilon=EPSILON, max_moves=MAX_MOVES)  # the steward's
PERIODS = 12  # per phase; the last 10 of the first phase check that nothing moves under constant loads


def zipf_loads(shards: int, exponent: float, seed: int) -> list[float]:
    values = [1 / (rank + 1) ** exponent for rank in range(shards)]
    random.Random(seed).shuffle(values)
    return values


def _figures(owners: list[str], loads: Sequence[float], caps: dict[str, float]) -> dict[str, Any]:
    """Busiest over fair share, and the same with shards too hot for any bound set aside (their
    replicas carry them alone: the best any placement can do)."""
    limits = bounds(caps, owners, loads, EPSILON)
    carried = member_loads(owners, loads, caps)
    total = sum(loads)
    fair = {m: total * caps[m] / sum(caps.values()) for m in caps}
    hottest = max(loads) / max(fair.values())
    return {"max_over_fair": round(imbalance(owners, loads, caps), 3),
            "within_bound": all(carried[m] <= limits.limit[m] * (1 + 1e-9) for m in caps),
            "max_over_bound_share": round(max(carried[m] / limits.share[m] for m in caps if limits.share[m] > 0), 3),
            "hottest_shard_over_fair": round(hottest, 3),
            "too_hot": sorted(limits.hot)}


def _phase(name: str, owners: list[str], loads: list[float], caps: dict[str, float],
           periods: int) -> tuple[list[str], dict[str, Any]]:
    """``periods`` rebalance periods of the steward's rule from ``owners``; returns the owners after."""
    rows = []
    settled_at = None
    q = list(quantise(loads))
    seq = 0
    for period in range(1, periods + 1):
        moved = 0
        bound = min_moves(owners, q, caps, EPSILON)
        if worth_rebalancing(owners, q, caps, SETTINGS) is not None:
            seq += 1
            snap = LoadSnapshot(1, len(q), seq, _dt.datetime.now(_dt.timezone.utc), tuple(q), tuple(owners),
                                f"imbalance {fixable_imbalance(owners, q, caps, EPSILON):.2f}", EPSILON, MAX_MOVES)
            after = list(snap.assign(caps).owners)
            moved = sum(1 for a, b in zip(owners, after, strict=True) if a != b)
            owners = after
        figures = _figures(owners, q, caps)
        rows.append({"period": period, "moves": moved, "min_moves_at_start": bound, **figures})
        if settled_at is None and figures["within_bound"]:
            settled_at = period
    total_moves = sum(r["moves"] for r in rows)
    first_bound = rows[0]["min_moves_at_start"]
    return owners, {"phase": name, "periods": rows, "settled_after_periods": settled_at,
                    "moves": total_moves, "min_moves": first_bound,
                    "moves_over_min": round(total_moves / first_bound, 2) if first_bound else None,
                    "moves_after_settled": sum(r["moves"] for r in rows if settled_at and r["period"] > settled_at)}


def run(quick: bool = False) -> dict[str, Any]:
    """The three phases (``quick`` changes nothing: the computation takes about a second)."""
    loads = zipf_loads(SHARDS, EXPONENT, SEED)
    names = [f"replica-{i}" for i in range(REPLICAS)]
    caps = dict.fromkeys(names, 1.0)
    count_owners = assign("load", SHARDS, names)
    owners = [count_owners[i] for i in range(SHARDS)]
    q = list(quantise(loads))
    phases = []
    baseline = [{"phase": "Zipf 1.1, 8 equal replicas", **_figures(owners, q, caps)}]
    owners, result = _phase("Zipf 1.1, 8 equal replicas (from the count assignment)", owners, loads, caps, PERIODS)
    phases.append(result)
    caps["replica-3"] = 2.0  # one replica rolled to twice the size: the count assignment cannot see it
    baseline.append({"phase": "replica-3 at capacity 2", **_figures([count_owners[i] for i in range(SHARDS)], q, caps),
                     "replica-3_share": round(member_loads([count_owners[i] for i in range(SHARDS)], q, caps)["replica-3"]
                                              / sum(q), 4)})
    owners, result = _phase("replica-3 at capacity 2", owners, loads, caps, PERIODS)
    result["replica-3_share"] = round(member_loads(owners, list(quantise(loads)), caps)["replica-3"] / sum(quantise(loads)), 4)
    result["replica-3_target_share"] = round(2 / (REPLICAS + 1), 4)
    phases.append(result)
    shifted = list(loads)
    hottest = max(range(SHARDS), key=lambda s: shifted[s])
    median = sorted(range(SHARDS), key=lambda s: shifted[s])[SHARDS // 2]
    shifted[hottest], shifted[median] = shifted[median], shifted[hottest]
    qs = list(quantise(shifted))
    baseline.append({"phase": "load shift", **_figures([count_owners[i] for i in range(SHARDS)], qs, caps)})
    owners, result = _phase(f"load shift (shard {hottest} cools to the median, shard {median} heats up)", owners,
                            shifted, caps, PERIODS)
    phases.append(result)
    return {"scenario": "load", "shards": SHARDS, "replicas": REPLICAS, "zipf_exponent": EXPONENT, "seed": SEED,
            "epsilon": EPSILON, "threshold": THRESHOLD, "max_moves": MAX_MOVES, "periods_per_phase": PERIODS,
            "method": "the replicas' own functions (core.loadbalance, the steward rule of core.loadplan), one "
                      "snapshot per period at most; no server",
            "count_only": baseline, "load_aware": phases}


def write(out: Path, result: dict[str, Any], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps({**meta, **result}, indent=1) + "\n")
    lines = [
        "# Load-aware assignment vs count-only (`bench/run.py load`)",
        "",
        f"Computed with {result['method']}. S={result['shards']}, N={result['replicas']}, Zipf exponent "
        f"{result['zipf_exponent']} (seed {result['seed']}), epsilon {result['epsilon']}, threshold "
        f"{result['threshold']}, at most {result['max_moves']} moves per period. Generated {meta['generated']} "
        f"from {meta['git']}.",
        "",
        "`max/fair`: the busiest replica's load over its fair share. `max/fair (hot aside)`: the same with",
        "shards hotter than any bound set aside (each is carried alone by its replica; no placement can do",
        "better). `within`: every replica within its bound.",
        "",
        "## Count-only (today)",
        "",
        "| phase | max/fair | max/fair (hot aside) | hottest shard/fair | within |",
        "|---|---|---|---|---|",
    ]
    for row in result["count_only"]:
        lines.append(f"| {row['phase']} | {row['max_over_fair']} | {row['max_over_bound_share']} | "
                     f"{row['hottest_shard_over_fair']} | {'yes' if row['within_bound'] else 'no'} |")
    lines += ["", "## Load-aware", ""]
    for phase in result["load_aware"]:
        lines.append(f"### {phase['phase']}")
        lines.append("")
        extra = ""
        if "replica-3_share" in phase:
            extra = (f"; replica-3 carries {phase['replica-3_share']:.1%} of the load (target "
                     f"{phase['replica-3_target_share']:.1%})")
        lines.append(f"Within the bound after {phase['settled_after_periods']} period(s); {phase['moves']} moves "
                     f"against a lower bound of {phase['min_moves']} ({phase['moves_over_min']}x); "
                     f"{phase['moves_after_settled']} moves after settling{extra}.")
        lines.append("")
        lines.append("| period | moves | max/fair | max/fair (hot aside) | within |")
        lines.append("|---|---|---|---|---|")
        for row in phase["periods"]:
            lines.append(f"| {row['period']} | {row['moves']} | {row['max_over_fair']} | {row['max_over_bound_share']} "
                         f"| {'yes' if row['within_bound'] else 'no'} |")
        lines.append("")
    (out / "load.md").write_text("\n".join(lines) + "\n")
