"""Shared machinery of the process-level scenarios: timing profiles, a Lease observer that timestamps
every change on this process's monotonic clock, a group of replicas of either implementation, and
/proc readings.

Why an observer of our own rather than polling ``LocalCluster.snapshot()``: a snapshot is a LIST, so
polling would (a) show up in the API-cost counters we want to measure and (b) only resolve changes to
the polling interval. One watch costs one request for the whole run and delivers every change as it
is committed, so per-shard "time until re-held" is the arrival time of the first event naming a new
holder, minus the time the signal was sent (both ``time.monotonic()`` in this process).

The observer watches *every* Lease in the namespace, not the group's label selector, because the
baseline (``kubernetes.leaderelection``) creates its Leases with a name and no labels. Leases are told
apart by name: ``{group}-shard-{i}`` and ``{group}-member-{identity}``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from shardlease.core.assignment import assign  # noqa: E402
from shardlease.harness.localcluster import LocalCluster, Replica, Timings  # noqa: E402

OURS = "shardlease"
BASELINE = "baseline"
IMPLEMENTATIONS = (OURS, BASELINE)
IDLE_HANDLER = "bench.scenarios.idle:handle"
OBSERVER_ID = "shardlease-bench-observer"
NAMESPACE = "default"
LEASES_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
#: Where a real kube-apiserver keeps its own Leases (its identity Lease, renewed every 10 s).
SYSTEM_NAMESPACE = "kube-system"


def leases_path(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


@dataclass(frozen=True)
class Server:
    """Which API server the replicas talk to: ``"dev"`` (shardlease's dev-server in its own process,
    the default) or ``"real"`` (etcd + kube-apiserver from ``assets``, see
    :mod:`shardlease.controlplane`)."""

    kind: str = "dev"
    assets: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in SERVER_KINDS:
            raise ValueError(f"server kind {self.kind!r}: choose one of {SERVER_KINDS}")
        if self.kind == "real" and self.assets is None:
            raise ValueError("server kind 'real' needs the kube-apiserver/etcd assets directory")

    @property
    def real(self) -> bool:
        return self.kind == "real"


SERVER_KINDS = ("dev", "real")
DEV_SERVER = Server()


# --------------------------------------------------------------------------------------------------
# Timing profiles
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Lease timings of one run. ``lease_duration`` is whole seconds because ``leaseDurationSeconds``
    is an integer on the wire (and the baseline does ``int(str(duration))``, which a float breaks)."""

    name: str
    lease_duration: int
    renew_deadline: float
    retry_period: float

    def timings(self) -> Timings:
        return Timings(lease_duration=float(self.lease_duration), renew_deadline=self.renew_deadline,
                       retry_period=self.retry_period)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "lease_duration": self.lease_duration,
                "renew_deadline": self.renew_deadline, "retry_period": self.retry_period}


#: Scaled down from production so runs are short, with the same ordering of the three durations.
SCALED = Profile("scaled", 3, 2.0, 0.5)
#: client-go / kube-controller-manager / controller-runtime defaults.
DEFAULT = Profile("default", 15, 10.0, 2.0)
PROFILES: dict[str, Profile] = {p.name: p for p in (SCALED, DEFAULT)}


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(values: Sequence[float], lease_duration: float) -> dict[str, Any]:
    """p50 / p99 / max / mean in seconds and as a ratio to the lease duration (``*_x_lease``)."""
    if not values:
        return {"n": 0}
    out: dict[str, Any] = {"n": len(values)}
    for key, value in (("p50", percentile(values, 50)), ("p99", percentile(values, 99)),
                       ("max", max(values)), ("mean", statistics.fmean(values))):
        out[key] = round(value, 4)
        out[f"{key}_x_lease"] = round(value / lease_duration, 4)
    return out


def load_summary(load: Mapping[str, int], shards: int, members: int) -> dict[str, Any]:
    """Peak load over mean load (S/N): 1.0 is perfect balance."""
    peak = max(load.values(), default=0)
    mean = shards / members if members else math.nan
    return {"peak": peak, "mean": round(mean, 3), "peak_over_mean": round(peak / mean, 3) if mean else None,
            "holding": len([v for v in load.values() if v]), "members": members}


