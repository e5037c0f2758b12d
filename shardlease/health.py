"""One small threaded HTTP server per manager: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the control loop is ticking (a wedged loop should get the pod restarted);
``/readyz`` answers 200 while our member Lease is held and no handler is stuck past the drain timeout
(a stuck handler keeps its shard, so the replica should not be counted as healthy capacity).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .manager import ShardManager

__all__ = ["HealthServer"]


class HealthServer:
    def __init__(self, manager: ShardManager, port: int, host: str = "0.0.0.0") -> None:
        self._manager = manager
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
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
            ok = manager.ready()
            if ok:
                body = b"ok\n"
            else:
                stuck = sorted(manager.stuck_shards())
                body = (f"not ready; stuck handlers: {stuck}\n" if stuck else "not ready\n").encode()
            self._reply(request, 200 if ok else 503, body)
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
