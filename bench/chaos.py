"""Long chaos run: the engine of ``tests/chaos`` for ten minutes (or more) instead of seventy-five seconds.

Usage::

    python bench/chaos.py --duration 600 --seed 4242          # seed optional: a random one is printed
    python bench/chaos.py --duration 600 --seed 4242 --plan   # print the fault plan only, run nothing
    python bench/chaos.py --server real --duration 300        # kube-apiserver behind toxiproxy
    python bench/chaos.py --server real --apiservers 2 --duration 120   # two apiservers, one etcd
    python bench/chaos.py --gate --duration 500 --mean-gap 0.4         # dev-server, ShardedListAndWatch on
    python bench/chaos.py --workload keys --duration 600              # the journaling handler's units instead
    python bench/chaos.py --weights load_shift=2,kill=1,pause=1,reshard=0.5 --capacities 1,2 --max-write-rate 10
    python bench/chaos.py --check WORK_DIR                            # judge a kept run again from its files

The workload is the object controller (``--workload objects``, the default): replicas reconcile
ConfigMaps through ``shard.objects()`` while a user keeps changing them, judged per object
(docs/chaos.md). Prints the seed and the fault counts, then the outcome, and writes
``bench/results/<name>.json`` and ``<name>.md``: ``chaos_objects`` (``_gate`` with the gate on the
dev-server; ``chaos_objects_real`` on kube-apiserver, ``_ha`` with two apiservers), or for the key
workload ``chaos`` / ``chaos_real`` / ``chaos_real_ha`` as before; ``--name`` chooses another.
The run's work directory (journal, ``faults.jsonl``, ``plan.json``, replica logs,
``chaos-report.json``) is kept when a check fails or with ``--keep``, otherwise deleted
(a ten-minute journal is tens of megabytes). Exit status 0 when every check passed, 1 otherwise.

What is injected and checked, the overlap rule for frozen replicas and the derivation of the recovery
bound are in docs/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(REPO_ROOT))

from shardlease.harness.chaos import (  # noqa: E402
    ENV_SEED,
    ChaosConfig,
    ChaosReport,
    ChaosRun,
    convergence_bound,
    fault_counts,
    plan_faults,
    recheck_objects,
    seed_from_env,
)
from shardlease.harness.chaos.workdir import main as check_main  # noqa: E402
from shardlease.harness.localcluster import Timings  # noqa: E402


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5, check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _config(args: argparse.Namespace, seed: int) -> ChaosConfig:
    return ChaosConfig(
        seed=seed, duration=args.duration, shards=args.shards, initial_replicas=args.initial,
        min_replicas=args.min, max_replicas=args.max, mean_gap=args.mean_gap,
        timings=Timings(lease_duration=args.lease, renew_deadline=args.renew_deadline,
                        retry_period=args.retry, drain_timeout=5.0),
        devserver=args.server or args.devserver, apiservers=args.apiservers, assets=args.assets,
        drain_delay=args.drain, workload=args.workload, objects=args.objects, change_rate=args.change_rate,
        sharded_watch=args.gate, max_write_rate=args.max_write_rate, capacities=args.capacities,
        **({"weights": args.weights} if args.weights is not None else {}))


def _weights(text: str) -> dict[str, float]:
    """``--weights kill=1,load_shift=2,...``: the whole fault mix (kinds left out are not injected)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"--weights: {part!r} is not KIND=WEIGHT (e.g. load_shift=2,kill=1)")
    return weights


def _capacities(text: str) -> tuple[float, ...]:
    """``--capacities 1,2,1``: replica-N gets the (N mod count)-th."""
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--capacities: {text!r} is not a comma-separated list of numbers "
                                         f"(e.g. 1,2,1)") from None


