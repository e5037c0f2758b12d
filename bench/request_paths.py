"""Benchmark: client CPU per conditional Lease PUT through each request path of the ``kubernetes`` client.

Why: a replica holding 1,024 shards renews about 512 Leases a second, so the client's own CPU per
renewal bounds how many shards one core can hold. ``LeaseClient`` keeps only the cheapest path in the
library; this script is where the others are measured, so the choice can be re-checked on a new
``kubernetes`` release.

Paths, all sending the same JSON renewal (``renewTime`` bumped, conditional on the last
resourceVersion) to the same Lease name pattern:

* ``lease_client``: ``shardlease.client.leases.LeaseClient.replace`` (the library: persistent sockets
  parsed by llhttp, ``shardlease.client.wire``; body serialised once, JSON parsed once);
* ``pool_urlopen``: the same ``LeaseClient`` forced onto urllib3 (``urllib3_only=True``: the
  ``PoolManager.urlopen`` of the client's REST object, the path the library took before and still takes
  through a proxy);
* ``rest_request``: ``kubernetes.client.rest.RESTClientObject.request`` (adds its own JSON encoding and
  response wrapper on top of the same ``urlopen``);
* ``generated_raw``: ``CoordinationV1Api.replace_namespaced_lease`` with a dict body and
  ``_preload_content=False`` (skips model deserialisation, keeps parameter handling and sanitising);
* ``generated_models``: the same call as most users write it, returning a ``V1Lease`` model.

Method: the dev-server runs in its own process (so its CPU is not counted); each path renews its own
Lease sequentially; ``time.process_time()`` around every request gives this process's CPU per request
(user + system, every thread). Paths are interleaved in rounds so that background load on a shared
machine hits them alike; the figure reported is the median over all requests of a path, with the
spread of the per-round medians.

Usage: ``python bench/request_paths.py [--requests 2000] [--rounds 3] [--warmup 200]``.
Writes ``bench/results/request_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

from devserver import git_revision, machine_info, start_server  # noqa: E402
from kubernetes.client import ApiClient, CoordinationV1Api  # noqa: E402
from kubernetes.client import rest as k8s_rest  # noqa: E402

from shardlease.client.connect import load_api_client  # noqa: E402
from shardlease.client.leases import LeaseClient  # noqa: E402

NAMESPACE = "default"
#: One renewal: given the Lease name and the last resourceVersion, send the PUT and return the new one.
Renew = Callable[[str, str], str]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _body(name: str, rv: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"shardlease.io/group": "bench-paths"}}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": "bench", "leaseDurationSeconds": 15, "renewTime": _now(),
                     "leaseTransitions": 0}}


def path_lease_client(api: ApiClient) -> Renew:
    client = LeaseClient(api, NAMESPACE, pool_size=2)

    def renew(name: str, rv: str) -> str:
        return str(client.replace(name, _body(name, rv), timeout=5.0)["metadata"]["resourceVersion"])

    return renew


def path_pool_urlopen(api: ApiClient) -> Renew:
    client = LeaseClient(api, NAMESPACE, pool_size=2, urllib3_only=True)

    def renew(name: str, rv: str) -> str:
        return str(client.replace(name, _body(name, rv), timeout=5.0)["metadata"]["resourceVersion"])

    return renew


def path_rest_request(api: ApiClient) -> Renew:
    rest = k8s_rest.RESTClientObject(api.configuration)
    base = f"{api.configuration.host.rstrip('/')}/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/"
    headers = dict(api.default_headers)
    headers.update({"Accept": "application/json", "Content-Type": "application/json"})

    def renew(name: str, rv: str) -> str:
        response = rest.request("PUT", base + name, headers=headers, body=_body(name, rv), _request_timeout=5.0)
        return str(json.loads(response.read())["metadata"]["resourceVersion"])

    return renew


def path_generated_raw(api: ApiClient) -> Renew:
    leases: Any = CoordinationV1Api(api)  # its stubs want a V1Lease body; a dict is what it sanitises to

    def renew(name: str, rv: str) -> str:
        response = leases.replace_namespaced_lease(name, NAMESPACE, _body(name, rv), _preload_content=False,
                                                   _request_timeout=5.0)
        return str(json.loads(response.data)["metadata"]["resourceVersion"])

    return renew


def path_generated_models(api: ApiClient) -> Renew:
    leases: Any = CoordinationV1Api(api)

    def renew(name: str, rv: str) -> str:
        lease = leases.replace_namespaced_lease(name, NAMESPACE, _body(name, rv), _request_timeout=5.0)
        return str(lease.metadata.resource_version)

    return renew


PATHS: dict[str, tuple[Callable[[ApiClient], Renew], str]] = {
    "lease_client": (path_lease_client, "LeaseClient.replace: sockets + llhttp (the library)"),
    "pool_urlopen": (path_pool_urlopen, "LeaseClient.replace over urllib3 PoolManager.urlopen (proxy path)"),
    "rest_request": (path_rest_request, "RESTClientObject.request"),
    "generated_raw": (path_generated_raw, "CoordinationV1Api, dict body, _preload_content=False"),
    "generated_models": (path_generated_models, "CoordinationV1Api, V1Lease model returned"),
}


def measure(renew: Renew, name: str, rv: str, count: int) -> tuple[list[float], list[float], str]:
    """CPU and wall seconds of ``count`` sequential renewals; returns them and the last resourceVersion."""
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(count):
        c0, w0 = time.process_time(), time.perf_counter()
        rv = renew(name, rv)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall, rv


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured PUTs per path and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; paths are interleaved within each")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured PUTs per path before the rounds")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "request_paths.json")
    args = parser.parse_args(argv)
    for flag in ("requests", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")

    with tempfile.TemporaryDirectory(prefix="shardlease-paths-") as tmp:
        server = start_server(Path(tmp))
        try:
            kubeconfig = Path(tmp) / "kubeconfig"
            # One ApiClient (and so one connection pool) per path: no path pays for another's state.
            setup = LeaseClient(load_api_client(str(kubeconfig), client_id="bench-setup"), NAMESPACE)
            renewers: dict[str, Renew] = {}
            versions: dict[str, str] = {}
            for key, (build, _label) in PATHS.items():
                renewers[key] = build(load_api_client(str(kubeconfig), client_id=f"bench-{key}"))
                name = f"paths-{key.replace('_', '-')}"
                versions[key] = str(setup.create(_body(name, None))["metadata"]["resourceVersion"])
                _cpu, _wall, versions[key] = measure(renewers[key], name, versions[key], args.warmup)
            cpu: dict[str, list[float]] = {k: [] for k in PATHS}
            wall: dict[str, list[float]] = {k: [] for k in PATHS}
            round_medians: dict[str, list[float]] = {k: [] for k in PATHS}
            for _round in range(args.rounds):
                for key in PATHS:
                    name = f"paths-{key.replace('_', '-')}"
                    c, w, versions[key] = measure(renewers[key], name, versions[key], args.requests)
                    cpu[key] += c
                    wall[key] += w
                    round_medians[key].append(statistics.median(c))
            server_cpu = server.cpu_seconds()
        finally:
            server.stop()

    baseline = statistics.median(cpu["lease_client"])
    results: dict[str, Any] = {}
    print(f"client CPU per conditional PUT, {args.rounds} x {args.requests} per path (dev-server in its own process)")
    print(f"{'path':18} {'median us':>10} {'p90 us':>8} {'rounds us':>22} {'wall us':>8} {'x lib':>6}")
    for key, (_build, label) in PATHS.items():
        values = sorted(cpu[key])
        median = statistics.median(values)
        results[key] = {
            "description": label,
            "requests": len(values),
            "cpu_median_us": _us(median),
            "cpu_mean_us": _us(statistics.fmean(values)),
            "cpu_p90_us": _us(values[int(0.9 * (len(values) - 1))]),
            "cpu_round_medians_us": [_us(v) for v in round_medians[key]],
            "wall_median_us": _us(statistics.median(wall[key])),
            "relative_to_library": round(median / baseline, 2),
        }
        r = results[key]
        rounds = "/".join(f"{v:.0f}" for v in r["cpu_round_medians_us"])
        print(f"{key:18} {r['cpu_median_us']:>10.1f} {r['cpu_p90_us']:>8.1f} {rounds:>22} "
              f"{r['wall_median_us']:>8.1f} {r['relative_to_library']:>6.2f}")
    report = {
        "benchmark": "request_paths",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "machine": machine_info(),
        "method": "sequential conditional PUTs per path; time.process_time() per request; paths interleaved "
                  "in rounds; dev-server in its own process",
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "server_cpu_s": round(server_cpu, 2),
        "paths": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
