"""Benchmark: the pause of a live reshard, and who holds shards during a rolling update.

Two measurements, both on the dev-server with scaled timings (lease 2 s, renew deadline 1.2 s,
retry 0.3 s):

* ``pause``: N replicas (``LocalCluster``, one process each, the journaling handler) hold S shards;
  the count is switched S -> S2 -> S -> ... by writing the group Lease the way ``shardlease reshard``
  does. Per switch, from the write of the group Lease, read from the journal: when the last unit of
  the old generation ended (``drain``), when the first and when the last shard of the new generation
  began its first unit (``first``, ``pause``). The pause is the last of these: the time until the
  whole group works again. Also checked per switch: every new shard ran, and no unit of the new
  generation began before every old one had ended.
* ``rollout``: a rolling update simulated with ``LocalCluster`` (one process per replica): N replicas
  started with ``--shards S``; N times: add one with ``--shards S2``, wait until its member Lease is
  live and one second more, SIGTERM the oldest old one, wait for it to exit. The group's Leases are
  sampled every 0.1 s: shards held per live replica. ``--baseline-ref`` runs the same rollout with the
  replicas of an older commit (checked out in a temporary worktree and put first on PYTHONPATH): the
  rule before resharding, where the count was the oldest live member's and members configured with
  another count took nothing.

Usage::

    python bench/reshard.py [--replicas 5] [--shards 64] [--to 128] [--switches 10]
        [--baseline-ref d426344] [--parts pause,rollout] [--out bench/results/reshard]

Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardlease.client.leases import LeaseClient  # noqa: E402
from shardlease.harness.localcluster import LocalCluster, Timings  # noqa: E402
from shardlease.runtime.reshard import reshard_on  # noqa: E402

FAST = {"lease_duration": 2.0, "renew_deadline": 1.2, "retry_period": 0.3, "drain_timeout": 3.0}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------------------ pause


@contextlib.contextmanager
def _placement(server: str, tmp: str) -> Iterator[dict[str, Any]]:
    """Where the replicas' API server runs: the dev-server in a process of its own (so this process's
    polling does not share its interpreter), or etcd + kube-apiserver built by the project's scripts."""
    if server == "dev":
        yield {"devserver": "process"}
        return
    from shardlease.controlplane import RealControlPlane, find_assets

    assets = find_assets()
    if assets is None:
        raise SystemExit("--server real needs the kube-apiserver and etcd binaries (scripts/build-kube-assets.sh)")
    plane = RealControlPlane(assets, work_dir=Path(tmp) / "plane").start()
    try:
        yield {"devserver": "real", "control_plane": plane}
    finally:
        plane.stop()


class _TimedWrites(LeaseClient):
    """A LeaseClient that notes when its last ``replace`` was sent and answered: the pause is timed from
    the group Lease write itself, not from the reads ``reshard`` makes before it (a GET and a LIST, and
    another round when the write meets a conflict)."""

    sent = 0.0
    answered = 0.0

    def replace(self, *args: Any, **kwargs: Any) -> Any:
        self.sent = time.monotonic()
        try:
            return super().replace(*args, **kwargs)
        finally:
            self.answered = time.monotonic()


