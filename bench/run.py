"""shardlease benchmark suite: the one entry point.

Runs all scenarios or the ones named, each against shardlease and against the peer baseline
(``bench/baseline.py``: one ``kubernetes.leaderelection`` elector per shard per replica), with the
scaled-down timings (lease 3 s / renew deadline 2 s / retry 0.5 s) and client-go's defaults
(15 s / 10 s / 2 s), and writes ``suite.json``, ``suite.md`` and ``suite_*.png`` into the output
directory (default ``bench/results``). A full run also rewrites ``docs/benchmarks.md``.

    python bench/run.py                      # everything, full size (~10-15 min on 2 cores)
    python bench/run.py handoff failover     # only these (the lifecycle scenarios share one run)
    python bench/run.py --quick              # smoke-sized, scaled timings only, < 1 min
    python bench/run.py api-cost --profiles default
    python bench/run.py load --live          # load-aware vs count-only on 8 live replicas (~6 min)
    python bench/run.py --server real        # lifecycle + API cost on a real etcd + kube-apiserver

Scenarios: balance, cold-start, handoff, failover, scale-up (these four run together on one group
per implementation and profile, see ``bench/scenarios/lifecycle.py``), api-cost, replica-cost, and,
only when named, scale (``bench/scenarios/scale.py``: 1 to 8 replicas, up to 8,192 shards; ~10 min;
writes ``scale.json``/``scale.md`` as well; with ``--server real`` one replica up to 2,048 shards and the
baseline up to 1,024, kube-apiserver and etcd CPU apart, into ``scale_real.*``) and write-budget (one
replica under ``--max-write-rate``: writes served against W and the largest renewal gap against the
bound; ``write_budget.*``, or ``write_budget_real.*`` with ``--server real``), same-cpu (the baseline at S
shards next to one replica of ours at 2S shards whose ``--max-write-rate`` is the baseline's asked write
rate (S / retry period, plus one for its member Lease): the control plane's CPU for twice the shards; ``same_cpu[_real].*``),
and fencing (``bench/scenarios/fencing.py``: the cost of the admission policies of ``shardlease fencing``
at 64, 256 and 1,024 shards and the window after a takeover, always on a real kube-apiserver,
``--kube-assets`` or ``$KUBEBUILDER_ASSETS``; ~5 min; writes ``fencing.json``/``fencing.md``).
Running a subset merges its results into an existing ``suite.json`` in the output directory, so a
scenario that could not run in one go can be completed later.

``--server real`` runs the same scenarios against a real etcd + kube-apiserver built by
``scripts/build-kube-assets`` (``--kube-assets DIR``, else ``$KUBEBUILDER_ASSETS``, else the build
cache), one fresh control plane per group, the baseline on the same server. By default it runs the
lifecycle scenarios and the API cost (balance is pure computation, the same on any server; name
replica-cost to add it), and writes ``suite_real.json``, ``suite_real.md`` and ``suite_real_*.png``
beside the dev-server's ``suite.*``, which it never touches. API cost there comes from the
kube-apiserver's own ``apiserver_request_total`` counters on ``/metrics``.

``--server node`` runs something else: the example Deployment as pods on the local one-node
Kubernetes (``bench/node.py``: scale, force delete, SIGKILL, rollout restart; root and the node's
binaries from ``scripts/build-node-assets``; about 6 min for 3 rounds, 1 with ``--quick``). It writes
``node.json`` and ``node.md`` and, into bench/results, rewrites the node section of
docs/benchmarks.md, where the pod figures sit next to the process-based ``suite.json`` ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.scenarios import cost, fencing, lifecycle, load, load_live, report, scale  # noqa: E402
from bench.scenarios.common import BASELINE, IMPLEMENTATIONS, OURS, PROFILES, SERVER_KINDS, Server  # noqa: E402

LIFECYCLE = ("cold-start", "handoff", "failover", "scale-up")
SCENARIOS = ("balance", *LIFECYCLE, "api-cost", "replica-cost")
#: What ``--server real`` runs when no scenario is named: the lifecycle scenarios and the API cost.
REAL_DEFAULT = (*LIFECYCLE, "api-cost")
#: Run only when named, with their own outputs: scale (minutes long; scale.json/scale.md, see
#: bench/scenarios/scale.py), write-budget, and load (load-aware vs count-only assignment; load.json/load.md),
#: and fencing (bench/scenarios/fencing.py; fencing.json/fencing.md).
ON_REQUEST = ("scale", "write-budget", "same-cpu", "load", "fencing")
#: Result file stem per server: ``suite.json`` stays the dev-server's.
SUITE_STEM = {"dev": "suite", "real": "suite_real"}
RESULTS_DIR = BENCH_DIR / "results"
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs. Full sizes follow the issue (S=256/N=5 for API cost, 1,024 shards
    for the replica cost); the lifecycle uses S=64/N=5 so the baseline's 5 x 64 polling electors do
    not saturate the dev-server and the figures show the protocols rather than an overloaded server."""

    lifecycle_shards: int
    lifecycle_replicas: int
    rounds: dict[str, int]
    restore_last: bool
    api_shards: int
    api_replicas: int
    api_window: dict[str, float]
    replica_shards: int
    replica_window: dict[str, float]
    profiles: tuple[str, ...]


