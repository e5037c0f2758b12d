"""One small threaded HTTP server per manager: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the control loop is ticking (a wedged loop should get the pod restarted);
``/readyz`` answers 200 while the replica counts as capacity (``ShardManager.health`` lists the checks
and why each matters) and says in its body which check failed; ``/health`` gives the same as JSON, with
the states that are reported but keep the pod ready (a shard-count mismatch).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer", "Probed"]


class _HasRegistry(Protocol):
    @property
    def registry(self) -> CollectorRegistry: ...


class Probed(Protocol):
    """What the server reads from the process it reports on (``ShardManager`` is one). Named here, not
    imported, so that the manager can import this module without the two importing each other."""

    @property
    def metrics(self) -> _HasRegistry: ...

    def alive(self) -> bool: ...

    def health(self) -> dict[str, Any]: ...


class HealthServer:
    def __init__(self, manager: Probed, port: int, host: str = "0.0.0.0") -> None:
        self._manager = manager
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="shardlease-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        manager = self._manager
        if path == "/metrics":
            body = generate_latest(manager.metrics.registry)
            self._reply(request, 200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok = manager.alive()
            self._reply(request, 200 if ok else 503, b"ok\n" if ok else b"control loop not ticking\n")
        elif path == "/readyz":
            health = manager.health()
            ok = bool(health["ready"])
            lines = ["ok"] if ok else [f"not ready: {reason}" for reason in health["failures"]]
            if health["generation"] and health["configured_shards"] != health["shards"]:
                lines.append(f"note: configured for {health['configured_shards']} shards, running the group's "
                             f"{health['shards']} (generation {health['generation']})")
            if health["switching"]:
                lines.append(f"note: switching to generation {health['generation']}: handlers start once every "
                             "shard of the previous one has stopped")
            self._reply(request, 200 if ok else 503, ("\n".join(lines) + "\n").encode())
        elif path == "/health":
            health = manager.health()
            self._reply(request, 200 if health["ready"] else 503,
                        (json.dumps(health, sort_keys=True) + "\n").encode(), "application/json")
        else:
            self._reply(request, 404, b"not found\n")

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: bytes,
               content_type: str = "text/plain; charset=utf-8") -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