def bench_pause(replicas: int, shards: int, to: int, switches: int, server: str,
                timings: Timings | None = None) -> dict[str, Any]:
    """Switch a LocalCluster (one process per replica) back and forth; read the pause from the journal.

    Each switch starts once the previous one is over: every shard held and, after a shrink, the retired
    shard Leases deleted and the span lowered (the oldest member does that one lease duration after the
    barrier). Without that wait the next switch's writes meet the clean-up's deletes, and a grow
    re-creates Leases the clean-up is still deleting: the figure would then measure the bench's pace."""
    from shardlease.harness.journal import load_journal

    timings = timings or Timings()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, _placement(server, tmp) as placement:
        # Half-second units: a handler's first unit begins when it starts, and the journal stays small.
        cluster = LocalCluster(group="pause", shards=shards, timings=timings, work_dir=Path(tmp) / "c",
                               env={"SHARDLEASE_JOURNAL_WORK": "0.5"}, **placement)
        cluster.start(replicas)
        lc = _TimedWrites(cluster.api_client(), cluster.namespace)
        settle = 2 * timings.lease_duration + 30
        try:
            cluster.wait_working(timeout=60)
            time.sleep(timings.lease_duration + 0.5)  # past the watch shrink and any settling handoffs
            count = shards
            for i in range(switches):
                cluster.wait_for(lambda s, n=count: s.shards == n and s.all_held(), settle, what=f"before switch {i + 1}")
                deadline = time.monotonic() + settle
                while (state := cluster.group_state()) is None or state.span != count:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"switch {i + 1}: the span was not lowered to {count} within {settle:g}s")
                    time.sleep(0.2)
                count = to if count == shards else shards
                # What `shardlease reshard` does: one conditional write of the group Lease.
                new = reshard_on(lc, cluster.group, count, namespace=cluster.namespace).state
                t0, write_s = lc.sent, lc.answered - lc.sent
                cluster.wait_for(lambda s, n=count: s.shards == n and s.all_held(), settle, what=f"switch {i + 1}")
                # Every shard held is not every handler started: on a loaded machine the last first units
                # come later. Read the journal until each new shard has begun one (10 s at most), so a late
                # start lengthens the pause instead of being left out of it.
                deadline = time.monotonic() + 10.0
                while True:
                    time.sleep(0.5)
                    units = [e for e in load_journal(cluster.journal_dir) if e.kind == "work"]
                    fresh = [e for e in units if e.generation == new.generation]
                    if {e.shard for e in fresh} >= set(range(count)) or time.monotonic() > deadline:
                        break
                old = [e for e in units if e.generation < new.generation]
                drain = max(e.end for e in old) - t0
                firsts = {}
                for e in fresh:
                    firsts[e.shard] = min(firsts.get(e.shard, e.start), e.start)
                first = min(firsts.values()) - t0
                pause = max(firsts.values()) - t0
                clean = set(firsts) == set(range(count)) and drain <= first
                rows.append({"switch": i + 1, "to": count, "generation": new.generation, "write_s": round(write_s, 4),
                             "drain_s": round(drain, 4),
                             "first_s": round(first, 4), "pause_s": round(pause, 4), "old_stopped_first": clean,
                             "old_before_new": drain <= first, "new_started": len(set(firsts) & set(range(count)))})
                print(f"switch {i + 1:2d} -> {count:4d}: write {write_s * 1000:5.1f} ms, "
                      f"old stopped {drain * 1000:6.1f} ms, first new "
                      f"{first * 1000:6.1f} ms, all running {pause * 1000:6.1f} ms, order ok {clean}", flush=True)
        finally:
            cluster.stop()
    pauses = [r["pause_s"] for r in rows]
    return {"replicas": replicas, "from": shards, "to": to, "switches": rows,
            "timings": {"lease_duration": timings.lease_duration, "renew_deadline": timings.renew_deadline,
                        "retry_period": timings.retry_period},
            "pause_p50_s": statistics.median(pauses), "pause_p99_s": _percentile(pauses, 0.99),
            "pause_max_s": max(pauses), "all_ordered": all(r["old_stopped_first"] for r in rows)}


# ---------------------------------------------------------------------------------------- rollout