def _markdown(report: ChaosReport, result: dict[str, Any]) -> str:
    c = report.config
    fig = report.figures
    counts = report.counts()
    server = ("kube-apiserver " + str(fig.get("kube_version", "")) + " on etcd, replicas through toxiproxy"
              + (" (two kube-apiservers on one etcd; replicas with an odd index use the second directly)"
                 if c.apiservers == 2 else "")) if c.devserver == "real" else f"dev-server ({c.devserver})"
    server += ", ShardedListAndWatch " + ("on (the server filters each stream)" if c.sharded_watch
                                          else "off (each replica filters its stream)")
    lines = [
        "# Chaos run" + (" on the real server" if c.devserver == "real" else ""),
        "",
        f"Server: {server}.",
        "",
        f"Generated {result['generated']} by `{result['command']}` (git {result['git']}).",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}, Python "
        f"{result['machine']['python']}; load average at start {result['machine'].get('loadavg_at_start')}.",
        "",
        f"**Seed {c.seed}: {'PASS' if report.ok else 'FAIL'}** -- {len(report.failures)} failures, "
        f"{len(report.fenced)} fenced stale units.",
        "",
        f"Group: {c.shards} shards, {c.min_replicas}..{c.max_replicas} replicas (start {c.initial_replicas}), "
        f"lease {c.timings.lease_duration:g} s, renew deadline {c.timings.renew_deadline:g} s, retry "
        f"{c.timings.retry_period:g} s, handoff grace {c.handoff_grace:g} s; fault window {c.duration:g} s, "
        f"mean gap between faults {c.mean_gap:g} s; work unit {c.work_unit:g} s; handler clean-up after "
        f"a stop {c.drain_delay:g} s.",
        "",
        "| fault | injected |",
        "|---|---:|",
        *[f"| {kind} | {n} |" for kind, n in counts.items()],
        f"| **total** | **{sum(counts.values())}** |",
        "",
        "| check / figure | value |",
        "|---|---|",
        *[f"| failures: {kind} | {n} |" for kind, n in report.failure_kinds().items()],
        f"| safety violations (overlap / token) outside the SIGSTOP rule | "
        f"{sum(n for k, n in report.failure_kinds().items() if k.startswith('SAFETY'))} |",
        f"| fenced stale units (frozen replica, lower token) | {len(report.fenced)} |",
        f"| longest stale work after SIGCONT | {fig.get('max_resume_residual_s', 0) * 1000:.0f} ms "
        f"(tolerance {c.resume_tolerance * 1000:.0f} ms) |",
        *(_object_rows(report) if c.workload == "objects" else [
            f"| units of work journaled | {fig.get('units')} |",
            f"| shard-time with work during the fault window | {100 * fig.get('coverage', 0):.1f} % |"]),
        f"| handler starts | {fig.get('handler_starts')} |",
        f"| recovery: whole and balanced after | {fig.get('balanced_after_s')} s |",
        f"| recovery: exactly as assigned after | {fig.get('assigned_after_s')} s |",
        f"| recovery bound (derived + noise allowance) | {fig.get('bound_derived_s')} + "
        f"{c.noise_allowance:g} = {fig.get('bound_s')} s |",
        f"| stop of the whole group | {fig.get('stop_s')} s |",
        f"| wall time of the run | {result['wall_s']} s |",
        "",
        "Time until another replica worked on the victim's shards, per fault (from the journal; "
        "other faults at the same time are not separated out; a takeover counts only until the next "
        "fault on the same replica):",
        "",
        "| fault | shards taken over | median | p90 | max |",
        "|---|---:|---:|---:|---:|",
        *[f"| {kind} | {v['shards']} | {v['median_s']} s | {v['p90_s']} s | {v['max_s']} s |"
          for kind, v in (fig.get("takeover_after_fault") or {}).items()],
        "",
        f"Reproduce: `{report.reproduce()}`.",
        "",
        "The plan is fixed by the seed; the runtime's reactions (thread scheduling) are not, so a rerun "
        "applies the same faults at the same offsets to replicas that may hold different shards.",
    ]
    if report.failures:
        lines += ["", "## Failures", ""]
        for failure in report.failures[:10]:
            lines += ["```", failure[:4000], "```", ""]
    return "\n".join(lines) + "\n"


def _default_name(config: ChaosConfig) -> str:
    base = "chaos" if config.workload == "keys" else "chaos_objects"
    if config.devserver == "real":
        return base + ("_real_ha" if config.apiservers == 2 else "_real")
    return base + ("_gate" if config.sharded_watch else "")