FULL = Sizes(64, 5, {"scaled": 3, "default": 2}, True, 256, 5, {"scaled": 20, "default": 30},
             1024, {"scaled": 15, "default": 30}, ("scaled", "default"))
QUICK = Sizes(8, 3, {"scaled": 1, "default": 1}, False, 16, 3, {"scaled": 2, "default": 4},
              32, {"scaled": 2, "default": 4}, ("scaled",))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def run_balance(quick: bool, out: Path, plots: bool) -> dict[str, Any]:
    """Scenario 1 is ``bench/balance.py`` (pure computation); run it and keep its summary."""
    from bench import balance

    argv = ["--out", str(out)] + (["--quick"] if quick else [])
    started = time.monotonic()
    command = "python bench/balance.py" + (" --quick" if quick else "") + f" --out {out}"
    if plots and _have_matplotlib():
        balance.main(argv)
        data = json.loads((out / "balance.json").read_text())
        cells = data["cells"]
    else:  # no matplotlib (e.g. CI installs only the test extra): the numbers without the figures
        command = "bench.balance.run(...) in-process (no matplotlib, so no balance.md or figures)"
        cells = balance.run(balance.QUICK_SHARD_COUNTS if quick else balance.SHARD_COUNTS,
                            balance.QUICK_MEMBER_COUNTS if quick else balance.MEMBER_COUNTS,
                            3 if quick else 20, 2026)
    keep = ("shards", "members", "best_possible_peak")
    summary = [{**{k: c[k] for k in keep},
                **{name: {"peak_over_mean": c[name]["peak_over_mean"],
                          "moves_on_add_over_min": c[name]["moves_on_add_over_min"]}
                   for name in ("bounded", "ring", "modulo")}} for c in cells]
    return {"command": command,
            "cells": summary, "reading": balance.reading(cells),
            "elapsed_s": round(time.monotonic() - started, 1)}


def _write_outputs(suite: dict[str, Any], out: Path, plots: bool, docs: bool,
                   stem: str = "suite") -> tuple[str, list[str]]:
    figures: list[str] = []
    if plots:
        if _have_matplotlib():
            from bench import plots as plotting

            figures = [p.name for p in plotting.draw(suite, out, stem)]
        else:
            _log("matplotlib is not installed: no figures (pip install -e '.[bench]')")
    markdown = report.render_suite(suite, figures)
    (out / f"{stem}.md").write_text(markdown)
    if docs:
        write_docs(out)
    return markdown, figures


def write_docs(out: Path) -> None:
    """``docs/benchmarks.md`` from the dev-server's ``suite.json`` in ``out`` (its tables and figures)
    plus, when ``suite_real.json`` is there too, the dev-server vs kube-apiserver section. Either
    server's full run calls this, so neither one's figures drop out of the page."""
    dev = json.loads((out / "suite.json").read_text())
    real_path = out / f"{SUITE_STEM['real']}.json"
    real = json.loads(real_path.read_text()) if real_path.exists() else None
    names = ("reheld", "timings", "costs")
    figures = [f"suite_{n}.png" for n in names if (out / f"suite_{n}.png").exists()]
    previous = DOCS_PATH.read_text() if DOCS_PATH.exists() else ""
    DOCS_PATH.write_text(report.render_docs(dev, figures, out, real=real) + report.kept_sections(previous))


def render_only(out: Path, plots: bool, docs: bool, stem: str = "suite") -> int:
    """Re-render the reports from stored results (after editing ``bench/scenarios/notes.py``)."""
    path = out / f"{stem}.json"
    suite = json.loads(path.read_text())
    suite["comparison"] = report.comparison(suite)
    suite["targets"] = report.targets(suite)
    path.write_text(json.dumps(suite, indent=1, default=str) + "\n")
    markdown, _figures = _write_outputs(suite, out, plots, docs, stem)
    print(markdown)
    return 0