# --------------------------------------------------------------------------------------------------
# /proc readings (Linux)
# --------------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS in KiB and the thread count from ``/proc/<pid>/status``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
        elif key == "Threads":
            out[key] = int(value)
    return out


def free_port() -> int:
    """A loopback port free right now (for ``--metrics-port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_metrics(port: int, timeout: float = 5.0) -> dict[str, float]:
    """Prometheus text of a replica as ``{sample name with labels stripped: value}`` (summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        if name.endswith("_bucket"):
            le = name_part.split('le="', 1)[1].split('"', 1)[0] if 'le="' in name_part else ""
            name = f"{name}[{le}]"
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------------------------------
# The observer
# --------------------------------------------------------------------------------------------------


@dataclass
class Change:
    """A shard Lease whose holder changed, as the observer saw it (``""`` = released / absent)."""

    t: float
    shard: int
    old: str
    new: str


@dataclass
class ObserverState:
    holders: dict[int, str] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)
    last_event: float = 0.0


class Observer:
    """List + watch every Lease of the namespace on a thread; keep holders, a change log, and (when
    asked) the gaps between renewals of each shard.

    A watch that ends (server timeout, cut) resumes from the last resourceVersion; a 410 re-lists.
    ``stop()`` shuts the socket down, which ends the blocking read at once.
    """

    def __init__(self, url: str, group: str, shards: int, *, namespace: str = NAMESPACE,
                 tls: ssl.SSLContext | None = None, token: str = "") -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._tls = tls if parsed.scheme == "https" else None
        self._token = token
        self._path = leases_path(namespace)
        self.group = group
        self.shards = shards
        self._shard_prefix = f"{group}-shard-"
        self._member_prefix = f"{group}-member-"
        self._cond = threading.Condition()
        self.state = ObserverState()
        self.changes: list[Change] = []
        self.member_log: list[tuple[float, str, bool]] = []
        self._renew_at: dict[int, float] = {}
        self._renew_time: dict[int, str] = {}
        self._recording = False
        self.gaps: list[float] = []
        self.renewals = 0
        self.events = 0
        self._rv = ""
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._synced = threading.Event()
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> Observer:
        self._thread = threading.Thread(target=self._run, name="bench-observer", daemon=True)
        self._thread.start()
        if not self._synced.wait(timeout):
            raise RuntimeError(f"observer did not sync within {timeout} s: {self.error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def _request(self, path: str, timeout: float) -> http.client.HTTPResponse:
        conn: http.client.HTTPConnection
        if self._tls is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conn = conn
        headers = {"X-Shardlease-Client": OBSERVER_ID, "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        conn.request("GET", path, headers=headers)
        return conn.getresponse()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set() and failures < 50:
            try:
                if not self._rv:
                    self._list()
                self._watch()
                failures = 0
                self._stop.wait(0.05)  # a watch the server ended at once must not become a busy loop
            except Exception as exc:  # connection reset, server gone at the end of a run, ...
                if self._stop.is_set():
                    return
                self.error = exc
                failures += 1
                self._stop.wait(min(1.0, 0.05 * failures))
            finally:
                if self._conn is not None:
                    self._conn.close()

    def _list(self) -> None:
        response = self._request(self._path, timeout=30)
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"list answered {response.status}: {raw[:300]!r}")
        body = json.loads(raw)
        now = time.monotonic()
        with self._cond:
            for obj in body.get("items") or []:
                self._apply(obj, now, deleted=False)
            self._rv = str(body.get("metadata", {}).get("resourceVersion", ""))
            self._cond.notify_all()
        self._synced.set()

    def _watch(self) -> None:
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": self._rv,
                                        "allowWatchBookmarks": "true", "timeoutSeconds": "600"})
        response = self._request(f"{self._path}?{query}", timeout=60)
        if response.status != 200:
            response.read()
            raise RuntimeError(f"watch answered {response.status}")
        while not self._stop.is_set():
            line = response.readline()
            if not line:
                return  # the server ended the watch; resume from self._rv
            now = time.monotonic()
            event = json.loads(line)
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    self._rv = ""  # expired: re-list
                raise RuntimeError(f"watch error: {obj.get('message')}")
            with self._cond:
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self._rv = str(rv)
                if kind != "BOOKMARK":
                    self._apply(obj, now, deleted=(kind == "DELETED"))
                    self._cond.notify_all()

    def _apply(self, obj: Mapping[str, Any], now: float, *, deleted: bool) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        spec = obj.get("spec") or {}
        holder = "" if deleted else str(spec.get("holderIdentity") or "")
        self.events += 1
        self.state.last_event = now
        if name.startswith(self._shard_prefix):
            try:
                shard = int(name[len(self._shard_prefix):])
            except ValueError:
                return
            old = self.state.holders.get(shard, "")
            if holder != old:
                self.state.holders[shard] = holder
                self.changes.append(Change(now, shard, old, holder))
                self._renew_at.pop(shard, None)
            renew = str(spec.get("renewTime") or "")
            if holder and renew != self._renew_time.get(shard):
                self._renew_time[shard] = renew
                previous = self._renew_at.get(shard)
                self._renew_at[shard] = now
                if self._recording and previous is not None:
                    self.gaps.append(now - previous)
                    self.renewals += 1
        elif name.startswith(self._member_prefix):
            identity = name[len(self._member_prefix):]
            present = bool(holder)
            if present != (identity in self.state.members):
                (self.state.members.add if present else self.state.members.discard)(identity)
                self.member_log.append((now, identity, present))

    # ------------------------------------------------------------------ queries

    def holders(self) -> dict[int, str]:
        """Holder of every shard 0..S-1 right now (``""`` when free or absent)."""
        with self._cond:
            return {i: self.state.holders.get(i, "") for i in range(self.shards)}

    def load(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for holder in self.holders().values():
            if holder:
                counts[holder] = counts.get(holder, 0) + 1
        return counts

    def members(self) -> set[str]:
        with self._cond:
            return set(self.state.members)

    def mark(self) -> int:
        """Position in the change log, for :meth:`changes_since`."""
        with self._cond:
            return len(self.changes)

    def changes_since(self, mark: int) -> list[Change]:
        with self._cond:
            return list(self.changes[mark:])

    def record_renewals(self, on: bool) -> None:
        """Start (clearing earlier figures) or stop collecting renewal gaps."""
        with self._cond:
            if on:
                self.gaps = []
                self.renewals = 0
            self._recording = on

    def wait_until(self, predicate: Callable[[dict[int, str]], bool], timeout: float) -> bool:
        """Block until ``predicate(holders)`` is true (checked after events, at most every 50 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            holders = self.holders()
            if predicate(holders):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                self._cond.wait(min(remaining, 0.2))
            time.sleep(0.05)  # coalesce bursts: a predicate over 1,024 shards per event is costly

    def quiet_for(self, seconds: float, timeout: float) -> bool:
        """Wait until no holder changed for ``seconds`` (renewals do not count)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                last = self.changes[-1].t if self.changes else 0.0
            if time.monotonic() - last >= seconds:
                return True
            time.sleep(min(0.1, seconds / 4))
        return False


def first_time(start: float, holders: Mapping[int, str], changes: Iterable[Change],
               ok: Callable[[int, str], bool]) -> float | None:
    """Replay ``changes`` over ``holders`` (the state at ``start``) and return the first event time at
    which ``ok(shard, holder)`` holds for every shard (``start`` if it already does), else ``None``.

    Exact to the event, unlike a polled predicate, and O(1) per change.
    """
    current = dict(holders)
    bad = {s for s, h in current.items() if not ok(s, h)}
    if not bad:
        return start
    for change in changes:
        if change.t < start:
            continue
        current[change.shard] = change.new
        if ok(change.shard, change.new):
            bad.discard(change.shard)
        else:
            bad.add(change.shard)
        if not bad:
            return change.t
    return None


# --------------------------------------------------------------------------------------------------
# A group of replicas of one implementation
# --------------------------------------------------------------------------------------------------


class Group:
    """An API server, an observer, and replicas of ``impl`` for one group.

    The server is the dev-server in its own process, or with ``server=Server("real", assets)`` a
    real etcd + kube-apiserver (:class:`~shardlease.controlplane.RealControlPlane` via
    ``LocalCluster(devserver="real")``); the observer then speaks TLS with the admin token, and a
    second observer on ``kube-system`` counts the writes the kube-apiserver makes to its own
    identity Lease, so API-cost figures can leave them out (:meth:`server_own_writes`).

    ``impl == "shardlease"``: ``python -m shardlease run bench.scenarios.idle:handle`` via
    :class:`LocalCluster`. ``impl == "baseline"``: ``python bench/baseline.py`` processes, started as
    :class:`Replica` objects appended to the cluster so its clean-up (SIGTERM, SIGKILL of the process
    group, ``atexit``) covers them too.
    """

    def __init__(self, impl: str, shards: int, profile: Profile, work_dir: Path, *,
                 group: str = "bench", metrics: bool = False, server: Server = DEV_SERVER,
                 replica_args: Sequence[str] = ()) -> None:
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {impl!r}")
        self.impl = impl
        self.shards = shards
        self.profile = profile
        self.group = group
        self.metrics = metrics
        self.metrics_ports: dict[str, int] = {}
        self.server = server
        #: Extra ``shardlease run`` flags for every replica (e.g. ``--max-write-rate``).
        self.replica_args = tuple(replica_args)
        # The dev-server's admin endpoints (request counters) need faults=True; a real server has none.
        where: dict[str, Any] = ({"devserver": "real", "assets": server.assets, "faults": False} if server.real
                                 else {"devserver": "process", "faults": True})
        self.cluster = LocalCluster(handler=IDLE_HANDLER, group=group, shards=shards, namespace=NAMESPACE,
                                    timings=profile.timings(), work_dir=work_dir, cwd=str(REPO_ROOT), **where)
        self.observer: Observer | None = None
        self.system_observer: Observer | None = None
        self._tls: ssl.SSLContext | None = None
        self._token = ""
        self._next = 0

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Group:
        self.cluster.start(0)
        plane = self.cluster.control_plane
        if plane is not None:
            self._tls = ssl.create_default_context(cafile=str(plane.ca_file))
            self._token = str(plane.token)
            self.system_observer = Observer(self.cluster.url, "kube-apiserver", 0, namespace=SYSTEM_NAMESPACE,
                                            tls=self._tls, token=self._token).start()
        self.observer = Observer(self.cluster.url, self.group, self.shards, tls=self._tls,
                                 token=self._token).start()
        return self

    def close(self) -> None:
        try:
            for observer in (self.observer, self.system_observer):
                if observer is not None:
                    observer.stop()
        finally:
            self.cluster.stop(grace=5.0)

    @property
    def obs(self) -> Observer:
        assert self.observer is not None, "start() first"
        return self.observer

    # ------------------------------------------------------------------ replicas

    def spawn(self) -> Replica:
        identity = f"{'r' if self.impl == OURS else 'b'}{self._next}"
        self._next += 1
        if self.impl == OURS:
            extra: list[str] = ["--log-level", "WARNING", *self.replica_args]
            if self.metrics:
                port = free_port()
                self.metrics_ports[identity] = port
                extra += ["--metrics-port", str(port)]
            return self.cluster.add_replica(identity, extra_args=extra)
        return self._spawn_baseline(identity)

    def _spawn_baseline(self, identity: str) -> Replica:
        cluster = self.cluster
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["KUBECONFIG"] = str(cluster.kubeconfig)
        env["_BENCH_BASELINE_PARENT"] = str(os.getpid())
        p = self.profile
        argv = [cluster.python, str(BENCH_DIR / "baseline.py"), "--group", self.group,
                "--shards", str(self.shards), "--namespace", NAMESPACE, "--identity", identity,
                "--kubeconfig", str(cluster.kubeconfig), "--lease-duration", str(p.lease_duration),
                "--renew-deadline", f"{p.renew_deadline:g}", "--retry-period", f"{p.retry_period:g}"]
        replica = Replica(identity, len(cluster.replicas), argv, env, cluster.log_dir / f"{identity}.log",
                          str(REPO_ROOT))
        cluster.replicas.append(replica)
        return replica

    def running(self) -> list[Replica]:
        return self.cluster.running()

    def running_ids(self) -> list[str]:
        return self.cluster.running_identities()

    def desired(self, members: Iterable[str] | None = None) -> dict[int, str]:
        return assign(self.group, self.shards, list(self.running_ids() if members is None else members))

    def settled_check(self, members: Iterable[str] | None = None) -> Callable[[int, str], bool]:
        """Per-shard "settled" test: shardlease -- held by the owner the assignment names over
        ``members``; baseline (no assignment) -- held by any of ``members``."""
        ids = list(self.running_ids() if members is None else members)
        if self.impl == OURS:
            desired = assign(self.group, self.shards, ids)
            return lambda shard, holder: holder == desired.get(shard)
        allowed = set(ids)
        return lambda shard, holder: holder in allowed

    def wait_settled(self, timeout: float, members: Iterable[str] | None = None) -> bool:
        ok = self.settled_check(members)
        return self.obs.wait_until(lambda h: all(ok(s, x) for s, x in h.items()), timeout)

    def busiest(self) -> Replica:
        """The running replica holding the most shards (ties: the oldest), the victim of a signal."""
        load = self.obs.load()
        running = self.running()
        return max(running, key=lambda r: (load.get(r.identity, 0), -r.index))

    def server_pids(self) -> list[int]:
        """The server's processes: the dev-server, or kube-apiserver and etcd."""
        plane = self.cluster.control_plane
        if plane is not None:
            return [pid for pid in (plane.apiserver_pid, plane.etcd_pid) if pid]
        return [pid for pid in (self.cluster.server_pid,) if pid]

    def request_counts(self) -> dict[str, int]:
        """Requests served so far as ``{"verb resource": count}``, verbs named as the dev-server
        names them (get, list, watch, create, update, delete, patch).

        Dev-server: its own counters (``/_shardlease/requests``, not counted themselves). Real
        server: the sum over codes and scopes of kube-apiserver's ``apiserver_request_total``
        counter from its ``/metrics`` endpoint (read with the admin token; a scrape is a
        non-resource request, so it does not count against Leases). A request is counted when it
        completes, so a watch open across a window is not in it (same as the dev-server)."""
        if not self.server.real:
            with urllib.request.urlopen(f"{self.cluster.url}/_shardlease/requests", timeout=10) as response:
                body = json.loads(response.read())
            return {f"{r['verb']} {r['resource']}": int(r["count"]) for r in body.get("requests", [])}
        request = urllib.request.Request(f"{self.cluster.url}/metrics",
                                         headers={"Authorization": f"Bearer {self._token}"})
        with urllib.request.urlopen(request, timeout=20, context=self._tls) as response:
            text = response.read().decode()
        return apiserver_request_counts(text)

    def server_own_writes(self) -> int:
        """Writes to ``kube-system`` Leases seen so far (the kube-apiserver's identity Lease): traffic
        of the server itself, counted by ``apiserver_request_total`` like anyone else's. 0 on the
        dev-server, which has none."""
        return self.system_observer.events if self.system_observer is not None else 0

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {r.identity} ({'running' if r.running else r.returncode}) ---\n{r.log_tail(lines)}"
                         for r in self.cluster.replicas)


