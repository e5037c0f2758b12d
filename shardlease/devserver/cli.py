"""``shardlease dev-server`` without kube assets: run the embedded Kubernetes API server in the
foreground.

The sub-command and its flags are defined in :mod:`shardlease.commands.dev_server`, which chooses
between this embedded server and a real kube-apiserver (this package imports nothing from the rest of
shardlease, so the choice cannot live here). Heavy imports stay inside :func:`run` so
``shardlease --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_KUBECONFIG = "./shardlease-dev.kubeconfig"


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    from pathlib import Path

    from .server import DevServer, is_loopback

    if not args.allow_remote and not is_loopback(args.host):
        print(f"shardlease dev-server: refusing --host {args.host}: it is not a loopback address and "
              f"the server has no authentication; add --allow-remote to bind it anyway",
              file=sys.stderr)
        return 2
    # The server's own log lines (a request for a type it does not serve, an internal error) go to
    # stderr, marked as the dev-server's, next to what it prints at start.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shardlease dev-server: %(message)s"))
    server_log = logging.getLogger("shardlease.devserver")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    server_log.propagate = False
    server = DevServer(args.host, args.port, faults=args.faults, allow_remote=args.allow_remote,
                       strict_namespaces=getattr(args, "strict_namespaces", False),
                       feature_gates=getattr(args, "feature_gates", None) or None)
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
    enabled = sorted(name for name, on in server.feature_gates.items() if on)
    if enabled:
        print(f"feature gates on: {', '.join(enabled)}", flush=True)
    if args.faults:
        print(f"fault injection: {server.url}/_shardlease/faults", flush=True)
    print(f"try: KUBECONFIG={path} kubectl get leases -A", flush=True)
    server.serve_forever()
    print("shardlease dev-server stopped", flush=True)
    return 0
