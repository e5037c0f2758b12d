"""Benchmark: balance and movement of shard assignment (pure computation, no server).

What it measures and why this way:

* For S shards and N replicas (random member names, seeded, ~20 member sets per cell), three ways to
  map shards to replicas are compared:
  - ``bounded``: shardlease's ``assign`` (md5 ring, 160 vnodes, bounded loads, cap ceil(S/N));
  - ``bounded_1.25``: the same with ``load_factor=1.25`` (cap ceil(1.25 S/N));
  - ``ring``: the same uhashring ring without load bounds (each shard to its first member);
  - ``modulo``: md5(shard key) mod N over the sorted members, what a naive implementation does.
* Balance: peak load / mean load (S/N). 1.0 is perfect; whole shards make ceil(S/N)/(S/N) the best
  possible, e.g. 1.2 for S=16, N=5.
* Movement, because every moved shard is a handover (a handler stopped on one replica, started on
  another): shards whose owner changed when one replica joins, divided by the minimum S/(N+1), and
  when one (random) replica leaves, divided by the minimum S/N. 1.0 is the best possible.
* Prior-art figures (/work/shared/reference/prior-art.md: bounded loads, one-at-a-time placement) are
  printed next to ours for the cells they cover.

Usage: ``python bench/balance.py [--quick] [--trials N] [--seed N] [--out DIR]``.
Writes ``bench/results/balance.json``, ``balance.md``, ``balance_peak.png``, ``balance_moves.png`` and
``balance_moves_leave.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(REPO_ROOT))

from uhashring import HashRing  # noqa: E402

from shardlease.core.assignment import VNODES, assign, moved_shards  # noqa: E402
from shardlease.core.records import shard_lease_name  # noqa: E402

GROUP = "bench"
SHARD_COUNTS = (16, 64, 256, 1024)
MEMBER_COUNTS = (2, 3, 4, 5, 8, 10, 16, 24, 30, 32)
QUICK_SHARD_COUNTS = (16, 256)
QUICK_MEMBER_COUNTS = (3, 10, 30)

# Prior art (docs: /work/shared/reference/prior-art.md), bounded loads with cap ceil(S/N) placed one
# shard at a time: (S, N) -> (plain ring peak/mean avg, bounded peak/mean avg, bounded moves/min on +1 avg).
PRIOR_ART: dict[tuple[int, int], dict[str, Any]] = {
    (64, 5): {"ring_peak": 1.31, "bounded_peak": 1.016, "bounded_add": "1.25-1.27"},
    (256, 10): {"ring_peak": 1.33, "bounded_peak": 1.016, "bounded_add": "1.33-1.43"},
    (1024, 10): {"ring_peak": 1.20, "bounded_peak": 1.006, "bounded_add": "1.25"},
    (256, 30): {"ring_peak": None, "bounded_peak": 1.055, "bounded_add": "1.85-1.95"},
}

Strategy = Callable[[int, Sequence[str]], dict[int, str]]


def _md5_int(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")


def strategy_bounded(shards: int, members: Sequence[str]) -> dict[int, str]:
    return assign(GROUP, shards, members)


def strategy_bounded_125(shards: int, members: Sequence[str]) -> dict[int, str]:
    return assign(GROUP, shards, members, load_factor=1.25)


def strategy_ring(shards: int, members: Sequence[str]) -> dict[int, str]:
    ring = HashRing(nodes=sorted(set(members)), vnodes=VNODES)
    return {i: ring.get_node(shard_lease_name(GROUP, i)) for i in range(shards)}


def strategy_modulo(shards: int, members: Sequence[str]) -> dict[int, str]:
    ordered = sorted(set(members))
    return {i: ordered[_md5_int(shard_lease_name(GROUP, i)) % len(ordered)] for i in range(shards)}


STRATEGIES: dict[str, Strategy] = {
    "bounded": strategy_bounded,
    "bounded_1.25": strategy_bounded_125,
    "ring": strategy_ring,
    "modulo": strategy_modulo,
}


def _summary(values: list[float]) -> dict[str, float]:
    return {"avg": round(statistics.fmean(values), 4), "worst": round(max(values), 4)}


def measure_cell(shards: int, members: int, trials: int, seed: int) -> dict[str, Any]:
    """All strategies on the same random member sets, so they are compared like for like."""
    rng = random.Random(f"{seed}/{shards}/{members}")
    member_sets = []
    for _ in range(trials):
        names = [f"pod-{rng.getrandbits(48):012x}" for _ in range(members + 1)]
        member_sets.append((names[:members], names[members], rng.randrange(members)))
    cell: dict[str, Any] = {"shards": shards, "members": members, "trials": trials}
    for name, strategy in STRATEGIES.items():
        peaks: list[float] = []
        adds: list[float] = []
        removes: list[float] = []
        seconds: list[float] = []
        for base, newcomer, victim in member_sets:
            started = time.perf_counter()
            before = strategy(shards, base)
            seconds.append(time.perf_counter() - started)
            peaks.append(max(Counter(before.values()).values()) / (shards / members))
            joined = strategy(shards, [*base, newcomer])
            adds.append(len(moved_shards(before, joined)) / (shards / (members + 1)))
            if members >= 2:
                left = strategy(shards, [m for i, m in enumerate(base) if i != victim])
                removes.append(len(moved_shards(before, left)) / (shards / members))
        cell[name] = {
            "peak_over_mean": _summary(peaks),
            "moves_on_add_over_min": _summary(adds),
            "moves_on_remove_over_min": _summary(removes) if removes else None,
            "compute_ms": round(1000 * statistics.median(seconds), 3),
        }
    cell["best_possible_peak"] = round(math.ceil(shards / members) / (shards / members), 4)
    return cell


def run(shard_counts: Sequence[int], member_counts: Sequence[int], trials: int, seed: int) -> list[dict[str, Any]]:
    cells = []
    for shards in shard_counts:
        for members in member_counts:
            cells.append(measure_cell(shards, members, trials, seed))
    return cells


def format_table(cells: list[dict[str, Any]]) -> str:
    """Markdown table: one row per (S, N), avg (worst) per strategy."""

    def pair(entry: dict[str, float] | None) -> str:
        return "-" if entry is None else f"{entry['avg']:.2f} ({entry['worst']:.2f})"

    header = (
        "| S | N | best peak | peak/mean bounded | bounded 1.25 | ring | modulo | moves/min +1 bounded "
        "| bounded 1.25 | ring | modulo | moves/min -1 bounded | bounded 1.25 | ring | modulo | assign ms |\n"
        "|---:|---:|---:|---|---|---|---|---|---|---|---|---|---|---|---|---:|"
    )
    rows = [header]
    for c in cells:
        rows.append(
            f"| {c['shards']} | {c['members']} | {c['best_possible_peak']:.3f} | "
            + " | ".join(pair(c[s]["peak_over_mean"]) for s in STRATEGIES)
            + " | "
            + " | ".join(pair(c[s]["moves_on_add_over_min"]) for s in STRATEGIES)
            + " | "
            + " | ".join(pair(c[s]["moves_on_remove_over_min"]) for s in STRATEGIES)
            + f" | {c['bounded']['compute_ms']:.1f} |"
        )
    return "\n".join(rows)


def format_prior_art(cells: list[dict[str, Any]]) -> str:
    by_key = {(c["shards"], c["members"]): c for c in cells}
    rows = [
        "| S, N | prior art: ring peak/mean | ours: ring | prior art: bounded peak/mean | ours: bounded "
        "| prior art: bounded moves/min on +1 | ours: bounded |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, prior in PRIOR_ART.items():
        cell = by_key.get(key)
        if cell is None:
            continue
        ring_prior = "-" if prior["ring_peak"] is None else f"{prior['ring_peak']:.2f}"
        rows.append(
            f"| {key[0]}, {key[1]} | {ring_prior} | {cell['ring']['peak_over_mean']['avg']:.2f} "
            f"| {prior['bounded_peak']:.3f} | {cell['bounded']['peak_over_mean']['avg']:.3f} "
            f"| {prior['bounded_add']} | {cell['bounded']['moves_on_add_over_min']['avg']:.2f} "
            f"(worst {cell['bounded']['moves_on_add_over_min']['worst']:.2f}) |"
        )
    return "\n".join(rows)


def reading(cells: list[dict[str, Any]]) -> list[str]:
    """A few conclusions, with their numbers taken from this run."""
    bounded_gap = max(c["bounded"]["peak_over_mean"]["worst"] - c["best_possible_peak"] for c in cells)
    large = [c for c in cells if c["shards"] >= 256] or cells
    ring_peak = max(c["ring"]["peak_over_mean"]["avg"] for c in large)
    modulo_peak = max(c["modulo"]["peak_over_mean"]["avg"] for c in large)
    modulo_moves = min(c["modulo"]["moves_on_add_over_min"]["avg"] / (c["members"] + 1) for c in cells)
    worst_leave = max(cells, key=lambda c: c["bounded"]["moves_on_remove_over_min"]["avg"])
    leave_shards = worst_leave["bounded"]["moves_on_remove_over_min"]["avg"] * worst_leave["shards"] / worst_leave["members"]
    avg_add = {k: statistics.fmean(c[k]["moves_on_add_over_min"]["avg"] for c in cells) for k in STRATEGIES}
    avg_remove = {k: statistics.fmean(c[k]["moves_on_remove_over_min"]["avg"] for c in cells) for k in STRATEGIES}
    return [
        (
            "- Bounded loads reach the best balance whole shards allow (ceil(S/N) on the busiest replica) "
            "in every row and member set; "
            if bounded_gap < 1e-9
            else f"- Bounded loads are within {bounded_gap:.3f} of the best balance whole shards allow; "
        )
        + f"at S >= {min(c['shards'] for c in large)} the plain ring's average peak/mean reaches "
        f"{ring_peak:.2f} and modulo's {modulo_peak:.2f}.",
        f"- Modulo moves at least {modulo_moves:.0%} of all shards on every join (N/(N+1) expected).",
        "- The plain ring moves close to the minimum but pays for it in balance. Bounded loads move "
        "more than the minimum, because replicas at the cap push shards to their next choice and a "
        "change of membership changes those overflows too.",
        f"- The most moves on leave (relative to the minimum) were at S={worst_leave['shards']}, "
        f"N={worst_leave['members']}: {leave_shards:.1f} of {worst_leave['shards']} shards on average. "
        "When N divides S and S/N is small, the cap ceil(S/(N-1)) rises by one after a leave, and shards "
        "that overflowed before return to their first choice.",
        f"- load_factor 1.25 (cap ceil(1.25 S/N)) cuts the average moves/min on join from {avg_add['bounded']:.2f} "
        f"to {avg_add['bounded_1.25']:.2f} and on leave from {avg_remove['bounded']:.2f} to "
        f"{avg_remove['bounded_1.25']:.2f} (averages over all rows), for a worst peak/mean of "
        f"{max(c['bounded_1.25']['peak_over_mean']['worst'] for c in large):.2f} at S >= {min(c['shards'] for c in large)}.",
    ]


def plot(cells: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Three figures, one panel per shard count: peak/mean, moves/min on join and on leave, against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shard_counts = sorted({c["shards"] for c in cells})
    styles = {"bounded": ("tab:blue", "o"), "bounded_1.25": ("tab:green", "D"), "ring": ("tab:orange", "s"),
              "modulo": ("tab:gray", "^")}
    written = []
    figures = [
        ("balance_peak.png", "peak_over_mean", "peak load / mean load", False),
        ("balance_moves.png", "moves_on_add_over_min", "shards moved on join / minimum S/(N+1)", True),
        ("balance_moves_leave.png", "moves_on_remove_over_min", "shards moved on leave / minimum S/N", True),
    ]
    for filename, metric, ylabel, log in figures:
        cols = min(2, len(shard_counts))
        rows = math.ceil(len(shard_counts) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
        for ax, shards in zip(axes.flat, shard_counts):
            sub = sorted((c for c in cells if c["shards"] == shards), key=lambda c: c["members"])
            ns = [c["members"] for c in sub]
            for name, (color, marker) in styles.items():
                avg = [c[name][metric]["avg"] for c in sub]
                worst = [c[name][metric]["worst"] for c in sub]
                ax.plot(ns, avg, color=color, marker=marker, label=f"{name} (avg)")
                ax.plot(ns, worst, color=color, marker=marker, linestyle=":", alpha=0.6, label=f"{name} (worst)")
            if metric == "peak_over_mean":
                ax.plot(ns, [c["best_possible_peak"] for c in sub], color="black", linestyle="--",
                        linewidth=1, label="best possible (whole shards)")  # fmt: skip
            else:
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="minimum")
            if log:
                ax.set_yscale("log")
            ax.set_title(f"S = {shards} shards")
            ax.set_xlabel("replicas N")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        for ax in list(axes.flat)[len(shard_counts):]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small")
        fig.suptitle(f"shardlease assignment: {ylabel} (dotted: worst of the member sets)")
        fig.tight_layout(rect=(0, 0.08, 1, 0.96))
        path = out_dir / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cells and trials: a smoke run")
    parser.add_argument("--trials", type=int, default=None, help="member sets per cell (default 20, quick 3)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--out", type=Path, default=None,
        help="directory for the results (default bench/results; bench/results/quick with --quick, so a "
        "smoke run never overwrites the full results)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR

    shard_counts = QUICK_SHARD_COUNTS if args.quick else SHARD_COUNTS
    member_counts = QUICK_MEMBER_COUNTS if args.quick else MEMBER_COUNTS
    trials = args.trials or (3 if args.quick else 20)
    started = time.perf_counter()
    cells = run(shard_counts, member_counts, trials, args.seed)
    elapsed = time.perf_counter() - started

    table = format_table(cells)
    prior = format_prior_art(cells)
    print(table)
    print()
    print(prior)
    print(f"\n{len(cells)} cells x {trials} member sets in {elapsed:.1f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "quick": args.quick,
        "trials": trials,
        "seed": args.seed,
        "vnodes": VNODES,
        "elapsed_s": round(elapsed, 1),
    }
    (args.out / "balance.json").write_text(json.dumps({"meta": meta, "cells": cells}, indent=1) + "\n")
    pngs = plot(cells, args.out)
    markdown = [
        "# Shard assignment: balance and movement",
        "",
        f"Generated by `python bench/balance.py{' --quick' if args.quick else ''}` on {meta['generated']} "
        f"(Python {meta['python']}, {trials} random member sets per row, seed {args.seed}).",
        "",
        "Strategies: **bounded** = `shardlease.core.assignment.assign` (uhashring md5 ring, 160 vnodes, "
        "cap ceil(S/N), shards placed in rounds of first choices); **bounded 1.25** = the same with "
        "`load_factor=1.25`; **ring** = the same ring without "
        "load bounds; **modulo** = md5(shard key) mod N over sorted members.",
        "Cells are `average (worst)`. peak/mean: 1.0 is perfect, `best peak` is the best whole shards allow. "
        "moves/min +1: shards moved when a replica joins / (S/(N+1)); -1: when a random replica "
        "leaves / (S/N); 1.0 is the minimum. `assign ms`: median time of one cold `assign` call.",
        "",
        table,
        "",
        "## Against prior art",
        "",
        "Prior art from `/work/shared/reference/prior-art.md` (simulations, uhashring 2.5, bounded loads "
        "placed one shard at a time).",
        "",
        prior,
        "",
        "## Reading",
        "",
        *reading(cells),
        "",
        "Plots: " + ", ".join(f"`{p.name}`" for p in pngs) + ".",
        "",
    ]
    (args.out / "balance.md").write_text("\n".join(markdown))
    print(f"wrote {args.out / 'balance.json'}, {args.out / 'balance.md'}, " + ", ".join(str(p) for p in pngs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
