"""``shardlease dev-server``: an API server for local development, embedded or real.

Without assets it runs the embedded dev-server (:func:`shardlease.devserver.cli.run`, fast, with
fault injection). With ``--kube-assets DIR`` or ``$KUBEBUILDER_ASSETS`` (envtest's convention; the
flag wins) it runs a real etcd + kube-apiserver from that directory instead
(:class:`shardlease.controlplane.RealControlPlane`), so the same command, kubeconfig and workflow
reach the real thing. The dispatch lives here, not in ``shardlease.devserver``, because that package
imports nothing from the rest of shardlease.

Heavy imports stay inside the functions so ``shardlease --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from shardlease.devserver.cli import DEFAULT_KUBECONFIG

ASSETS_ENV = "KUBEBUILDER_ASSETS"  # same value as shardlease.controlplane.ASSETS_ENV, without its import
PROG = "shardlease dev-server"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-server",
        help="run a Kubernetes API server for local development (embedded, or real with --kube-assets)",
        description=(
            "Serve a Kubernetes API, write a kubeconfig for it, and run until Ctrl-C or SIGTERM. "
            "By default: an embedded, in-memory server (coordination.k8s.io/v1 Leases, v1 ConfigMaps "
            "and Namespaces) over plain HTTP without authentication, with optional fault injection. "
            f"With --kube-assets DIR (or ${ASSETS_ENV}=DIR): a real etcd + kube-apiserver from the "
            "binaries in DIR (built by scripts/build-kube-assets, or envtest's), over TLS with an "
            "admin token in the kubeconfig. kubectl and the official Python client work against "
            "either unmodified."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s; non-loopback needs --allow-remote)")
    parser.add_argument("--port", type=int, default=0,
                        help="port to bind (the real server's --secure-port); 0 picks a free one "
                             "(default: %(default)s)")
    parser.add_argument("--kubeconfig", default=DEFAULT_KUBECONFIG, metavar="PATH",
                        help="where to write a kubeconfig for this server (default: %(default)s, "
                             "relative to the current directory)")
    parser.add_argument("--faults", action="store_true",
                        help="embedded server only: enable the fault-injection admin endpoint "
                             "/_shardlease/faults (and /_shardlease/requests)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow binding a non-loopback --host (the embedded server has NO "
                             "authentication)")
    parser.add_argument("--strict-namespaces", action="store_true",
                        help="embedded server only: answer 404 for writes into a namespace that was "
                             "not created first, as kube-apiserver does (default: create it)")
    parser.add_argument("--kube-assets", metavar="DIR", default=None,
                        help=f"run a real etcd + kube-apiserver from the binaries in DIR instead of "
                             f"the embedded server (default: ${ASSETS_ENV} if set); build them with "
                             f"scripts/build-kube-assets")
    parser.add_argument("--feature-gates", metavar="A=true,B=false", default=None,
                        help="feature gates, as kube-apiserver's --feature-gates, e.g. "
                             "ShardedListAndWatch=true (KEP-5866 shardSelector on list and watch, off "
                             "by default). The embedded server knows ShardedListAndWatch only; the real "
                             "one takes any gate its version has")
    parser.set_defaults(func=dispatch)


def parse_feature_gates(text: str) -> dict[str, bool]:
    """``"A=true,B=false"`` -> ``{"A": True, "B": False}``; ``ValueError`` naming the bad item."""
    gates: dict[str, bool] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or value.strip().lower() not in ("true", "false"):
            raise ValueError(f"--feature-gates: {item!r} is not NAME=true or NAME=false "
                             f"(example: --feature-gates ShardedListAndWatch=true,OtherGate=false)")
        gates[name.strip()] = value.strip().lower() == "true"
    return gates


def dispatch(args: argparse.Namespace) -> int:
    """The real control plane when assets are given, else the embedded server unchanged."""
    assets = args.kube_assets if args.kube_assets is not None else os.environ.get(ASSETS_ENV) or None
    try:
        gates = parse_feature_gates(args.feature_gates or "")
    except ValueError as exc:
        return _refuse(str(exc))
    if assets is None:
        from shardlease.devserver.cli import run
        from shardlease.devserver.shardselector import KNOWN_GATES

        unknown = sorted(set(gates) - set(KNOWN_GATES))
        if unknown:
            return _refuse(f"--feature-gates: the embedded server does not know {', '.join(unknown)} "
                           f"(it knows {', '.join(sorted(KNOWN_GATES))}); other gates need the real "
                           f"kube-apiserver: add --kube-assets DIR (or set {ASSETS_ENV}=DIR)")
        args.feature_gates = gates
        return run(args)
    source = "--kube-assets" if args.kube_assets is not None else f"${ASSETS_ENV}"
    if args.faults:
        return _refuse(f"--faults: fault injection is dev-server-only, and the real kube-apiserver "
                       f"was chosen by {source}; for faults on the real server put toxiproxy "
                       f"(toxiproxy-server in the assets dir) in front of it, or drop {source} "
                       f"to use the embedded server")
    return run_real(args, Path(assets), gates)


def _refuse(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


class _Interrupted(Exception):
    """SIGTERM/SIGINT arrived while the control plane was still starting."""


def run_real(args: argparse.Namespace, assets: Path, gates: dict[str, bool]) -> int:
    """Run etcd + kube-apiserver until SIGTERM/SIGINT (exit 0), or until one of them dies (exit 1)."""
    import ipaddress

    from shardlease.controlplane import ControlPlaneError, RealControlPlane

    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        return _refuse(f"--host: {args.host!r} is not an IP address; the real kube-apiserver binds "
                       f"an IP (use 127.0.0.1)")
    if not loopback and not args.allow_remote:
        return _refuse(f"refusing --host {args.host}: it is not a loopback address; add "
                       f"--allow-remote to expose the real kube-apiserver there")
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal starting
        stop.set()
        if starting:  # abort start() once; its cleanup stops whatever was already running
            starting = False
            raise _Interrupted

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    plane: RealControlPlane | None = None
    try:
        try:
            plane = RealControlPlane(assets, feature_gates=gates, host=args.host, port=args.port)
            print(f"starting etcd and kube-apiserver from {assets} (logs in {plane.work_dir})",
                  flush=True)
            plane.start()
        except _Interrupted:
            return 0  # the finally below stops what had started and says so
        except ControlPlaneError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
        finally:
            starting = False
        path = plane.write_kubeconfig(args.kubeconfig)
        print(f"shardlease dev-server (real kube-apiserver {plane.version}) listening on {plane.url}",
              flush=True)
        print(f"kubeconfig written to {path}", flush=True)
        print(f"ready in {plane.ready_seconds:.1f} s; logs (removed after a clean stop): "
              f"{plane.apiserver_log}, {plane.etcd_log}", flush=True)
        print(f"try: KUBECONFIG={path} kubectl get leases -A", flush=True)
        while not stop.wait(0.5):
            if not plane.running:
                print(f"{PROG}: etcd or kube-apiserver exited unexpectedly; logs: "
                      f"{plane.apiserver_log}, {plane.etcd_log}", file=sys.stderr)
                return 1
        return 0
    finally:
        if plane is not None:
            plane.stop()
            if stop.is_set():  # asked to stop: a clean end, so its temporary work dir can go
                print("shardlease dev-server stopped", flush=True)
                shutil.rmtree(plane.work_dir, ignore_errors=True)
            else:
                print(f"{PROG}: logs kept in {plane.work_dir}", file=sys.stderr)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
