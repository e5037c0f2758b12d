"""A real kube-apiserver backed by a real etcd, on loopback, for tests and local development.

This is the reference the embedded dev-server is measured against: same entry points (a URL, a
kubeconfig, ``start``/``stop``, a context manager), but the actual Kubernetes code paths, watch
cache, etcd revisions and all. It starts as envtest does: etcd with a throw-away data directory and
no fsync, then kube-apiserver with TLS from a freshly generated CA, a static admin token (group
``system:masters``), RBAC on, and the service-account keys it insists on. :meth:`start` returns once
``/readyz`` answers ``ok`` and the ``default`` namespace exists, so callers can write at once.
"""

from __future__ import annotations

import atexit
import base64
import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import pki
from .assets import BUILD_HINT, check_assets
from .errors import ControlPlaneError
from .process import Child

CONTEXT = "shardlease-real"

# Strong references on purpose: a control plane dropped without stop() is still stopped at exit.
_LIVE: set[RealControlPlane] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        planes = list(_LIVE)
    for plane in planes:
        try:
            plane.stop(grace=2.0)
        except Exception:  # pragma: no cover - best effort while the interpreter exits
            pass


atexit.register(_stop_all_at_exit)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (SO_REUSEADDR, as Go's listeners use, so a port
    in TIME_WAIT counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _validate_feature_gates(gates: Mapping[str, bool]) -> dict[str, bool]:
    checked: dict[str, bool] = {}
    for name, value in gates.items():
        if not isinstance(name, str) or not name or any(c in name for c in "=, "):
            raise ControlPlaneError(
                f"feature_gates: {name!r} is not a feature gate name (expected e.g. "
                f"'ShardedListAndWatch', without '=', ',' or spaces)")
        if not isinstance(value, bool):
            raise ControlPlaneError(
                f"feature_gates[{name!r}]: expected True or False, got {value!r}")
        checked[name] = value
    return checked


class RealControlPlane:
    """etcd + kube-apiserver as child processes; see the module docstring.

    Attributes available after :meth:`start`: ``url``, ``port``, ``token``, ``version`` (the
    server's gitVersion), ``ready_seconds`` (how long start took), ``apiserver_pid``/``etcd_pid``.
    Available at once: ``work_dir`` (logs, certificates; kept after stop for inspection, except the
    etcd data, which is deleted), ``ca_file``, ``apiserver_log``, ``etcd_log``.

    ``faults`` is always ``None`` (fault injection is the dev-server's; use toxiproxy here) and
    ``kind`` is ``"real"``, so code can take either server.
    """

    kind = "real"
    faults: None = None

    def __init__(
        self,
        assets_dir: str | os.PathLike[str],
        *,
        feature_gates: Mapping[str, bool] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        serve_pods: bool = False,
        users: Mapping[str, Sequence[str]] | None = None,
        service_cidr: str = "10.0.0.0/24",
    ) -> None:
        """``serve_pods`` configures kube-apiserver for a cluster that runs pods (see
        :mod:`shardlease.controlplane.node`): the ServiceAccount admission plugin (which mounts the
        projected token), the ``kubernetes`` Service's endpoints kept at ``host``, the Node
        authorizer, a client certificate for kubelet connections and the Service's IP among the
        serving certificate's names. ``users`` (name -> groups) get a bearer token each
        (:attr:`user_tokens`, :meth:`write_kubeconfig` ``user=``)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ControlPlaneError(
                f"host: {host!r} is not an IP address; kube-apiserver binds and advertises an IP "
                f"(use 127.0.0.1)") from None
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ControlPlaneError(f"port: {port!r} is not a TCP port (0..65535; 0 picks a free one)")
        self.assets_dir = Path(assets_dir).expanduser()
        check_assets(self.assets_dir)  # fail before leaving a work dir behind; start() checks again
        self.feature_gates = _validate_feature_gates(feature_gates or {})
        try:
            self.service_network = ipaddress.ip_network(service_cidr)
        except ValueError:
            raise ControlPlaneError(f"service_cidr: {service_cidr!r} is not a network (e.g. 10.0.0.0/24)") from None
        self.serve_pods = serve_pods
        self.users = {name: tuple(groups) for name, groups in (users or {}).items()}
        #: Bearer tokens of ``users``, after :meth:`start`.
        self.user_tokens: dict[str, str] = {}
        self.host = host
        self.port = port
        self.work_dir = (Path(work_dir) if work_dir is not None
                         else Path(tempfile.mkdtemp(prefix="shardlease-cp-")))
        self.apiserver_log = self.work_dir / "kube-apiserver.log"
        self.etcd_log = self.work_dir / "etcd.log"
        self.ca_file = self.work_dir / "pki" / "ca.crt"
        self.etcd_data_dir = self.work_dir / "etcd-data"
        self.url = ""
        self.etcd_url = ""
        self.token = ""
        self.version = ""
        #: Seconds from :meth:`start` to ready (also after :meth:`restart_apiserver`: that restart's).
        self.ready_seconds: float | None = None
        self._etcd: Child | None = None
        self._apiserver: Child | None = None
        self._apiserver_argv: list[str] = []
        self._ssl: ssl.SSLContext | None = None
        #: Further kube-apiservers on the same etcd (:meth:`add_apiserver`), stopped with this one.
        self.extra_apiservers: list[ExtraApiServer] = []
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        return f"<RealControlPlane {self.url or self.assets_dir} {state}>"

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> RealControlPlane:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._etcd and self._etcd.running and self._apiserver and self._apiserver.running)

    @property
    def apiserver_pid(self) -> int | None:
        return self._apiserver.process.pid if self._apiserver else None

    @property
    def etcd_pid(self) -> int | None:
        return self._etcd.process.pid if self._etcd else None

    def start(self, timeout: float = 90.0) -> RealControlPlane:
        """Start etcd and kube-apiserver; return once the API answers (or raise
        :class:`ControlPlaneError`, with both processes stopped)."""
        with self._lock:
            if self._started:
                raise ControlPlaneError("this RealControlPlane was already started; make a new one")
            self._started = True
        binaries = check_assets(self.assets_dir)
        if self.port and _port_in_use(self.host, self.port):
            raise ControlPlaneError(
                f"kube-apiserver: port {self.port} on {self.host} is in use (its --secure-port); "
                f"stop what listens there or pick another port (0 picks a free one)")
        began = time.monotonic()
        deadline = began + timeout
        self.port = self.port or _free_port(self.host)
        client_port, peer_port = _free_port("127.0.0.1"), _free_port("127.0.0.1")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        hosts: tuple[str, ...] = (self.host, "127.0.0.1", "localhost")
        if self.serve_pods:
            # What pods dial: the Service's cluster IP and its DNS names.
            hosts += (str(next(self.service_network.hosts())), "kubernetes", "kubernetes.default",
                      "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
        creds = pki.generate(self.work_dir / "pki", hosts, self.users)
        self.token = creds.token
        self.user_tokens = dict(creds.user_tokens)
        self._ssl = ssl.create_default_context(cafile=str(creds.ca_file))
        host_in_url = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"https://{host_in_url}:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._etcd = Child("etcd", [
                str(binaries["etcd"]), "--name=shardlease", f"--data-dir={self.etcd_data_dir}",
                f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=shardlease=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
            ], self.etcd_log)
            self._await(self._etcd, self._etcd_health, deadline, timeout)
            self._apiserver_argv = [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={self.port}", f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--cert-dir={self.work_dir / 'pki'}",
                f"--tls-cert-file={creds.cert_file}", f"--tls-private-key-file={creds.key_file}",
                f"--token-auth-file={creds.token_file}",
                "--authorization-mode=Node,RBAC" if self.serve_pods else "--authorization-mode=RBAC",
                f"--service-account-issuer={self.url}/",
                f"--service-account-key-file={creds.service_account_public_file}",
                f"--service-account-signing-key-file={creds.service_account_key_file}",
                f"--service-cluster-ip-range={self.service_network}",
                "--allow-privileged=true",
            ]
            if self.serve_pods:
                self._apiserver_argv += [
                    f"--kubelet-client-certificate={creds.kubelet_client_cert_file}",
                    f"--kubelet-client-key={creds.kubelet_client_key_file}",
                    # The node's name does not resolve; its InternalIP is where the kubelet listens.
                    "--kubelet-preferred-address-types=InternalIP",
                ]
            else:
                self._apiserver_argv += [
                    # No pods, so no service-account tokens to mount (and no "default" account
                    # without a controller-manager).
                    "--disable-admission-plugins=ServiceAccount",
                    # The "kubernetes" Service cannot point at a loopback address; without this the
                    # reconciler logs an error every 10 s forever.
                    "--endpoint-reconciler-type=none",
                ]
            if self.feature_gates:
                gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(self.feature_gates.items()))
                self._apiserver_argv.append(f"--feature-gates={gates}")
            self._apiserver = Child("kube-apiserver", self._apiserver_argv, self.apiserver_log)
            self._await(self._apiserver, self._apiserver_ready, deadline, timeout)
            self.version = str(self._get_json("/version").get("gitVersion", ""))
        except BaseException:
            self.stop(grace=2.0)
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM kube-apiserver then etcd, SIGKILL after ``grace`` s; delete the etcd data. Safe to
        call more than once, and called at interpreter exit for control planes never stopped."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            for extra in self.extra_apiservers:
                extra.stop(grace)
            for child in (self._apiserver, self._etcd):
                if child is not None:
                    child.stop(grace)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)  # up to 64 MB of preallocated WAL

    def restart_apiserver(self, timeout: float = 60.0, *, graceful: bool = False) -> None:
        """Kill kube-apiserver (SIGKILL, like a crash; SIGTERM with ``graceful=True``) and start it
        again with the same flags and port, etcd untouched: every object survives, watches break and
        clients must re-list. Returns once it is ready again."""
        if not self._started or self._stopped or self._apiserver is None:
            raise ControlPlaneError("restart_apiserver: the control plane is not running; start() it")
        began = time.monotonic()
        self._apiserver.stop(grace=10.0 if graceful else 0.0,
                             sig=signal.SIGTERM if graceful else signal.SIGKILL)
        with open(self.apiserver_log, "ab") as log:
            log.write(b"\n----- shardlease: kube-apiserver restarted -----\n")
        self._apiserver = Child("kube-apiserver", self._apiserver_argv, self.apiserver_log)
        try:
            self._await(self._apiserver, self._apiserver_ready, began + timeout, timeout)
        except BaseException:
            self.stop(grace=2.0)
            raise
        self.ready_seconds = time.monotonic() - began

    def add_apiserver(self, timeout: float = 60.0) -> ExtraApiServer:
        """Start one more kube-apiserver on this control plane's etcd (same flags, certificates,
        token and service-account keys; its own port, log and watch cache), as a highly available
        control plane runs several behind a load balancer. Returns once it is ready; stopped with
        the control plane."""
        if not self.running:
            raise ControlPlaneError("add_apiserver: the control plane is not running; start() it")
        extra = ExtraApiServer(self, len(self.extra_apiservers) + 1)
        self.extra_apiservers.append(extra)
        extra.start(timeout)
        return extra

    # ---------------------------------------------------------------- clients

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default",
                         *, server: str | None = None, user: str | None = None) -> str:
        """Write a kubeconfig (CA embedded, bearer token; readable by this user only) and return its
        path. JSON, which every YAML reader (kubectl, ``load_kube_config``) accepts. ``server``
        replaces the URL (another apiserver of this control plane, or a proxy in front of it);
        ``user`` picks one of the ``users`` given at construction instead of the admin."""
        if not self.url:
            raise ControlPlaneError("write_kubeconfig: start() the control plane first")
        if user is not None and user not in self.user_tokens:
            raise ControlPlaneError(f"write_kubeconfig: user {user!r} is not one of the users given to "
                                    f"RealControlPlane(users=...): {sorted(self.user_tokens)}")
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": CONTEXT, "cluster": {
                "server": server or self.url,
                "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode(),
            }}],
            "users": [{"name": CONTEXT, "user": {"token": self.user_tokens[user] if user else self.token}}],
            "contexts": [{"name": CONTEXT, "context": {
                "cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
            "current-context": CONTEXT,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
        os.replace(tmp, target)  # a reader never sees half a file
        return str(target.resolve())

    def _request(self, path: str, timeout: float = 5.0, url: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request((url or self.url) + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def get_json(self, path: str) -> dict[str, Any]:
        """``GET path`` as the admin, decoded; a :class:`ControlPlaneError` unless it answers 200."""
        return self._get_json(path)

    def _get_json(self, path: str) -> dict[str, Any]:
        code, body = self._request(path)
        if code != 200:
            raise ControlPlaneError(f"kube-apiserver: GET {path} answered {code}: {body[:300]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    # ---------------------------------------------------------------- waiting

    def _exited(self, child: Child, when: str) -> ControlPlaneError:
        tail = child.log_tail(25)
        if "address already in use" in tail:
            fix = ("a port it was given is in use (picked free a moment earlier, then taken by "
                   "another process, or an explicit --port); retry, or pick another port")
        elif child.name == "etcd":
            fix = "see the log above; a full disk or an unwritable work dir are the usual causes"
        else:
            fix = ("see the log above; an unknown --feature-gates name, a bad flag or an etcd "
                   f"too old for it show there (rebuild with `{BUILD_HINT}`)")
        return ControlPlaneError(
            f"{child.name} exited with code {child.process.poll()} {when}; log: {child.log_path}\n"
            f"--- last lines of {child.log_path.name} ---\n{tail}\n--- fix: {fix}")

    def _etcd_health(self) -> tuple[bool, str]:
        with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as response:
            body = response.read()
        return json.loads(body).get("health") == "true", body.decode(errors="replace")

    def _apiserver_ready(self, url: str | None = None) -> tuple[bool, str]:
        """``/readyz`` ok and the ``default`` namespace there (kube-apiserver creates it in the
        background a moment after it first reports ready; writes into it would 404 before)."""
        code, body = self._request("/readyz", url=url)
        if code != 200:
            return False, f"/readyz {code}: {body.decode(errors='replace')[-400:]}"
        code, body = self._request("/api/v1/namespaces/default", url=url)
        return code == 200, f"/api/v1/namespaces/default {code}"

    def _await(self, child: Child, probe: Callable[[], tuple[bool, str]], deadline: float,
               timeout: float) -> None:
        """Poll ``probe`` until it says ready; a clear error if ``child`` (or etcd) exits first or
        the deadline passes."""
        last = "no answer yet"
        while True:
            for watched in (child, self._etcd):
                if watched is not None and not watched.running:
                    raise self._exited(watched, f"before {child.name} became ready")
            try:
                ready, last = probe()
                if ready:
                    return
            except (OSError, ValueError) as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise ControlPlaneError(
            f"{child.name} did not become ready within {timeout:g} s (last answer: {last}); "
            f"log: {child.log_path}\n--- last lines ---\n{child.log_tail()}\n"
            f"--- fix: see the log; on a busy machine pass a longer timeout to start()")


class ExtraApiServer:
    """A further kube-apiserver of a :class:`RealControlPlane`, on the same etcd (see
    :meth:`RealControlPlane.add_apiserver`). Its watch cache is its own, filled from etcd, so it may
    lag the first apiserver's by a moment: what clients of a highly available control plane see.

    ``kill()`` is a crash (SIGKILL), ``start()`` brings it back on the same port."""

    def __init__(self, plane: RealControlPlane, index: int) -> None:
        self.plane = plane
        self.index = index
        self.port = _free_port(plane.host)
        host_in_url = f"[{plane.host}]" if ":" in plane.host else plane.host
        self.url = f"https://{host_in_url}:{self.port}"
        self.log_path = plane.work_dir / f"kube-apiserver-{index + 1}.log"
        self._child: Child | None = None

    def __repr__(self) -> str:
        return f"<ExtraApiServer {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def running(self) -> bool:
        return bool(self._child and self._child.running)

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child else None

    def start(self, timeout: float = 60.0) -> None:
        """Start (or start again) and return once ``/readyz`` answers ok."""
        if self.running:
            raise ControlPlaneError(f"{self!r} is already running")
        if _port_in_use(self.plane.host, self.port):
            raise ControlPlaneError(f"kube-apiserver #{self.index + 1}: port {self.port} is in use")
        argv = [a for a in self.plane._apiserver_argv if not a.startswith("--secure-port=")]
        argv.append(f"--secure-port={self.port}")
        if self._child is not None:
            with open(self.log_path, "ab") as log:
                log.write(b"\n----- shardlease: kube-apiserver started again -----\n")
        self._child = Child(f"kube-apiserver #{self.index + 1}", argv, self.log_path)
        began = time.monotonic()
        try:
            self.plane._await(self._child, lambda: self.plane._apiserver_ready(self.url),
                              began + timeout, timeout)
        except BaseException:
            self._child.stop(grace=2.0)
            raise

    def kill(self) -> None:
        """SIGKILL, like a crashed apiserver (its clients' connections break)."""
        if self._child is not None:
            self._child.stop(grace=0.0, sig=signal.SIGKILL)

    def stop(self, grace: float = 10.0) -> None:
        if self._child is not None:
            self._child.stop(grace)

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> str:
        """A kubeconfig for this apiserver (same CA and token as the control plane's)."""
        return self.plane.write_kubeconfig(path, namespace, server=self.url)