#: kube-apiserver's verb label -> the dev-server's verb name.
_APISERVER_VERBS = {"GET": "get", "LIST": "list", "WATCH": "watch", "WATCHLIST": "watch", "POST": "create",
                    "PUT": "update", "DELETE": "delete", "DELETECOLLECTION": "deletecollection",
                    "PATCH": "patch", "APPLY": "patch"}
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_request_counts(metrics_text: str) -> dict[str, int]:
    """``apiserver_request_total`` samples of a kube-apiserver ``/metrics`` text, summed per
    ``"verb resource"`` (subresources and codes folded in), verbs in the dev-server's names."""
    out: dict[str, int] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_part, _, value = line.rpartition(" ")
        labels = dict(_LABEL.findall(labels_part))
        resource = labels.get("resource")
        if not resource:
            continue  # non-resource URLs: /metrics, /readyz, /version ...
        verb = _APISERVER_VERBS.get(labels.get("verb", ""), labels.get("verb", "").lower())
        key = f"{verb} {resource}"
        out[key] = out.get(key, 0) + int(float(value))
    return out


def rate_by_verb(before: Mapping[str, int], after: Mapping[str, int], seconds: float,
                 resource: str = "leases") -> dict[str, float]:
    """Requests per second by verb for one resource between two counter snapshots."""
    out: dict[str, float] = {}
    for key, count in after.items():
        verb, _, res = key.partition(" ")
        if res != resource:
            continue
        delta = count - before.get(key, 0)
        if delta:
            out[verb] = round(delta / seconds, 3)
    return out
