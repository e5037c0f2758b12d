"""``shardlease dev-server``: run the embedded Kubernetes API server in the foreground.

Heavy imports stay inside :func:`run` so ``shardlease --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_KUBECONFIG = "./shardlease-dev.kubeconfig"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-server",
        help="run an embedded Kubernetes API server (Leases, ConfigMaps) for local development",
        description=(
            "Serve an in-memory Kubernetes API (coordination.k8s.io/v1 Leases and v1 ConfigMaps) over "
            "plain HTTP without authentication, write a kubeconfig for it, and run until Ctrl-C or "
            "SIGTERM. kubectl and the official Python client work against it unmodified. Any valid "
            "namespace name is accepted; there are no Namespace objects."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s; non-loopback needs --allow-remote)")
    parser.add_argument("--port", type=int, default=0,
                        help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--kubeconfig", default=DEFAULT_KUBECONFIG, metavar="PATH",
                        help="where to write a kubeconfig for this server (default: %(default)s, "
                             "relative to the current directory)")
    parser.add_argument("--faults", action="store_true",
                        help="enable the fault-injection admin endpoint /_shardlease/faults "
                             "(and /_shardlease/requests)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow binding a non-loopback --host (the server has NO authentication)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    from pathlib import Path

    from .server import DevServer, is_loopback

    if not args.allow_remote and not is_loopback(args.host):
        print(f"shardlease dev-server: refusing --host {args.host}: it is not a loopback address and "
              f"the server has no authentication; add --allow-remote to bind it anyway",
              file=sys.stderr)
        return 2
    server = DevServer(args.host, args.port, faults=args.faults, allow_remote=args.allow_remote)
    try:
        server.start()
    except OSError as exc:
        print(f"shardlease dev-server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    path = Path(server.write_kubeconfig(args.kubeconfig)).resolve()

    def on_signal(signum: int, frame: Any) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"shardlease dev-server listening on {server.url}", flush=True)
    print(f"kubeconfig written to {path}", flush=True)
    if args.faults:
        print(f"fault injection: {server.url}/_shardlease/faults", flush=True)
    print(f"try: KUBECONFIG={path} kubectl get leases -A", flush=True)
    server.serve_forever()
    print("shardlease dev-server stopped", flush=True)
    return 0
