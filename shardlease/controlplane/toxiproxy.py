"""toxiproxy between clients and kube-apiserver: network faults against the real control plane.

The dev-server injects faults inside itself (500s, 429s, frozen watches, per-client partitions). A
real kube-apiserver has no such knobs, so network faults go where they happen in production: on the
wire. ``toxiproxy-server`` (built next to kube-apiserver by ``scripts/build-kube-assets``) relays TCP
from a loopback port to the apiserver's secure port; clients given :meth:`Proxy.write_kubeconfig`'s
file speak TLS *through* it to kube-apiserver (the serving certificate names 127.0.0.1, which is also
where the proxy listens, so verification passes unchanged). Faults are toxics on that relay::

    with Toxiproxy(assets_dir) as toxi:
        proxy = toxi.proxy("apiserver", upstream=plane.url)   # https://127.0.0.1:PROXYPORT
        proxy.write_kubeconfig(plane, "proxied.kubeconfig")
        proxy.add_toxic("lag", "latency", latency=300, jitter=100)
        proxy.disable()          # a total outage: listener closed, every connection cut
        proxy.enable(); proxy.clear()

Only the standard library is used; the server runs as a :class:`~shardlease.controlplane.process.Child`
(own session, killed with its parent), its API on a free loopback port.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ControlPlaneError
from .process import Child

if TYPE_CHECKING:  # pragma: no cover
    from .plane import RealControlPlane

BINARY = "toxiproxy-server"


class Proxy:
    """One relay of the toxiproxy server (its ``listen`` address is fixed once created)."""

    def __init__(self, server: Toxiproxy, name: str, listen: str, upstream: str) -> None:
        self.server = server
        self.name = name
        self.listen = listen
        self.upstream = upstream

    @property
    def url(self) -> str:
        """``https://<listen>``: where clients connect instead of the apiserver."""
        return f"https://{self.listen}"

    def write_kubeconfig(self, plane: RealControlPlane, path: str | os.PathLike[str],
                         namespace: str = "default") -> str:
        """``plane``'s kubeconfig with the server changed to this proxy (same CA, same token)."""
        written = plane.write_kubeconfig(path, namespace)
        config = json.loads(Path(written).read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.url
        tmp = Path(written).with_name(Path(written).name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
        os.replace(tmp, written)
        return written

    def add_toxic(self, name: str, kind: str, *, stream: str = "downstream", toxicity: float = 1.0,
                  **attributes: float) -> None:
        """Add toxic ``name`` of type ``kind`` (``latency``: ``latency``/``jitter`` ms; ``timeout``:
        ``timeout`` ms, 0 = hold forever; ``reset_peer``: ``timeout`` ms; ...)."""
        if stream not in ("upstream", "downstream"):
            raise ControlPlaneError(f"stream: {stream!r} is not 'upstream' or 'downstream'")
        if not 0.0 <= toxicity <= 1.0:
            raise ControlPlaneError(f"toxicity: {toxicity!r} is not a fraction in [0, 1]")
        self.server.call("POST", f"/proxies/{self.name}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": toxicity,
            "attributes": {k: int(v) for k, v in attributes.items()}})

    def remove_toxic(self, name: str, attempts: int = 3) -> None:
        """Remove toxic ``name``; removing one that is not there is not an error.

        toxiproxy flushes each connection's buffered data through the rest of the chain before the
        toxic goes, waiting up to 5 s per connection, and answers 503 when that times out (a client
        that does not read, e.g. a SIGSTOPped process, or a toxic behind it that stopped reading).
        The toxic may be gone anyway, so check, and try again while it is not."""
        for attempt in range(attempts):
            try:
                self.server.call("DELETE", f"/proxies/{self.name}/toxics/{name}", allow=(404,))
                return
            except (ControlPlaneError, OSError) as exc:
                if not any(t.get("name") == name for t in self.toxics()):
                    return
                if attempt == attempts - 1:
                    raise ControlPlaneError(f"toxiproxy: toxic {name!r} of proxy {self.name!r} could "
                                            f"not be removed in {attempts} attempts: {exc}") from exc

    def toxics(self) -> list[dict[str, Any]]:
        result = self.server.call("GET", f"/proxies/{self.name}/toxics")
        return list(result) if isinstance(result, list) else []

    def disable(self) -> None:
        """Close the listener and every open connection: nothing gets through until :meth:`enable`."""
        self.server.call("POST", f"/proxies/{self.name}", {"enabled": False})

    def enable(self) -> None:
        self.server.call("POST", f"/proxies/{self.name}", {"enabled": True, "listen": self.listen})

    @property
    def enabled(self) -> bool:
        return bool(self.server.call("GET", f"/proxies/{self.name}").get("enabled"))

    def clear(self) -> None:
        """Every toxic removed and the relay enabled: normal service."""
        for toxic in self.toxics():
            self.remove_toxic(str(toxic["name"]))
        if not self.enabled:
            self.enable()


class Toxiproxy:
    """A ``toxiproxy-server`` child process with its API on a free loopback port."""

    def __init__(self, assets_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str],
                 host: str = "127.0.0.1") -> None:
        self.binary = Path(assets_dir).expanduser() / BINARY
        if not os.access(self.binary, os.X_OK):
            raise ControlPlaneError(
                f"{BINARY}: {self.binary} is missing or not executable; network faults against the "
                f"real server need it: build it with `scripts/build-kube-assets {Path(assets_dir)}`")
        self.host = host
        self.work_dir = Path(work_dir)
        self.log_path = self.work_dir / "toxiproxy.log"
        self.api = ""
        self._child: Child | None = None
        self.proxies: dict[str, Proxy] = {}

    def __enter__(self) -> Toxiproxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child else None

    def start(self, timeout: float = 20.0) -> Toxiproxy:
        from .plane import _free_port

        port = _free_port(self.host)
        self.api = f"http://{self.host}:{port}"
        self._child = Child(BINARY, [str(self.binary), "-host", self.host, "-port", str(port)],
                            self.log_path)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self._child.running:
                raise ControlPlaneError(
                    f"{BINARY} exited with code {self._child.process.poll()} at start; log: "
                    f"{self.log_path}\n{self._child.log_tail()}\n--- fix: see the log (a port taken "
                    f"between picking and binding: retry)")
            try:
                self.call("GET", "/version")
                return self
            except (OSError, ControlPlaneError) as exc:
                last = repr(exc)
            time.sleep(0.05)
        self.stop()
        raise ControlPlaneError(f"{BINARY} did not answer on {self.api} within {timeout:g} s "
                                f"(last: {last}); log: {self.log_path}")

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(grace=3.0)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             allow: tuple[int, ...] = (), timeout: float = 30.0) -> Any:
        """One API request; the decoded JSON answer (``{}`` if empty). Other than 2xx (and ``allow``)
        raises :class:`ControlPlaneError` with toxiproxy's message."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in allow:
                return {}
            raise ControlPlaneError(f"toxiproxy {method} {path}: HTTP {exc.code} "
                                    f"{exc.read()[:300]!r}") from None
        return json.loads(raw) if raw.strip() else {}

    def proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> Proxy:
        """Create a relay to ``upstream`` (``host:port`` or a URL such as the apiserver's) listening
        on ``listen`` (a free loopback port by default)."""
        if "://" in upstream:
            parts = urlsplit(upstream)
            if not parts.hostname or not parts.port:
                raise ControlPlaneError(f"upstream: {upstream!r} names no host and port")
            upstream = f"{parts.hostname}:{parts.port}"
        answer = self.call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                                "enabled": True})
        made = Proxy(self, name, str(answer.get("listen") or listen), upstream)
        if made.listen.endswith(":0"):
            raise ControlPlaneError(f"toxiproxy did not report the port proxy {name!r} listens on: "
                                    f"{answer!r}")
        self.proxies[name] = made
        return made