@contextlib.contextmanager
def _worktree(ref: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shardlease-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


def bench_rollout(replicas: int, shards: int, to: int, pythonpath: str | None, server: str) -> dict[str, Any]:
    env = {"SHARDLEASE_JOURNAL_WORK": "0.05"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    samples: list[dict[str, Any]] = []
    joined: dict[str, float] = {}
    first_shard: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, _placement(server, tmp) as placement:
        # ``python -c`` puts the working directory first on sys.path: the baseline's replicas run there.
        cluster = LocalCluster(group="roll", shards=shards, timings=Timings(), work_dir=Path(tmp) / "c", env=env,
                               cwd=pythonpath or None, **placement)
        cluster.start(replicas)
        try:
            cluster.wait_settled(timeout=60)
            stop = threading.Event()
            t0 = time.monotonic()

            def sample() -> None:
                while not stop.is_set():
                    with contextlib.suppress(Exception):
                        snap = cluster.snapshot()
                        live = snap.live_members()
                        load = snap.load()
                        now = time.monotonic() - t0
                        samples.append({"t": round(now, 2), "live": live, "load": {m: load.get(m, 0) for m in live}})
                        for m in live:
                            joined.setdefault(m, now)
                            if load.get(m, 0) and m not in first_shard:
                                first_shard[m] = now
                    stop.wait(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            old = cluster.running_identities()
            for step in range(replicas):
                name = f"new-{step}"
                cluster.add_replica(name, extra_args=["--shards", str(to)])
                deadline = time.monotonic() + 30
                while name not in joined and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1.0)
                victim = cluster.replica(old[step])
                victim.terminate()
                victim.wait(30)
            time.sleep(4.0)
            stop.set()
            sampler.join(5)
        finally:
            cluster.stop()
    new_names = [f"new-{i}" for i in range(replicas)]
    idle = {m: round(first_shard.get(m, samples[-1]["t"]) - joined.get(m, samples[-1]["t"]), 2) for m in new_names}
    peak = max((max(s["load"].values(), default=0) for s in samples), default=0)
    fair = shards / replicas
    return {"idle_before_first_shard_s": idle, "max_idle_s": max(idle.values()),
            "never_held": [m for m in new_names if m not in first_shard],
            "peak_shards_on_one_replica": peak, "fair_share": fair, "samples": samples}


def _replica_code(path: str) -> str:
    """Which shardlease a replica started in ``path`` imports (so the baseline is the baseline)."""
    out = subprocess.run([sys.executable, "-c", "import shardlease, os; print(os.path.dirname(shardlease.__file__))"],
                         cwd=path, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--to", type=int, default=128)
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--baseline-ref", default="d426344", help="commit with the rule before resharding ('' to skip)")
    parser.add_argument("--parts", default="pause,rollout")
    parser.add_argument("--server", choices=("dev", "real"), default="dev")
    parser.add_argument("--timings", choices=("fast", "default"), default="fast",
                        help="the replicas' timings in the pause part: fast (lease 2 s / renew deadline 1.2 s / "
                             "retry 0.3 s, the tests' scale) or default (15 s / 10 s / 2 s, as deployed)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/reshard"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"server": args.server, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                              "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                       capture_output=True, text=True).stdout.strip()}
    # The machine is shared: its load average says how far the figures are from a quiet one's.
    result["machine"]["load_before"] = [round(x, 2) for x in os.getloadavg()]
    if "pause" in parts:
        timings = Timings(15.0, 10.0, 2.0) if args.timings == "default" else Timings()
        result["pause"] = bench_pause(args.replicas, args.shards, args.to, args.switches, args.server, timings)
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if "rollout" in parts:
        print("rollout, this version ...", flush=True)
        result["rollout_after"] = bench_rollout(args.replicas, args.shards, args.to, None, args.server)
        if args.baseline_ref:
            print(f"rollout, baseline {args.baseline_ref} ...", flush=True)
            with _worktree(args.baseline_ref) as path:
                result["rollout_today"] = bench_rollout(args.replicas, args.shards, args.to, str(path), args.server)
                result["rollout_today"]["replica_code"] = _replica_code(str(path))
            result["baseline_ref"] = args.baseline_ref
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out + ".md").write_text(render(result))
    print(render(result))


def render(result: dict[str, Any]) -> str:
    lines = ["# Live resharding (bench/reshard.py)", "",
             f"Commit {result['commit']}, {result['machine']['cpus']} CPUs, Python {result['machine']['python']}; "
             f"{'kube-apiserver' if result['server'] == 'real' else 'dev-server (own process)'}, "
             + ("lease {lease_duration:g} s / renew deadline {renew_deadline:g} s / retry {retry_period:g} s."
                .format(**result.get("pause", {}).get("timings", {"lease_duration": 2, "renew_deadline": 1.2,
                                                                   "retry_period": 0.3})))
             + (f" Load average (1/5/15 min) before: {result['machine']['load_before']}, after the pause part: "
                f"{result['machine'].get('load_after')}." if "load_before" in result["machine"] else ""), ""]
    pause = result.get("pause")
    if pause:
        lines += [f"## Pause per switch: N = {pause['replicas']}, S = {pause['from']} <-> {pause['to']}", "",
                  "From the group Lease write being sent to every shard of the new generation running its handler "
                  "(one process per replica, from the journal); each switch once the previous one is over (every "
                  "shard held, retired Leases deleted). `write`: the group Lease PUT's own round trip.", "",
                  "| switch | to | write (ms) | old stopped (ms) | first new (ms) | all running (ms) | old before new | "
                  "new shards started |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['switch']} | {r['to']} | {r.get('write_s', float('nan')) * 1000:.1f} | "
                  f"{r['drain_s'] * 1000:.1f} | {r['first_s'] * 1000:.1f} | "
                  f"{r['pause_s'] * 1000:.1f} | {'yes' if r.get('old_before_new', r['old_stopped_first']) else 'NO'} | "
                  f"{r.get('new_started', '?')} of {r['to']} |" for r in pause["switches"]]
        lines += ["", f"Pause p50 {pause['pause_p50_s'] * 1000:.1f} ms, p99 {pause['pause_p99_s'] * 1000:.1f} ms, "
                  f"max {pause['pause_max_s'] * 1000:.1f} ms (target p99 <= 200 ms).", ""]
    for key, title in (("rollout_today", f"before ({result.get('baseline_ref', '')})"), ("rollout_after", "after")):
        roll = result.get(key)
        if not roll:
            continue
        lines += [f"## Rolling update {title}", "",
                  f"- longest a new replica was live without a shard: {roll['max_idle_s']:.2f} s "
                  f"(per replica: {roll['idle_before_first_shard_s']})",
                  f"- new replicas that never held a shard while old ones were live: {roll['never_held'] or 'none'}",
                  f"- most shards on one replica at any sample: {roll['peak_shards_on_one_replica']} "
                  f"(fair share {roll['fair_share']:.1f})", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
