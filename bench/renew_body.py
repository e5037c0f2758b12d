"""Benchmark: the CPU cost of building and serialising one shard Lease renewal body, with and without
the load annotation (``shardlease.io/load``, docs/load.md).

Why: a replica holding 1,024 shards renews about 512 Leases a second; the load rides on those
renewals, so its cost per renewal is what load reporting adds. The two cases interleaved, 30 rounds of N bodies
each, the best round kept (``timeit``), the Lease as a replica holding it sees it.

Usage: ``python bench/renew_body.py [--bodies 20000] [--repeat 30]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import timeit

from shardlease.core.bodies import Writer
from shardlease.core.records import LeaseRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    writer = Writer("orders", "default", "replica-0", "abc123abc123", 15, 256)
    obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "orders-shard-3", "namespace": "default", "resourceVersion": "12345",
                        "labels": {"shardlease.io/group": "orders", "shardlease.io/role": "shard",
                                   "shardlease.io/shard": "3"},
                        "annotations": {"shardlease.io/incarnation": "abc123abc123", "shardlease.io/generation": "1",
                                        "shardlease.io/epoch": "1795860000000"}},
           "spec": {"holderIdentity": "replica-0", "leaseDurationSeconds": 15,
                    "acquireTime": "2026-11-28T10:00:00.000000Z", "renewTime": "2026-11-28T10:00:00.000000Z",
                    "leaseTransitions": 3}}
    record = LeaseRecord.from_object(obj)
    assert record is not None
    wall = dt.datetime.now(dt.timezone.utc)
    n = args.bodies
    print("| renewal body | µs per body (build + JSON) | bytes |")
    print("|---|---|---|")
    cases: tuple[tuple[str, float | None], ...] = (("without load (no report)", None), ("with load", 12.345678))
    best = dict.fromkeys((label for label, _ in cases), float("inf"))
    for _ in range(args.repeat):  # interleaved, so background load hits both alike; the minimum is kept
        for label, load in cases:
            def body(load: float | None = load) -> str:
                return json.dumps(writer.renew(3, record, wall, None, load))
            best[label] = min(best[label], timeit.timeit(body, number=n))
    for label, load in cases:
        size = len(json.dumps(writer.renew(3, record, wall, None, load)))
        print(f"| {label} | {best[label] / n * 1e6:.2f} | {size} |")


if __name__ == "__main__":
    main()
