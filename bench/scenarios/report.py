"""Turn ``suite.json`` into comparison tables, target verdicts, ``suite.md`` and ``docs/benchmarks.md``.

Kept apart from the scenarios so a report can be re-rendered from stored results
(``python bench/run.py --render``) without running anything, e.g. after editing the notes below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

OURS = "shardlease"
BASELINE = "baseline"
PROFILE_ORDER = ("scaled", "default")

Getter = Callable[[dict[str, Any]], Any]


def _get(path: str) -> Getter:
    """``"a.b.c"`` -> a function reading that nested key (``None`` if any step is missing)."""

    def read(data: dict[str, Any]) -> Any:
        value: Any = data
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    return read


def _share(released: str, total: str) -> Getter:
    def read(data: dict[str, Any]) -> Any:
        r, t = _get(released)(data), _get(total)(data)
        return None if r is None or not t else f"{r}/{t}"

    return read


# scenario -> [(metric label, getter)]; lower is better for every numeric metric, so ours / baseline
# below 1 means shardlease does better.
#: Per-shard time until re-held, shared by the SIGTERM and SIGKILL scenarios.
_REHELD_ROWS: list[tuple[str, Getter]] = [
    (f"re-held {stat} ({unit})", _get(f"reheld.{stat}{suffix}"))
    for unit, suffix in (("s", ""), ("x lease", "_x_lease"))
    for stat in ("p50", "p99", "max")
]
_RECOVERY_ROWS: list[tuple[str, Getter]] = [
    ("balanced again, worst (s)", _get("balanced_max_s")),
    ("shards re-held (samples)", _get("reheld.n")),
]

METRICS: dict[str, list[tuple[str, Getter]]] = {
    "cold-start": [
        ("every shard held (s)", _get("all_held_s")),
        ("every shard held (x lease)", _get("all_held_x_lease")),
        ("held as assigned, balanced (s)", _get("balanced_s")),
        ("first Lease taken (s; process start-up)", _get("first_acquire_s")),
        ("from the first Lease taken to settled (s)", _get("balanced_after_first_acquire_s")),
        ("peak / mean load", _get("load.peak_over_mean")),
        ("acquisitions (S = minimum)", _get("acquisitions")),
    ],
    "handoff": [
        *_REHELD_ROWS,
        ("shards released by the victim", _share("released", "victim_shards")),
        *_RECOVERY_ROWS,
    ],
    "failover": [*_REHELD_ROWS, *_RECOVERY_ROWS],
    "scale-up": [
        ("balanced again p50 (s)", _get("balanced.p50")),
        ("balanced again max (s)", _get("balanced.max")),
        ("balanced again max (x lease)", _get("balanced.max_x_lease")),
        ("same, from the newcomer's member Lease, max (s)", _get("balanced_after_join.max")),
        ("shards moved / minimum S/N, mean", _get("moved_over_min_mean")),
        ("shards moved / minimum S/N, worst", _get("moved_over_min_max")),
        ("shards the newcomer holds (mean)", _get("newcomer_load_mean")),
    ],
    "api-cost": [
        ("GET / s", _get("get_per_s")),
        ("PUT / s", _get("put_per_s")),
        ("all requests / s", _get("total_per_s")),
        ("PUTs per held Lease per renew interval", _get("puts_per_held_lease_per_interval")),
        ("GETs per shard per renew interval", _get("gets_per_shard_per_interval")),
        ("replicas' CPU (cores)", _get("replica_cpu_cores")),
        ("dev-server CPU (cores)", _get("server_cpu_cores")),
        ("peak / mean load", _get("load.peak_over_mean")),
    ],
    "replica-cost": [
        ("every shard held after (s)", _get("all_held_s")),
        ("renewals / s (expected S / retry)", _get("renewals_per_s")),
        ("CPU ms per renewal", _get("cpu_ms_per_renewal")),
        ("CPU (cores)", _get("cpu_cores")),
        ("peak RSS (MiB)", _get("peak_rss_mib")),
        ("threads", _get("threads")),
        ("renewal gap max (x retry)", _get("gap_max_x_retry")),
        ("late renewals (gap > 1.5 x retry)", _get("late_renewals")),
        ("missed renewals (gap >= renew deadline)", _get("missed_renewals")),
    ],
}

# Rows where ours / baseline is not a cost comparison: sample counts, a rate where higher is better,
# and "settled", which for the baseline only means "held" (it has no assignment to settle on).
NO_RATIO = {"shards re-held (samples)", "renewals / s (expected S / retry)",
            "from the first Lease taken to settled (s)"}

TITLES = {
    "cold-start": "Cold start: N replicas start at once",
    "handoff": "Graceful handoff: SIGTERM the busiest replica, per shard until re-held",
    "failover": "Crash failover: SIGKILL the busiest replica, per shard until re-held",
    "scale-up": "Scale up by one",
    "api-cost": "API cost in steady state (dev-server request counters)",
    "replica-cost": "Cost per replica: one process holding every shard",
}


#: On the real kube-apiserver, what the dev-server wording becomes.
REAL_WORDS = {
    "dev-server CPU (cores)": "kube-apiserver + etcd CPU (cores)",
    TITLES["api-cost"]: "API cost in steady state (kube-apiserver's apiserver_request_total; "
                        "its own identity-Lease PUTs left out)",
}


def is_real(suite: dict[str, Any]) -> bool:
    """Whether these results were measured on a real kube-apiserver (``--server real``)."""
    return ((suite.get("meta") or {}).get("server") or {}).get("kind") == "real"


def _words(text: str, suite: dict[str, Any]) -> str:
    return REAL_WORDS.get(text, text) if is_real(suite) else text


def _ratio(ours: Any, base: Any) -> float | None:
    if isinstance(ours, (int, float)) and isinstance(base, (int, float)) and base and not math.isnan(base):
        return round(ours / base, 3)
    return None


def comparison(suite: dict[str, Any]) -> dict[str, Any]:
    """{scenario: {profile: [{metric, shardlease, baseline, ratio}]}} for every stored result."""
    out: dict[str, Any] = {}
    for scenario, metrics in METRICS.items():
        by_profile = suite.get("scenarios", {}).get(scenario) or {}
        for profile in PROFILE_ORDER:
            results = by_profile.get(profile)
            if not results:
                continue
            ours, base = results.get(OURS) or {}, results.get(BASELINE) or {}
            rows = []
            for label, getter in metrics:
                a, b = getter(ours), getter(base)
                ratio = None if label in NO_RATIO else _ratio(a, b)
                rows.append({"metric": _words(label, suite), OURS: a, BASELINE: b, "ratio": ratio})
            out.setdefault(scenario, {})[profile] = rows
    return out


def _result(suite: dict[str, Any], scenario: str, profile: str, impl: str = OURS) -> dict[str, Any] | None:
    value = (suite.get("scenarios", {}).get(scenario) or {}).get(profile, {}).get(impl)
    return value if isinstance(value, dict) else None


def targets(suite: dict[str, Any]) -> list[dict[str, Any]]:
    """The partitioner issue's targets, judged on shardlease's figures (``met`` None = not run)."""
    out: list[dict[str, Any]] = []
    profiles = suite.get("meta", {}).get("profiles") or {}
    for profile in PROFILE_ORDER:
        lease = (profiles.get(profile) or {}).get("lease_duration")
        rc = _result(suite, "replica-cost", profile)
        if rc is not None:
            n = rc.get("shards")
            missed = rc.get("missed_any")
            out.append({
                "target": f"one process holds {n} shards with no missed renewal", "profile": profile,
                "figure": (f"missed {rc.get('missed_renewals')}, late {rc.get('late_renewals')}, losses "
                           f"{(rc.get('metrics') or {}).get('losses')}, holder changes {rc.get('holder_changes')}, "
                           f"worst gap {rc.get('gap_max_x_retry')} x retry"),
                # Judged only at the target's size; a smaller (quick) run reports but does not judge.
                "met": None if missed is None or "error" in rc or (n or 0) < 1024 else not missed,
                "detail": rc.get("error") or ("" if (n or 0) >= 1024 else f"only {n} shards in this run"),
            })
        api = _result(suite, "api-cost", profile)
        if api is not None and "error" not in api:
            gets = api.get("get_per_s")
            out.append({"target": "steady state: zero GETs", "profile": profile,
                        "figure": f"{gets} GET/s", "met": gets == 0, "detail": ""})
            per = api.get("puts_per_held_lease_per_interval")
            out.append({"target": "steady state: at most one PUT per held Lease per renew interval",
                        "profile": profile, "figure": f"{per} (shard and member Leases)",
                        # 2 % slack: the window's ends cut renew intervals of 1,000s of Leases.
                        "met": per is not None and per <= 1.02, "detail": ""})
        hand = _result(suite, "handoff", profile)
        if hand is not None and (hand.get("reheld") or {}).get("n"):
            worst = hand["reheld"]["max"]
            out.append({"target": "after SIGTERM of one replica its shards are re-held within 1 s",
                        "profile": profile, "figure": f"max {worst} s over {hand['reheld']['n']} shards",
                        "met": worst <= 1.0 and bool(hand.get("all_reheld")), "detail": hand.get("error", "")})
        fail = _result(suite, "failover", profile)
        if fail is not None and (fail.get("reheld") or {}).get("n") and lease:
            worst = fail["reheld"]["max"]
            out.append({"target": "after SIGKILL its shards are re-held within lease duration + 1 s",
                        "profile": profile, "figure": f"max {worst} s (limit {lease + 1} s)",
                        "met": worst <= lease + 1 and bool(fail.get("all_reheld")), "detail": fail.get("error", "")})
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(rows_by_profile: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| metric | timings | shardlease | baseline | ratio (ours / baseline) |", "|---|---|---:|---:|---:|"]
    labels = []
    for rows in rows_by_profile.values():
        for row in rows:
            if row["metric"] not in labels:
                labels.append(row["metric"])
    for label in labels:
        for profile in PROFILE_ORDER:
            found = [r for r in rows_by_profile.get(profile, []) if r["metric"] == label]
            if not found:
                continue
            row = found[0]
            lines.append(f"| {label} | {profile} | {_fmt(row[OURS])} | {_fmt(row[BASELINE])} | {_fmt(row['ratio'])} |")
    return lines


def _setup_line(suite: dict[str, Any], scenario: str) -> str:
    """Sizes per profile, e.g. "scaled: S = 64, N = 5, 3 round(s); default: ..."."""
    by_profile = suite.get("scenarios", {}).get(scenario) or {}
    parts = []
    for profile in PROFILE_ORDER:
        r = next((v for v in ((by_profile.get(profile) or {}).get(i) for i in (OURS, BASELINE))
                  if isinstance(v, dict)), None)
        if r is None:
            continue
        bits = [f"S = {r.get('shards')}"]
        if r.get("replicas"):
            bits.append(f"N = {r['replicas']}")
        if r.get("rounds"):
            bits.append(f"{r['rounds']} round(s)")
        if r.get("window_s"):
            bits.append(f"{r['window_s']} s window")
        parts.append(f"{profile}: " + ", ".join(bits))
    return "; ".join(parts) + "." if parts else ""


def _errors(suite: dict[str, Any], scenario: str) -> list[str]:
    out = []
    for profile, results in (suite.get("scenarios", {}).get(scenario) or {}).items():
        if not isinstance(results, dict):
            continue
        for impl, r in results.items():
            if isinstance(r, dict) and r.get("error"):
                out.append(f"- **error** ({impl}, {profile}): `{str(r['error'])[:300]}`")
    return out


def _balance_section(suite: dict[str, Any]) -> list[str]:
    bal = suite.get("scenarios", {}).get("balance")
    if not bal:
        return []
    lines = ["## Balance and movement (scenario 1, `bench/balance.py`)", "",
             f"From `{bal.get('command')}`; full tables in `balance.md`. "
             "Cells: average (worst) over random member sets.",
             "", "| S | N | best peak | bounded peak/mean | ring | modulo | bounded moves/min on +1 | ring | modulo |",
             "|---:|---:|---:|---|---|---|---|---|---|"]

    def pair(d: dict[str, Any] | None) -> str:
        return "-" if not d else f"{d['avg']:.2f} ({d['worst']:.2f})"

    for c in bal.get("cells", []):
        if c["shards"] not in (64, 256, 1024) and len(bal.get("cells", [])) > 12:
            continue
        lines.append(f"| {c['shards']} | {c['members']} | {c['best_possible_peak']:.3f} | "
                     + " | ".join(pair(c[s]["peak_over_mean"]) for s in ("bounded", "ring", "modulo")) + " | "
                     + " | ".join(pair(c[s]["moves_on_add_over_min"]) for s in ("bounded", "ring", "modulo")) + " |")
    lines += ["", *bal.get("reading", []), ""]
    return lines


def not_run(suite: dict[str, Any]) -> list[str]:
    """Scenario / profile / implementation combinations without a result, with the command to run them."""
    scenarios = suite.get("scenarios", {})
    quick = bool(suite.get("meta", {}).get("quick"))
    missing: list[str] = []
    real = is_real(suite)
    if "balance" not in scenarios and not real:
        missing.append("- balance: `python bench/run.py balance`")
    for scenario in METRICS:
        if real and scenario == "replica-cost" and scenario not in scenarios:
            continue  # not part of --server real unless named
        for profile in (("scaled",) if quick else PROFILE_ORDER):
            results = (scenarios.get(scenario) or {}).get(profile) or {}
            for impl in (OURS, BASELINE):
                r = results.get(impl)
                if not isinstance(r, dict) or r.get("error"):
                    what = "failed" if isinstance(r, dict) else "not run"
                    missing.append(f"- {scenario}, {profile} timings, {impl}: {what}; "
                                   f"`python bench/run.py {scenario} --profiles {profile} --impls {impl}"
                                   f"{' --server real' if real else ''}`")
    if not missing:
        return []
    return ["## Not run / failed", "", *missing, ""]


def render_suite(suite: dict[str, Any], figures: list[str]) -> str:
    meta = suite.get("meta", {})
    machine = meta.get("machine", {})
    real = is_real(suite)
    lines = ["# shardlease benchmark suite" + (" on a real kube-apiserver" if real else ""), "",
             f"Generated {meta.get('generated')} by `{meta.get('command')}` (git {meta.get('git')}, "
             f"{meta.get('elapsed_s')} s). Machine: {machine.get('cpu')}, {machine.get('cpus')} CPUs, "
             f"Python {machine.get('python')}.", ""]
    if real:
        load = meta.get("load_avg") or {}
        lines += [f"Server: {(meta.get('server') or {}).get('description')}. Load average (1 min) at the "
                  f"start {_fmt(load.get('start'))}, at the end {_fmt(load.get('end'))}, on a machine shared with "
                  "other runs.", ""]
    if meta.get("partial"):
        lines += ["**Partial results**: the run was interrupted; see \"Not run / failed\" below.", ""]
    runs = suite.get("runs", {})
    if any(r.get("command") != meta.get("command") for r in runs.values()):
        lines += ["Scenarios merged from several runs: " + "; ".join(
            f"{name}: `{r.get('command')}` at {r.get('generated')}" for name, r in runs.items()), ""]
    lines += ["Timings: **scaled** = lease 3 s / renew deadline 2 s / retry 0.5 s; **default** = client-go's "
              "15 s / 10 s / 2 s. Ratio = shardlease / baseline: below 1 means shardlease does better on "
              "every row (all are costs or delays). Baseline = one `kubernetes.leaderelection` elector per "
              "shard per replica (`bench/baseline.py`).", ""]
    lines += _balance_section(suite)
    comp = suite.get("comparison", {})
    for scenario in METRICS:
        if scenario not in comp:
            continue
        lines += [f"## {_words(TITLES[scenario], suite)}", "", _setup_line(suite, scenario), "",
                  *_table(comp[scenario]), ""]
        lines += _errors(suite, scenario)
        if lines[-1] != "":
            lines.append("")
    tg = suite.get("targets", [])
    if tg:
        lines += ["## Targets (shardlease)", "", "| target | timings | figure | met? |", "|---|---|---|---|"]
        for t in tg:
            verdict = ("not judged" + (f" ({t['detail']})" if t.get("detail") else "")) if t["met"] is None \
                else ("**met**" if t["met"] else "**missed**")
            lines.append(f"| {t['target']} | {t['profile']} | {t['figure']} | {verdict} |")
        lines.append("")
    lines += not_run(suite)
    if figures:
        lines += ["Figures: " + ", ".join(f"`{f}`" for f in figures) + ".", ""]
    return "\n".join(lines)


def _note_matches(key: str, target: dict[str, Any]) -> bool:
    """``"substring"`` or ``"profile:substring"`` against a target row."""
    profile, sep, sub = key.partition(":")
    if sep and profile in PROFILE_ORDER:
        return profile == target["profile"] and sub in target["target"]
    return key in target["target"]


SERVERS_HEADER = ("| metric | timings | shardlease, dev-server | shardlease, kube-apiserver "
                  "| baseline, dev-server | baseline, kube-apiserver |")


def side_by_side(dev: dict[str, Any], real: dict[str, Any]) -> list[str]:
    """The same scenarios and timings on both servers, one table per scenario the real run has."""
    from .notes import REAL_AFTER, REAL_BEFORE, REAL_READING

    meta = real.get("meta", {})
    load = meta.get("load_avg") or {}
    lines = [REAL_BEFORE.format(command=meta.get("command"), generated=meta.get("generated"),
                                elapsed=meta.get("elapsed_s"),
                                server=(meta.get("server") or {}).get("description"),
                                load_start=_fmt(load.get("start")), load_end=_fmt(load.get("end")),
                                dev_generated=(dev.get("meta") or {}).get("generated"))]
    for scenario, metrics in METRICS.items():
        measured = (real.get("scenarios") or {}).get(scenario) or {}
        if not measured:
            continue
        title = ("API cost in steady state (dev-server: its request counters; kube-apiserver: "
                 "apiserver_request_total)") if scenario == "api-cost" else TITLES[scenario]
        lines += [f"### {title}", "",
                  f"Dev-server: {_setup_line(dev, scenario)} Real: {_setup_line(real, scenario)}", "",
                  SERVERS_HEADER, "|---|---|---:|---:|---:|---:|"]
        for label, getter in metrics:
            for profile in PROFILE_ORDER:
                if profile not in measured:
                    continue
                cells = [getter(_result(suite, scenario, profile, impl) or {})
                         for impl in (OURS, BASELINE) for suite in (dev, real)]
                if all(c is None for c in cells):
                    continue
                name = "server CPU (cores; dev-server / kube-apiserver + etcd)" if label.startswith("dev-server CPU") \
                    else label
                lines.append(f"| {name} | {profile} | " + " | ".join(_fmt(c) for c in cells) + " |")
        lines += [*_errors(real, scenario), ""]
    real_targets = real.get("targets") or []
    if real_targets:
        lines += ["### Targets (shardlease) on both servers", "",
                  "| target | timings | dev-server | kube-apiserver |", "|---|---|---|---|"]
        dev_targets = {(t["target"], t["profile"]): t for t in dev.get("targets") or []}

        def verdict(t: dict[str, Any] | None) -> str:
            if t is None:
                return "-"
            return f"{'met' if t['met'] else 'missed' if t['met'] is False else 'not judged'}: {t['figure']}"

        for t in real_targets:
            lines.append(f"| {t['target']} | {t['profile']} | {verdict(dev_targets.get((t['target'], t['profile'])))} "
                         f"| {verdict(t)} |")
        lines.append("")
    if REAL_READING:
        lines += ["### Reading the two servers' figures", "", *REAL_READING, ""]
    lines.append(REAL_AFTER)
    return lines


def render_docs(suite: dict[str, Any], figures: list[str], out: Path,
                real: dict[str, Any] | None = None) -> str:
    """``docs/benchmarks.md``: how to run, what is measured, the latest figures, targets, causes, and
    (given the ``--server real`` results) the dev-server and kube-apiserver figures side by side."""
    from .notes import DOCS_AFTER, DOCS_BEFORE, READING, TARGET_NOTES

    meta = suite.get("meta", {})
    body = render_suite(suite, [])
    # Drop the suite's own title and nest its sections under "Results".
    body = body.split("\n", 2)[2] if body.startswith("# ") else body
    body = body.replace("\n## ", "\n### ")
    pictures = [f"![{f}](../bench/results/{f})" for f in figures]
    why: list[str] = []
    for t in suite.get("targets", []):
        if t["met"] is False:
            note = next((text for key, text in TARGET_NOTES.items() if _note_matches(key, t)), None)
            why.append(f"- **Missed: {t['target']} ({t['profile']} timings)**, {t['figure']}. "
                       + (note or "Cause not analysed yet: see the scenario's steps in suite.json."))
    missed = ["## Targets missed, and why", "", *why, ""] if why else \
        ["## Targets", "", "Every target judged in these results is met.", ""]
    bullets = [*reading(suite), *READING]
    reading_lines = ["## Reading the results", "", *bullets, ""] if bullets else []
    return "\n".join([DOCS_BEFORE.format(command=meta.get("command"), generated=meta.get("generated"),
                                         elapsed=meta.get("elapsed_s")),
                      "## Results", "", body, *pictures, "", *reading_lines, *missed,
                      *(side_by_side(suite, real) if real else []), DOCS_AFTER, ""])


#: Sections of docs/benchmarks.md that other scripts own (each rewrites its own, between markers):
#: a suite run keeps them, from the first marker to the end of the page.
KEPT_MARKERS = ("<!-- object_events:begin", "<!-- node:begin", "<!-- control_plane:begin")


def kept_sections(previous: str) -> str:
    """The tail of the old page that belongs to other benchmark scripts (``""`` if none)."""
    starts = [previous.find(marker) for marker in KEPT_MARKERS if marker in previous]
    return "\n" + previous[min(starts):] if starts else ""


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value)


def reading(suite: dict[str, Any]) -> list[str]:
    """What the figures say, one bullet per scenario and profile, numbers taken from this run."""
    out: list[str] = []
    for profile in PROFILE_ORDER:
        def pair(scenario: str, profile: str = profile) -> tuple[dict[str, Any], dict[str, Any]]:
            return (_result(suite, scenario, profile, OURS) or {}, _result(suite, scenario, profile, BASELINE) or {})

        ours, base = pair("handoff")
        o, b = ours.get("reheld") or {}, base.get("reheld") or {}
        if o.get("n") and b.get("n"):
            out.append(
                f"- **SIGTERM ({profile})**: shardlease re-held all {o['n']} shards of the stopped replicas within "
                f"{_f(o['max'])} s (p50 {_f(o['p50'])} s, {_f(o['max_x_lease'])} x lease): the replica releases "
                f"each Lease once its handler returned ({ours.get('released')}/{ours.get('victim_shards')} released) "
                f"and the next owner, known from the assignment, takes it on the watch event. The baseline cannot "
                f"release, so its peers waited out the lease: p50 {_f(b['p50'])} s ({_f(b['p50_x_lease'])} x lease), "
                f"max {_f(b['max'])} s.")
        ours, base = pair("failover")
        o, b = ours.get("reheld") or {}, base.get("reheld") or {}
        if o.get("n") and b.get("n"):
            out.append(
                f"- **SIGKILL ({profile})**: both wait out the lease. shardlease: p50 {_f(o['p50'])} s, max "
                f"{_f(o['max'])} s ({_f(o['max_x_lease'])} x lease); baseline: p50 {_f(b['p50'])} s, max {_f(b['max'])} s "
                f"({_f(b['max_x_lease'])} x lease). Expiry is counted from when the holder's last renewal was "
                f"observed, up to one retry period before the kill, so values a little under 1 x lease are expected.")
        ours, base = pair("cold-start")
        if ours.get("all_held_s") is not None and base.get("all_held_s") is not None:
            out.append(
                f"- **Cold start ({profile})**: shardlease had every shard held after {_f(ours['all_held_s'])} s and "
                f"held as assigned after {_f(ours.get('balanced_s'))} s, of which {_f(ours.get('first_acquire_s'))} s "
                f"passed before any Lease was taken (process start-up, imports, first list); "
                f"{ours.get('acquisitions')} acquisitions for {ours.get('shards')} shards, because the first "
                f"replicas up take shards that move on when the others join. The baseline held every shard after "
                f"{_f(base['all_held_s'])} s, on {(base.get('load') or {}).get('holding')} of {base.get('replicas')} "
                f"replicas (peak / mean load {_f((base.get('load') or {}).get('peak_over_mean'))}).")
        ours, base = pair("scale-up")
        if (ours.get("balanced") or {}).get("n"):
            out.append(
                f"- **Scale up ({profile})**: shardlease was balanced again at most {_f(ours['balanced']['max'])} s "
                f"after the new process was spawned ({_f((ours.get('balanced_after_join') or {}).get('max'))} s after "
                f"its member Lease appeared), moving {_f(ours.get('moved_over_min_mean'))} x the minimum S/N on average "
                f"(worst {_f(ours.get('moved_over_min_max'))}). The baseline's newcomer won "
                f"{_f(base.get('newcomer_load_mean'))} shards: nothing is ever given up to it.")
        ours, base = pair("api-cost")
        if ours.get("rates") is not None and base.get("rates") is not None:
            ratio = _ratio(ours.get("total_per_s"), base.get("total_per_s"))
            out.append(
                f"- **API cost ({profile}, S={ours.get('shards')}, N={ours.get('replicas')})**: shardlease "
                f"{_f(ours.get('get_per_s'))} GET/s and {_f(ours.get('put_per_s'))} PUT/s "
                f"({_f(ours.get('puts_per_held_lease_per_interval'))} PUT per held Lease per renew interval); "
                f"the baseline {_f(base.get('get_per_s'))} GET/s and {_f(base.get('put_per_s'))} PUT/s (nominal "
                f"{_f((base.get('nominal_per_s') or {}).get('get'))} GET/s and "
                f"{_f((base.get('nominal_per_s') or {}).get('update'))} PUT/s if every poll were served on time; "
                f"its replicas used {_f(base.get('replica_cpu_cores'))} cores, ours {_f(ours.get('replica_cpu_cores'))}), so "
                f"shardlease sends {_f(ratio)} x the baseline's requests. Dev-server CPU: "
                f"{_f(ours.get('server_cpu_cores'))} vs {_f(base.get('server_cpu_cores'))} cores.")
        ours, base = pair("replica-cost")
        if ours.get("cpu_ms_per_renewal") is not None and base.get("cpu_ms_per_renewal") is not None:
            out.append(
                f"- **One replica, {ours.get('shards')} shards ({profile})**: shardlease "
                f"{_f(ours['cpu_ms_per_renewal'])} CPU ms per renewal ({_f(ours.get('cpu_cores'))} cores for "
                f"{_f(ours.get('renewals_per_s'))} renewals/s of {_f(ours.get('expected_renewals_per_s'))} due), "
                f"peak RSS {_f(ours.get('peak_rss_mib'))} MiB, {ours.get('threads')} threads, "
                f"{ours.get('late_renewals')} late and {ours.get('missed_renewals')} missed renewals; baseline "
                f"{_f(base['cpu_ms_per_renewal'])} CPU ms per renewal ({_f(base.get('renewals_per_s'))} renewals/s), "
                f"{_f(base.get('peak_rss_mib'))} MiB, {base.get('threads')} threads, "
                f"{base.get('late_renewals')} late and {base.get('missed_renewals')} missed (worst gap "
                f"{_f(base.get('gap_max_x_retry'))} x retry).")
            lease = (base.get("profile") or {}).get("lease_duration")
            retry = (base.get("profile") or {}).get("retry_period")
            worst = base.get("gap_max_x_retry")
            if lease and retry and worst and worst * retry > lease:
                out.append(
                    f"- **Baseline Leases expired while held ({profile})**: the baseline's worst gap between two "
                    f"renewals of one Lease was {_f(worst * retry)} s, longer than the {lease} s lease: with a "
                    f"second replica in the group a follower could have taken that shard while this elector, "
                    f"whose renew deadline is judged on its own clock, still believed it led. Its {_f(base.get('threads'))} "
                    f"threads share one GIL and poll with a GET before every PUT.")
            due, done = ours.get("expected_renewals_per_s"), ours.get("renewals_per_s")
            if ours.get("late_renewals") and due and done and ours.get("cpu_ms_per_renewal"):
                out.append(
                    f"- **Late, not missed ({profile})**: at these timings one shardlease process could not keep "
                    f"the renew interval for {ours.get('shards')} Leases: it renewed {_f(done)} of the {_f(due)} "
                    f"Leases/s due, on {_f(ours.get('cpu_cores'))} cores. A Python process runs its Python code on "
                    f"about one core (the GIL), and at {_f(ours['cpu_ms_per_renewal'])} ms of CPU per renewal that "
                    f"caps it near {_f(1000 / ours['cpu_ms_per_renewal'])} renewals/s. Renewals therefore came every "
                    f"{_f((ours.get('gap_s') or {}).get('p50'))} s (p50) instead of every retry period, worst "
                    f"{_f(ours.get('gap_max_x_retry'))} x retry, still well inside the renew deadline, so no Lease "
                    f"was lost ({(ours.get('metrics') or {}).get('losses')} losses). At client-go's default timings "
                    f"the same process needs a quarter of the rate and keeps the interval.")
    return out
