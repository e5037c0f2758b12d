"""The peer baseline: one replica built from the official Python client's Lease elector.

What a Python user can assemble today without shardlease: ``kubernetes.leaderelection`` elects one
leader per Lease, so to split S shards among N replicas each replica joins *every* shard's election,
one ``LeaderElection(...).run()`` per shard in its own thread, and works on whatever it wins. The
Leases are named like shardlease's (``{group}-shard-{i}``) so the benchmark's observer reads both the
same way; the elector creates them with a name only (no labels).

How the elector (kubernetes 37.0.2, ``kubernetes/leaderelection/leaderelection.py``) shapes the
results, all of which this file keeps as they are rather than fixing:

* ``run()`` blocks: acquire (poll every retry period), then renew until it fails, then return. A
  thread per shard is therefore the only way to take part in S elections; after a loss this replica
  calls ``run()`` again so it can win the shard back later (otherwise a replica that lost a shard once
  would never compete for it again).
* Every attempt is a GET followed (when leading or when the Lease looks expired) by a PUT. Followers
  poll too, so the steady-state cost is S x N GETs per retry period, however the shards are spread.
* Expiry is judged from ``time.time()`` (wall clock) when the record was last seen to change, plus the
  lease duration, and only re-checked every retry period: a dead leader's shard is taken over
  lease_duration + up to one retry period after its last renewal was *observed*.
* There is no release and no stop hook: SIGTERM (Python's default action) ends the process with its
  Leases still held, so a "graceful" stop costs the same as a crash: followers wait out the lease.
* ``onstarted_leading`` runs in a daemon thread that is never told when leadership is lost; the
  callback here waits on an event that ``onstopped_leading`` sets, which is the least a careful user
  must add to avoid working on a lost shard.
* There is no balancing: the first replica to reach a free Lease keeps it for as long as it lives.
* ``Config`` refuses ``retry_period < 1``; for the scaled-down profile (0.5 s) the attribute is set
  after validation so both implementations run with the same timings.

Usage (normally started by ``bench/run.py``)::

    python bench/baseline.py --group bench --shards 64 --identity b0 --kubeconfig KC \
        --lease-duration 3 --renew-deadline 2 --retry-period 0.5
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence


def _die_with_parent() -> None:
    """Have the kernel SIGKILL us if the benchmark process dies (Linux), so nothing is left behind."""
    parent = int(os.environ.pop("_BENCH_BASELINE_PARENT", "0") or 0)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent:  # the parent died before the hook was set
        os._exit(70)


def _elect_forever(index: int, args: argparse.Namespace, won: list[int]) -> None:
    """Take part in shard ``index``'s election until the process ends."""
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    name = f"{args.group}-shard-{index}"
    while True:
        stop = threading.Event()

        def leading(stop: threading.Event = stop) -> None:
            won[index] += 1
            stop.wait()  # the "work": runs until onstopped_leading says leadership is gone

        lock = LeaseLock(name, args.namespace, args.identity)
        config = electionconfig.Config(
            lock, lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
            retry_period=max(1.0, args.retry_period), onstarted_leading=leading, onstopped_leading=stop.set)
        config.retry_period = args.retry_period  # Config rejects < 1 s; see the module docstring
        leaderelection.LeaderElection(config).run()
        stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--identity", required=True)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--lease-duration", type=int, default=15, help="whole seconds (leaseDurationSeconds)")
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    args = parser.parse_args(argv)
    if not args.lease_duration > args.renew_deadline > 1.2 * args.retry_period or args.renew_deadline < 1:
        parser.error("need lease_duration > renew_deadline > 1.2 x retry_period and renew_deadline >= 1")

    _die_with_parent()
    # The elector logs every attempt at INFO; at 1,024 shards that would measure logging, not election.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from kubernetes import config as kube_config

    kube_config.load_kube_config(config_file=args.kubeconfig)

    won = [0] * args.shards
    for index in range(args.shards):
        threading.Thread(target=_elect_forever, args=(index, args, won), name=f"elect-{index}",
                         daemon=True).start()
    print(f"baseline {args.identity} pid {os.getpid()}: {args.shards} elections started", flush=True)
    # Block until a signal ends the process; SIGTERM keeps Python's default action (exit at once,
    # Leases still held), because the elector offers nothing to release them with.
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
