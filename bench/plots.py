"""Figures of the benchmark suite (matplotlib, Agg backend), drawn from ``suite.json``.

Latencies are drawn as multiples of the lease duration so the scaled (3 s) and default (15 s)
profiles share an axis: the question a figure answers is "how many lease durations does a shard go
unowned", which is what the timing choice scales.

    python bench/run.py --render        # redraw from bench/results/suite.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OURS = "shardlease"
BASELINE = "baseline"
PROFILES = ("scaled", "default")
COLORS = {OURS: "tab:blue", BASELINE: "tab:orange"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lease(suite: dict[str, Any], profile: str) -> float:
    return float((suite.get("meta", {}).get("profiles", {}).get(profile) or {}).get("lease_duration") or 1)


def _result(suite: dict[str, Any], scenario: str, profile: str, impl: str) -> dict[str, Any]:
    value = (suite.get("scenarios", {}).get(scenario) or {}).get(profile, {}).get(impl)
    return value if isinstance(value, dict) else {}


def draw_reheld(suite: dict[str, Any], out: Path, prefix: str = "suite") -> Path | None:
    """Per-shard time until re-held after SIGTERM and SIGKILL, every sample, in lease durations."""
    plt = _plt()
    series = []
    for scenario in ("handoff", "failover"):
        for profile in PROFILES:
            for impl in (OURS, BASELINE):
                r = _result(suite, scenario, profile, impl)
                samples = [x for step in r.get("steps", []) for x in step.get("per_shard_s", [])]
                if samples:
                    series.append((scenario, profile, impl, [x / _lease(suite, profile) for x in samples]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = []
    for pos, (scenario, profile, impl, values) in enumerate(series):
        jitter = [pos + 0.25 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]
        ax.scatter(jitter, values, s=8, alpha=0.5, color=COLORS[impl])
        ax.boxplot([values], positions=[pos], widths=0.5, showfliers=False, whis=(0, 100))
        labels.append(f"{'SIGTERM' if scenario == 'handoff' else 'SIGKILL'}\n{profile}\n{impl}")
    ax.set_xticks(range(len(series)), labels, fontsize="small")
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.text(len(series) - 0.5, 1.0, " 1 lease", va="bottom", ha="right", fontsize="small", color="gray")
    ax.set_ylabel("time until re-held / lease duration")
    ax.set_title("Per-shard time until a surviving replica holds the shard (every shard of every round)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / f"{prefix}_reheld.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_timings(suite: dict[str, Any], out: Path, prefix: str = "suite") -> Path | None:
    """Cold start and scale-up, in lease durations; the baseline never rebalances (drawn as absent)."""
    plt = _plt()
    bars: list[tuple[str, str, float | None, float | None]] = []
    for profile in PROFILES:
        lease = _lease(suite, profile)
        for label, scenario, key in (("cold start: all held", "cold-start", "all_held_s"),
                                     ("cold start: balanced", "cold-start", "balanced_s"),
                                     ("scale up: balanced (max)", "scale-up", "balanced.max")):
            values = []
            for impl in (OURS, BASELINE):
                r = _result(suite, scenario, profile, impl)
                v: Any = r
                for part in key.split("."):
                    v = v.get(part) if isinstance(v, dict) else None
                values.append(v / lease if isinstance(v, (int, float)) else None)
            if any(v is not None for v in values):
                bars.append((f"{label}\n({profile})", profile, values[0], values[1]))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (label, _profile, ours, base) in enumerate(bars):
        for offset, impl, value in ((-0.2, OURS, ours), (0.2, BASELINE, base)):
            if value is None:
                ax.text(i + offset, 0.02, "never" if impl == BASELINE and "balanced" in label else "-",
                        ha="center", va="bottom", fontsize="x-small", rotation=90)
                continue
            ax.bar(i + offset, value, width=0.4, color=COLORS[impl], label=impl if i == 0 else None)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize="small")
    ax.set_ylabel("seconds / lease duration")
    ax.set_title("Cold start and scale-up (process start-up included)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / f"{prefix}_timings.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_costs(suite: dict[str, Any], out: Path, prefix: str = "suite") -> Path | None:
    """API requests per second by verb (S=256, N=5) and the per-replica CPU and memory."""
    plt = _plt()
    api = [(p, i, _result(suite, "api-cost", p, i)) for p in PROFILES for i in (OURS, BASELINE)]
    api = [(p, i, r) for p, i, r in api if r.get("rates")]
    rep = [(p, i, _result(suite, "replica-cost", p, i)) for p in PROFILES for i in (OURS, BASELINE)]
    rep = [(p, i, r) for p, i, r in rep if r.get("cpu_ms_per_renewal") is not None]
    if not api and not rep:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    verbs = sorted({v for _, _, r in api for v in r["rates"]})
    ax = axes[0]
    width = 0.8 / max(1, len(verbs))
    palette = {"get": "tab:red", "update": "tab:green", "create": "tab:purple", "list": "tab:gray",
               "watch": "tab:olive", "delete": "tab:brown"}
    for j, verb in enumerate(verbs):
        xs = [k + (j - (len(verbs) - 1) / 2) * width for k in range(len(api))]
        values = [r["rates"].get(verb, 0.0) for _, _, r in api]
        ax.bar([x for x, v in zip(xs, values) if v > 0], [v for v in values if v > 0], width=width,
               label=verb, color=palette.get(verb))
        for x, v in zip(xs, values):
            if v <= 0:  # a log axis cannot show zero; say it
                ax.annotate(f"0 {verb}", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                            textcoords="offset points", ha="center", fontsize="x-small", rotation=90)
    ax.set_xticks(range(len(api)), [f"{i}\n{p}" for p, i, _ in api], fontsize="small")
    ax.set_yscale("log")
    ax.set_ylabel("requests / s")
    shards = next((r.get("shards") for _, _, r in api), "?")
    replicas = next((r.get("replicas") for _, _, r in api), "?")
    ax.set_title(f"API requests by verb, S={shards}, N={replicas}", fontsize="medium")
    ax.legend(fontsize="small")
    for ax, key, label in ((axes[1], "cpu_ms_per_renewal", "CPU ms per renewal"),
                           (axes[2], "peak_rss_mib", "peak RSS (MiB)")):
        ax.bar(range(len(rep)), [r.get(key) or 0 for _, _, r in rep], color=[COLORS[i] for _, i, _ in rep])
        ax.set_xticks(range(len(rep)), [f"{i}\n{p}" for p, i, _ in rep], fontsize="small")
        n = next((r.get("shards") for _, _, r in rep), "?")
        ax.set_title(f"{label}, one replica holding {n} shards", fontsize="medium")
    for ax in axes:
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / f"{prefix}_costs.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(suite: dict[str, Any], out: Path, prefix: str = "suite") -> list[Path]:
    """Every figure the stored results allow; returns the files written (``{prefix}_*.png``:
    ``suite`` for the dev-server's results, ``suite_real`` for the real kube-apiserver's)."""
    written = []
    for fn in (draw_reheld, draw_timings, draw_costs):
        path = fn(suite, out, prefix)
        if path is not None:
            written.append(path)
    return written
