"""Run the default test run's chaos test many times in a row, each with a fresh random seed.

Usage::

    python bench/chaos_loop.py --runs 30            # about 40 minutes on a 2-core machine
    python bench/chaos_loop.py --runs 3 --seeds 1 2 3
    python bench/chaos_loop.py --runs 5 --real       # also the real-server run (needs the kube assets)

The default suite's ``tests/chaos/test_chaos.py::test_chaos_run`` is timing-dependent: one run tells
little about how often it fails. This runs it ``--runs`` times through pytest, exactly as the README's
test command would (``SHARDLEASE_CHAOS_SEED`` set per run, so any failure is reproducible from the
seed printed next to it; the chaos runs of ``test_chaos.py`` are the object workload with the gate off
and on, so one "run" here is both, and ``--real`` adds ``test_chaos_real.py::test_chaos_run_real``),
and writes every outcome to ``bench/results/chaos_loop.json`` and
``chaos_loop.md``. Exit status 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
_SUMMARY = re.compile(r"chaos seed (\d+): (PASS|FAIL)([^\n]*)")


def run_once(seed: int, log_dir: Path, real: bool = False) -> dict[str, Any]:
    env = {**os.environ, "SHARDLEASE_CHAOS_SEED": str(seed)}
    started = time.monotonic()
    files = ["tests/chaos/test_chaos.py"] + (["tests/chaos/test_chaos_real.py"] if real else [])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "-k", "test_chaos_run"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = round(time.monotonic() - started, 1)
    output = proc.stdout + proc.stderr
    log = log_dir / f"chaos-{seed}.log"
    log.write_text(output)
    found = [m.group(0) for m in _SUMMARY.finditer(output)]
    return {"seed": seed, "passed": proc.returncode == 0, "exit": proc.returncode, "seconds": seconds,
            "summary": "; ".join(dict.fromkeys(found)) if found else output.strip().splitlines()[-1:] or "",
            "log": str(log)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="how many runs (default 30)")
    parser.add_argument("--seeds", type=int, nargs="*", help="use these seeds instead of random ones")
    parser.add_argument("--out", default=str(RESULTS_DIR / "chaos_loop"), help="output path without suffix")
    parser.add_argument("--real", action="store_true", help="also run the real-server chaos test each time")
    args = parser.parse_args()
    seeds = args.seeds or [random.SystemRandom().randrange(1, 2**31) for _ in range(args.runs)]
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"shardlease-chaos-loop-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    runs: list[dict[str, Any]] = []
    for number, seed in enumerate(seeds, 1):
        result = run_once(seed, log_dir, args.real)
        runs.append(result)
        print(f"run {number}/{len(seeds)} seed {seed}: {'pass' if result['passed'] else 'FAIL'} "
              f"({result['seconds']} s) {result['summary']}", flush=True)
    failed = [r for r in runs if not r["passed"]]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    report = {"command": " ".join(["python", "bench/chaos_loop.py", *sys.argv[1:]]), "commit": commit,
              "started": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "runs": len(runs), "passed": len(runs) - len(failed), "failed": len(failed), "results": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Chaos test, {len(runs)} consecutive runs with fresh seeds", "",
             f"`{report['command']}` at commit {commit}, started {report['started']}, {os.cpu_count()} CPUs.",
             "", f"**{report['passed']} passed, {report['failed']} failed.**", "",
             "| run | seed | result | seconds |", "|---|---|---|---|"]
    lines += [f"| {i} | {r['seed']} | {'pass' if r['passed'] else 'FAIL: ' + str(r['summary'])} | {r['seconds']} |"
              for i, r in enumerate(runs, 1)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"{report['passed']} passed, {report['failed']} failed (logs in {log_dir})")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