def run_node(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--server node``: bench/node.py's Deployment operations on pods (it has no scenarios to pick)."""
    if args.scenarios and args.scenarios != ["all"]:
        parser.error("--server node runs bench/node.py's operations as one scenario; name no scenario")
    if args.kube_assets is not None or args.render:
        parser.error("--server node takes neither --kube-assets (it uses the build caches) nor --render")
    from bench import node

    out: Path = args.out or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    docs = args.docs == "yes" or (args.docs == "auto" and out.resolve() == RESULTS_DIR.resolve())
    return node.bench(out / "node", rounds=1 if args.quick else 3, docs=docs)


def resolve_server(kind: str, assets: Path | None, parser: argparse.ArgumentParser) -> Server:
    """``--server``/``--kube-assets`` -> a :class:`Server`, or a usage error saying how to get the
    binaries."""
    if kind == "dev":
        if assets is not None:
            parser.error("--kube-assets is for --server real (the kube-apiserver and etcd binaries)")
        return Server()
    from shardlease.controlplane import ControlPlaneError, find_assets
    from shardlease.controlplane.assets import check_assets

    found = find_assets(assets)
    if found is None:
        parser.error("--server real: no kube-apiserver/etcd binaries found; build them with "
                     "`scripts/build-kube-assets DIR` and pass --kube-assets DIR (or set KUBEBUILDER_ASSETS=DIR)")
    try:
        check_assets(found)
    except ControlPlaneError as exc:
        parser.error(f"--kube-assets {found}: {exc}")
    return Server("real", found)


def _server_meta(server: Server) -> dict[str, Any]:
    """What served the API: the dev-server, or the kube-apiserver/etcd versions from the assets."""
    if not server.real:
        return {"kind": "dev", "description": "python -m shardlease dev-server (own process)"}
    return {"kind": "real", "assets": str(server.assets),
            "description": f"etcd + kube-apiserver from {server.assets.name if server.assets else '?'}"
                           " (one fresh control plane per group, TLS, token auth, RBAC)"}


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so the ``with Group(...)`` blocks stop every replica and
    the dev-server (which, unlike the replicas, has no parent-death signal) on the way out."""

    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass


def run_fencing(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The fencing scenario: always on its own real control plane; writes fencing.json and fencing.md."""
    server = resolve_server("real", args.kube_assets, parser)
    assert server.assets is not None
    out: Path = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="shardlease-bench-fencing-"))
    started = time.monotonic()
    results = fencing.run(args.quick, server.assets, work, _log)
    meta = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            "git": _git_revision(), "quick": args.quick, "elapsed_s": round(time.monotonic() - started, 1),
            "cpus": os.cpu_count(), "machine": _machine(),
            "load_avg": {"start": load_start, "end": round(os.getloadavg()[0], 2)}}
    (out / "fencing.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    (out / "fencing.md").write_text(fencing.markdown(results, meta))
    shutil.rmtree(work, ignore_errors=True)
    _log(f"fencing: wrote {out / 'fencing.json'} and {out / 'fencing.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"all (default) or some of {SCENARIOS}")
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (scaled timings only)")
    parser.add_argument("--profiles", default=None,
                        help="comma-separated timing profiles: scaled, default (default: both; quick: scaled)")
    parser.add_argument("--impls", default=",".join(IMPLEMENTATIONS),
                        help="comma-separated implementations: shardlease, baseline")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default bench/results; bench/results/quick with --quick)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (replica logs) even when every scenario succeeded")
    parser.add_argument("--docs", choices=("auto", "yes", "no"), default="auto",
                        help="rewrite docs/benchmarks.md (auto: after a full run into bench/results)")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: re-render suite.md, the figures and (with --docs yes) the docs "
                             "from the suite.json in the output directory")
    parser.add_argument("--server", choices=(*SERVER_KINDS, "node"), default="dev",
                        help="dev: shardlease's dev-server (default); real: etcd + kube-apiserver from "
                             "scripts/build-kube-assets, results in suite_real.*; node: the example "
                             "Deployment as pods on a local node (bench/node.py), results in node.*")
    parser.add_argument("--live", action="store_true",
                        help="with load: run live replica processes (bench/scenarios/load_live.py) instead of "
                             "computing the rule; writes load_live.json/load_live.md")
    parser.add_argument("--kube-assets", type=Path, default=None, metavar="DIR",
                        help="with --server real: the kube-apiserver/etcd binaries (default: "
                             "$KUBEBUILDER_ASSETS, then the build cache)")
    args = parser.parse_args(argv)
    if args.server == "node":
        return run_node(args, parser)
    stem = SUITE_STEM[args.server]
    if args.render:
        return render_only(args.out or RESULTS_DIR, plots=not args.no_plots, docs=args.docs == "yes", stem=stem)
    server = resolve_server(args.server, args.kube_assets, parser)
    _interrupt_on_sigterm()

    everything = REAL_DEFAULT if server.real else SCENARIOS
    wanted = [s for s in args.scenarios if s != "all"] or list(everything)
    unknown = sorted(set(wanted) - set(SCENARIOS) - set(ON_REQUEST))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS + ON_REQUEST}")
    if "fencing" in wanted:
        wanted.remove("fencing")
        code = run_fencing(args, parser)
        if code or not wanted:
            return code
    sizes = QUICK if args.quick else FULL
    profiles = tuple(p.strip() for p in args.profiles.split(",")) if args.profiles else sizes.profiles
    impls = tuple(i.strip() for i in args.impls.split(","))
    if bad := [p for p in profiles if p not in PROFILES] + [i for i in impls if i not in IMPLEMENTATIONS]:
        parser.error(f"unknown profile/implementation {bad}")
    out: Path = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    if server.real and "balance" in wanted:
        wanted.remove("balance")
        _log("balance is pure computation, the same on every server: not run with --server real")
    out.mkdir(parents=True, exist_ok=True)
    plots = not args.no_plots

    command = "python bench/run.py" + ("" if argv is None and len(sys.argv) <= 1 else
                                       " " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
    if args.live and "load" not in wanted:
        parser.error("--live is for the load scenario: python bench/run.py load --live [--server dev|real]")
    if args.live:
        # Live replicas on the chosen server, load-aware then count-only; its own outputs.
        config = load_live.LiveConfig.tiny() if args.quick else load_live.LiveConfig()
        _log(f"load --live: {config.replicas} replicas x {config.shards} shards on the {server.kind} server, "
             "load-aware then count-only (bench/scenarios/load_live.py)")
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        load_live.write(out, load_live.run(config, server.kind, str(server.assets) if server.assets else None),
                        {"generated": stamp, "command": command, "git": _git_revision()})
        wanted.remove("load")
        if not wanted:
            return 0
    if "load" in wanted:
        # Pure computation with its own outputs (load.json, load.md); it leaves the suite alone.
        _log("load: load-aware vs count-only assignment (bench/scenarios/load.py)")
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        load.write(out, load.run(args.quick), {"generated": stamp, "command": command, "git": _git_revision()})
        wanted.remove("load")
        if not wanted:
            return 0
    suite_path = out / f"{stem}.json"
    suite: dict[str, Any] = {}
    if suite_path.exists() and set(wanted) != set(everything):
        try:
            suite = json.loads(suite_path.read_text())
        except (OSError, ValueError):
            suite = {}
    scenarios: dict[str, Any] = suite.setdefault("scenarios", {})
    runs: dict[str, Any] = suite.setdefault("runs", {})
    started = time.monotonic()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    work_root = Path(tempfile.mkdtemp(prefix="shardlease-bench-"))
    server_meta = _server_meta(server)
    load_start = round(os.getloadavg()[0], 2)
    _log(f"{command}: scenarios {wanted}, profiles {profiles}, implementations {impls}; work dir {work_root}")

    def checkpoint() -> None:
        """Write what is done so far, so an interrupted run still leaves its results (``--render``)."""
        suite["meta"] = meta(partial=True)
        suite_path.write_text(json.dumps(suite, indent=1, default=str) + "\n")

    def meta(partial: bool) -> dict[str, Any]:
        return {
            "generated": stamp, "command": command, "quick": args.quick, "partial": partial,
            "elapsed_s": round(time.monotonic() - started, 1), "git": _git_revision(), "machine": _machine(),
            "profiles": {p: PROFILES[p].describe() for p in PROFILES}, "sizes": dict(vars(sizes)),
            "work_dir": str(work_root), "server": server_meta,
            "load_avg": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
            "implementations": {OURS: "python -m shardlease run bench.scenarios.idle:handle",
                                BASELINE: "python bench/baseline.py (kubernetes.leaderelection, "
                                          "one elector per shard)"},
        }

    def record(name: str, profile: str, impl: str, value: Any) -> None:
        scenarios.setdefault(name, {}).setdefault(profile, {})[impl] = value
        runs[name] = {"command": command, "generated": stamp, "quick": args.quick}
        checkpoint()

    if "balance" in wanted:
        _log("balance (bench/balance.py)")
        scenarios["balance"] = run_balance(args.quick, out, plots)
        runs["balance"] = {"command": command, "generated": stamp, "quick": args.quick}
        checkpoint()

    if any(s in wanted for s in LIFECYCLE):
        for profile_name in profiles:
            profile = PROFILES[profile_name]
            for impl in impls:
                result = lifecycle.run(impl, profile, sizes.lifecycle_shards, sizes.lifecycle_replicas,
                                       sizes.rounds[profile_name], work_root / f"life-{impl}-{profile_name}",
                                       _log, restore_last=sizes.restore_last, server=server)
                common: dict[str, Any] = {k: result[k] for k in ("shards", "replicas", "rounds", "elapsed_s") if k in result}
                if "error" in result:
                    common["error"] = result["error"]
                    common["logs"] = result.get("logs", "")[-4000:]
                for name, key in (("cold-start", "cold_start"), ("handoff", "handoff"),
                                  ("failover", "failover"), ("scale-up", "scale_up")):
                    record(name, profile_name, impl, {**common, **(result.get(key) or {})})

    if "api-cost" in wanted:
        for profile_name in profiles:
            for impl in impls:
                record("api-cost", profile_name, impl, cost.api_cost(
                    impl, PROFILES[profile_name], sizes.api_shards, sizes.api_replicas,
                    sizes.api_window[profile_name], work_root / f"api-{impl}-{profile_name}", _log,
                    server=server))

    if "replica-cost" in wanted:
        for profile_name in profiles:
            for impl in impls:
                record("replica-cost", profile_name, impl, cost.replica_cost(
                    impl, PROFILES[profile_name], sizes.replica_shards,
                    sizes.replica_window[profile_name], work_root / f"replica-{impl}-{profile_name}", _log,
                    server=server))

    for name in ("scale", "write-budget", "same-cpu"):
        if name not in wanted:
            continue
        if name == "scale":
            plan = scale.REAL if server.real else scale.QUICK if args.quick else scale.FULL
        else:
            if name == "same-cpu":
                plan = scale.SAME_CPU
            else:
                plan = scale.WRITE_BUDGET_QUICK if args.quick else scale.WRITE_BUDGET
            # scale.REAL has its own stem; these plans run on either server, so name the real one's files apart.
            if server.real:
                plan = dataclasses.replace(plan, stem=f"{plan.stem}_real", title=f"{plan.title}, real kube-apiserver")
        revision = _git_revision()
        load_before = round(os.getloadavg()[0], 2)
        results = scale.run(plan, work_root, _log, impls if plan.baseline_cases else (OURS,), server=server)
        scale.write(out, results, plan, {"generated": stamp, "command": command, "git": revision,
                                         "elapsed_s": round(time.monotonic() - started, 1),
                                         "machine": f"{_machine()['cpu']}, {_machine()['cpus']} CPUs",
                                         "server": server.kind, "server_meta": server_meta,
                                         "load_avg": {"start": load_before, "end": round(os.getloadavg()[0], 2)}},
                    full=not args.quick and not server.real)
        for impl in impls:
            mine = [r for r in results if r["impl"] == impl]
            if not mine:
                continue
            failed = [f"{r['case']}: {r['error']}" for r in mine if "error" in r]
            record(name, plan.profile.name, impl,
                   {"cases": mine, "details": f"{plan.stem}.json, {plan.stem}.md",
                    **({"error": "; ".join(failed)} if failed else {})})

    elapsed = round(time.monotonic() - started, 1)
    suite["meta"] = meta(partial=False)
    suite["comparison"] = report.comparison(suite)
    suite["targets"] = report.targets(suite)
    suite_path.write_text(json.dumps(suite, indent=1, default=str) + "\n")
    write_docs = args.docs == "yes" or (args.docs == "auto" and not args.quick and out == RESULTS_DIR
                                        and set(wanted) == set(everything))
    markdown, figures = _write_outputs(suite, out, plots, write_docs, stem)
    failed = any(isinstance(r, dict) and r.get("error") for name, by_profile in scenarios.items()
                 if name != "balance" for results in by_profile.values() for r in results.values())
    if failed or args.keep:
        _log(f"replica and dev-server logs kept in {work_root}")
    else:
        shutil.rmtree(work_root, ignore_errors=True)
    _log(f"done in {elapsed} s: {suite_path}, {out / f'{stem}.md'}"
         + (f", {', '.join(figures)}" if figures else "") + (f", {DOCS_PATH}" if write_docs else ""))
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