def _object_rows(report: ChaosReport) -> list[str]:
    """The object workload's figures, as rows of the results table."""
    fig, c = report.figures, report.config
    kinds = report.failure_kinds()
    per_object = sum(n for k, n in kinds.items() if k.startswith(("SAFETY (object", "SAFETY (placement",
                                                                   "RECONCILE")))
    delay = fig.get("reconcile_delay") or {}
    excused = fig.get("write_overlaps_excused") or {}
    return [
        f"| workload | {c.objects} ConfigMaps through `shard.objects()`, the user changing {c.change_rate:g} a "
        f"second |",
        f"| **per-object violations** (overlapping writes, fences, placement, final reconcile) | **{per_object}** |",
        f"| writes (outcomes) | {fig.get('writes')} ({fig.get('write_outcomes')}) |",
        f"| user changes | {fig.get('user_changes')} |",
        f"| overlapping writes excused (lower fence: in flight past the margin / after an operator's act) | "
        f"{excused.get('in flight', 0)} / {excused.get('operator', 0)} |",
        f"| skipped as behind (a newer fence on the object) | {fig.get('behind_skips')} |",
        f"| reshards done / generations seen | {fig.get('reshards')} / {fig.get('generations')} |",
        f"| user change -> written, during the window (median / p90 / max) | {delay.get('median_s')} / "
        f"{delay.get('p90_s')} / {delay.get('max_s')} s |",
        f"| every object's final change written by its final holder after | "
        f"{fig.get('objects_reconciled_after_s')} s (bound {fig.get('objects_bound_s')} s) |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="fault window in seconds (600)")
    parser.add_argument("--seed", type=int, default=None, help=f"fault plan seed (default ${ENV_SEED} or random)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--initial", type=int, default=3, help="replicas at the start (3)")
    parser.add_argument("--min", type=int, default=2, help="fewest live replica processes (2)")
    parser.add_argument("--max", type=int, default=5, help="most live replica processes (5)")
    parser.add_argument("--mean-gap", type=float, default=2.0, help="mean seconds between faults (2)")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--renew-deadline", type=float, default=1.2)
    parser.add_argument("--retry", type=float, default=0.3)
    parser.add_argument("--drain", type=float, default=ChaosConfig.drain_delay,
                        help="seconds each handler spends cleaning up after being stopped")
    parser.add_argument("--devserver", choices=("thread", "process"), default="thread",
                        help="how the dev-server runs (ignored with --server real)")
    parser.add_argument("--server", choices=("thread", "process", "real"), default=None,
                        help="real: kube-apiserver + etcd from the kube assets, replicas through toxiproxy")
    parser.add_argument("--apiservers", type=int, choices=(1, 2), default=1,
                        help="kube-apiservers on the one etcd (2: the high-availability variant; --server real)")
    parser.add_argument("--assets", default=None,
                        help="kube-apiserver/etcd/toxiproxy-server directory (default: KUBEBUILDER_ASSETS "
                             "or the scripts/build-kube-assets cache)")
    parser.add_argument("--workload", choices=("objects", "keys"), default="objects",
                        help="objects: a ConfigMap controller on shard.objects() (default); keys: work units")
    parser.add_argument("--objects", type=int, default=ChaosConfig.objects, help="ConfigMaps (32)")
    parser.add_argument("--change-rate", type=float, default=ChaosConfig.change_rate,
                        help="user changes per second (4)")
    parser.add_argument("--gate", action="store_true",
                        help="ShardedListAndWatch on: the server filters each replica's stream")
    parser.add_argument("--weights", type=_weights, default=None,
                        help="the fault mix as KIND=WEIGHT,... (default: the server's and workload's mix; "
                             "load_shift is only injected when named here)")
    parser.add_argument("--max-write-rate", type=float, default=None,
                        help="every replica's --max-write-rate (the write budget; default none)")
    parser.add_argument("--capacities", type=_capacities, default=(),
                        help="replicas' --capacity, replica-N getting the (N mod count)-th, e.g. 1,2,1")
    parser.add_argument("--name", default=None, help="results file name (default from the settings)")
    parser.add_argument("--work-dir", default=None, help="keep the run's files here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even on success")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where chaos.json / chaos.md go")
    parser.add_argument("--plan", action="store_true", help="print the fault plan and exit")
    parser.add_argument("--recheck", metavar="WORK_DIR", default=None,
                        help="judge a kept object-workload run again from its files alone, and exit")
    parser.add_argument("--check", metavar="WORK_DIR", default=None,
                        help="run every check that a kept run's files decide (journals, fault log, logs, exits) "
                             "again, print the verdict, and exit")
    parser.add_argument("--quiet", action="store_true", help="do not print every fault as it is applied")
    args = parser.parse_args(argv)

    if args.check:
        return check_main([args.check])

    if args.recheck:
        problems = recheck_objects(args.recheck)
        for problem in problems:
            print(problem)
        print(f"{args.recheck}: {len(problems)} problems" + ("" if problems else " (PASS)"))
        return 1 if problems else 0
    if args.apiservers == 2 and args.server != "real":
        parser.error("--apiservers 2 needs --server real")
    seed = args.seed if args.seed is not None else seed_from_env()
    try:
        config = _config(args, seed)
    except ValueError as exc:
        parser.error(str(exc))
    plan = plan_faults(config)
    print(f"chaos seed {seed}: {len(plan)} planned events over {config.duration:g} s", flush=True)
    print(f"fault counts: {fault_counts(plan)}", flush=True)
    if args.plan:
        for fault in plan:
            print(fault.describe())
        return 0

    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=f"shardlease-chaos-{seed}-"))
    started = time.monotonic()

    def progress(message: str) -> None:
        if not args.quiet or not message.startswith("+"):
            print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    report = ChaosRun(config, work_dir, progress=progress).run()
    wall = round(time.monotonic() - started, 1)
    command = "python bench/chaos.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command.strip(),
        "git": _git_revision(),
        "machine": _machine(),
        "wall_s": wall,
        "bound": convergence_bound(config),
        **report.to_json(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The per-fault log is in the work directory; the results file keeps the counts and the outcome.
    summary = {k: v for k, v in result.items() if k != "applied"}
    summary["applied_events"] = len(report.applied)
    name = args.name or _default_name(config)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / f"{name}.md").write_text(_markdown(report, result))
    print(report.render_failures() if report.failures else report.summary())
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
    if report.ok and not args.keep and not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
        print("(work directory removed; pass --keep to keep it)")
    else:
        print(f"work directory kept: {work_dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
