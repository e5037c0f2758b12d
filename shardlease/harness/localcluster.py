"""A whole shardlease group on one machine: a dev-server plus N replica processes.

Used by the integration tests, ``shardlease demo``, the benchmark and the chaos suite, so that each of
them drives real ``python -m shardlease run`` processes the same way::

    from shardlease.harness.localcluster import LocalCluster, Timings

    with LocalCluster(group="orders", shards=12, timings=Timings(lease_duration=2)) as cluster:
        cluster.start(replicas=3)
        cluster.wait_working(timeout=30)          # every shard held as assigned, handlers running
        victim = cluster.replicas[0]
        victim.kill()                             # SIGKILL (also: terminate, pause, resume, send)
        cluster.wait_for(lambda s: not s.held_by(victim.identity), 10, what="failover")
        cluster.faults.partition("replica-1")     # dev-server fault injection, per replica identity
        cluster.stop()                            # SIGTERM all, SIGKILL stragglers, stop the server
        cluster.check_journal()                   # no overlapping work, fencing tokens increase

The pieces: :class:`Timings` (the replicas' timing flags), :class:`Replica` (one process: signals,
wait, log), :class:`Snapshot` (the group's Leases at one moment, with the same model ``shardlease
status`` prints), :class:`LocalCluster` (start, add, observe, wait, check, stop) and
:class:`RemoteFaults` (fault injection when the dev-server runs as a separate process).

Why processes and not threads: the point is to exercise what a real replica does -- its own event
loop, its signal handling, its exit -- and to be able to SIGKILL or SIGSTOP one of them.

Nothing is left behind. Every replica runs in its own process group (so a signal reaches any helper it
spawned); :meth:`LocalCluster.stop` (also called by the context manager, on exceptions too) asks them
to exit with SIGTERM and SIGKILLs whatever is still there after a grace period; an ``atexit`` hook
does the same for clusters never stopped; and on Linux each replica asks the kernel to SIGKILL it if
its parent dies (``PR_SET_PDEATHSIG``), which covers a parent that was itself SIGKILLed. That kernel
hook fires when the *thread* that started the replica exits, so start replicas from a thread that
lives as long as the cluster (normally the main thread), or pass ``die_with_parent=False``.

With ``devserver="real"`` the replicas talk to a real etcd + kube-apiserver instead
(:class:`~shardlease.controlplane.RealControlPlane`, binaries from ``assets`` or
:func:`~shardlease.controlplane.find_assets`), so one test can be parametrised over both servers;
:attr:`LocalCluster.faults` is ``None`` there (put toxiproxy in front of it for network faults).

Replica output (stdout and stderr) goes to ``<work_dir>/logs/<identity>.log``; the journal of the
default handler (:mod:`shardlease.harness.journal`) goes to ``<work_dir>/journal``. Failed waits raise
:class:`ClusterTimeout` with the last snapshot and the tail of every replica's log in the message.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardlease.client.leases import list_group_leases
from shardlease.core.groupview import GroupView
from shardlease.core.records import LeaseRecord, group_lease_name, group_selector
from shardlease.core.resharding import GroupState

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

    from shardlease.harness.journal import Entry, Overlap

__all__ = [
    "ClusterTimeout",
    "LocalCluster",
    "RemoteFaults",
    "Replica",
    "Snapshot",
    "Timings",
    "child_processes",
    "runtime_missing",
]

DEFAULT_HANDLER = "shardlease.harness.journal:handle"
OBSERVER_CLIENT_ID = "shardlease-localcluster"

# Run by every replica before the real CLI: die with the parent (Linux), then hand over to
# ``python -m shardlease``. ``-c`` keeps the working directory on sys.path, as ``-m`` would.
_BOOTSTRAP = """\
import os, signal, sys
parent = int(os.environ.pop("_SHARDLEASE_LOCALCLUSTER_PARENT", "0"))
if parent:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent:  # the parent died before the hook was set
        os._exit(70)
import runpy
sys.argv = ["shardlease", *sys.argv[1:]]
runpy.run_module("shardlease", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Timings:
    """The replicas' timing flags; ``None`` leaves a flag to the runtime's default.

    The defaults are scaled down from production (15 s / 10 s / 2 s) so tests finish quickly while
    keeping the ratios that matter (renew deadline well below lease duration, retry well below both).
    """

    lease_duration: float = 2.0
    renew_deadline: float = 1.2
    retry_period: float = 0.3
    handoff_grace: float | None = None
    drain_timeout: float | None = None

    def cli_args(self) -> list[str]:
        pairs = (
            ("--lease-duration", self.lease_duration),
            ("--renew-deadline", self.renew_deadline),
            ("--retry-period", self.retry_period),
            ("--handoff-grace", self.handoff_grace),
            ("--drain-timeout", self.drain_timeout),
        )
        return [arg for flag, value in pairs if value is not None for arg in (flag, f"{value:g}")]


class ClusterTimeout(AssertionError):
    """A wait ran out. An ``AssertionError`` so that pytest shows the diagnostics as the failure."""


class RemoteFaults:
    """The fault knobs of a dev-server running as a child process, through its admin endpoint
    ``/_shardlease/faults`` (same method names as the in-process ``DevServer.faults``)."""

    def __init__(self, url: str) -> None:
        self.endpoint = url.rstrip("/") + "/_shardlease/faults"

    def _post(self, command: dict[str, Any]) -> dict[str, Any]:
        import urllib.request

        request = urllib.request.Request(
            self.endpoint, data=json.dumps(command).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Shardlease-Client": OBSERVER_CLIENT_ID})
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def snapshot(self) -> dict[str, Any]:
        return self._post({})

    def partition(self, client: str, mode: str = "error") -> None:
        self._post({"partition": {client: mode}})

    def heal(self, client: str | None = None) -> None:
        self._post({"heal": True if client is None else [client]})

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        self._post({"latency": seconds, "jitter": jitter})

    def set_errors(self, fraction: float, code: int = 503, retry_after: int = 1) -> None:
        self._post({"errors": {"fraction": fraction, "code": code, "retry_after": retry_after}})

    def freeze_watches(self) -> None:
        self._post({"freeze_watches": True})

    def unfreeze_watches(self) -> None:
        self._post({"freeze_watches": False})

    def cut_watches(self, graceful: bool = False) -> None:
        self._post({"cut_watches": "graceful" if graceful else True})

    def clear(self) -> None:
        self._post({"clear": True})


# --------------------------------------------------------------------------------------------------
# Replicas
# --------------------------------------------------------------------------------------------------


class Replica:
    """One replica process. Signals go to its whole process group."""

    def __init__(self, identity: str, index: int, argv: Sequence[str], env: Mapping[str, str],
                 log_path: Path, cwd: str) -> None:
        self.identity = identity
        self.index = index
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab", buffering=0)
        self.started_at = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise
        self.paused = False
        #: (monotonic time, signal name) of every signal sent, for test reports.
        self.signals: list[tuple[float, str]] = []

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<Replica {self.identity} pid={self.pid} {state}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        """True until the process has exited (a paused process is still running)."""
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def send(self, sig: int) -> float:
        """Send ``sig`` to the replica's process group; returns the monotonic time it was sent."""
        sent = time.monotonic()
        self.signals.append((sent, signal.Signals(sig).name))
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass  # already gone (the group dies with its last member)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig == signal.SIGCONT:
            self.paused = False
        return sent

    def terminate(self) -> float:
        """SIGTERM: the graceful path (handlers stopped, shards released, member Lease removed)."""
        sent = self.send(signal.SIGTERM)
        if self.paused:  # a stopped process would not act on SIGTERM until continued
            self.send(signal.SIGCONT)
        return sent

    def kill(self) -> float:
        """SIGKILL: the crash path; its Leases are left to expire."""
        return self.send(signal.SIGKILL)

    def pause(self) -> float:
        """SIGSTOP: a frozen process (a long GC pause, a stopped VM) that still holds its Leases."""
        return self.send(signal.SIGSTOP)

    def resume(self) -> float:
        return self.send(signal.SIGCONT)

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; its exit code, or ``None`` if it is still running."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _reap(self, grace: float) -> None:
        """Make sure the process and its group are gone: SIGTERM, wait ``grace``, then SIGKILL."""
        if self.running:
            self.terminate()
            self.wait(grace)
        # SIGKILL the group even if the main process exited: a helper it spawned may linger.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.wait(5)
        self._log.close()


# --------------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------------


def _group_state(group: str, items: Iterable[Mapping[str, Any]]) -> GroupState | None:
    name = group_lease_name(group)
    for obj in items:
        record = LeaseRecord.from_object(obj)
        if record is not None and record.name == name:
            return GroupState.from_record(record)
    return None


@dataclass(frozen=True)
class Snapshot:
    """The group's Leases at one moment, as seen through the API.

    ``view`` is the same model ``shardlease status`` prints (members with liveness, shard rows with
    holder, desired holder and flags); the helpers below answer the questions tests ask most.
    ``taken`` is the local ``time.monotonic()`` right after the list returned, comparable with
    journal timestamps (see :mod:`shardlease.harness.journal` for the single-machine assumption).
    """

    taken: float
    view: GroupView

    @property
    def shards(self) -> int:
        return self.view.shards

    def holders(self) -> dict[int, str | None]:
        """Holder per shard ``0..S-1``; ``None`` for an absent or released Lease."""
        return {row.shard: row.holder for row in self.view.rows}

    def held_by(self, identity: str) -> list[int]:
        return [row.shard for row in self.view.rows if row.holder == identity]

    def load(self) -> dict[str, int]:
        """Shards held per holder (holders that hold nothing are absent)."""
        counts: dict[str, int] = {}
        for row in self.view.rows:
            if row.holder:
                counts[row.holder] = counts.get(row.holder, 0) + 1
        return counts

    def unowned(self) -> list[int]:
        return [row.shard for row in self.view.rows if not row.holder]

    def transitions(self) -> dict[int, int | None]:
        return {row.shard: row.transitions for row in self.view.rows}

    def tokens(self) -> dict[int, int | None]:
        """Each shard's fencing token as its holder has it (``shard.token``)."""
        return {row.shard: row.token for row in self.view.rows}

    def members(self) -> list[str]:
        """Identities with a member Lease, live or not."""
        return [m.identity for m in self.view.members]

    def live_members(self) -> list[str]:
        return [m.identity for m in self.view.members if m.live]

    def all_held(self, by: Iterable[str] | None = None) -> bool:
        """Every shard held, and (if ``by`` is given) only by those identities."""
        allowed = None if by is None else set(by)
        return all(row.holder and (allowed is None or row.holder in allowed) for row in self.view.rows)

    def render(self) -> str:
        return self.view.render_text()


# --------------------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------------------

# Strong references on purpose: a cluster dropped without stop() must still be stopped at exit.
_LIVE_CLUSTERS: set[LocalCluster] = set()


def _stop_all_at_exit() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        try:
            cluster.stop(grace=2.0)
        except Exception:  # pragma: no cover - best effort while the interpreter exits
            pass


atexit.register(_stop_all_at_exit)


class LocalCluster:
    """A dev-server and the replicas of one group. See the module docstring for an example.

    Arguments:
        handler: ``MODULE:FUNC`` passed to ``shardlease run`` (default: the journaling handler).
        group, shards, namespace: the group under test.
        timings: the replicas' timing flags.
        work_dir: where logs, the kubeconfig and the journal go; a fresh temporary directory if
            ``None`` (kept after :meth:`stop`, so failures can be inspected).
        env: extra environment for every replica (e.g. ``SHARDLEASE_JOURNAL_WORK``).
        extra_args: extra ``shardlease run`` arguments for every replica.
        devserver: ``"thread"`` runs :class:`~shardlease.devserver.DevServer` in this process (fault
            injection available as :attr:`faults`); ``"process"`` runs ``python -m shardlease
            dev-server`` as a child (no fault injection from here, but survives a busy test process);
            ``"real"`` starts a real etcd + kube-apiserver (:attr:`control_plane`; no fault
            injection, a namespace other than ``default`` is created at start).
        assets: with ``devserver="real"``, the directory of the kube-apiserver and etcd binaries
            (default: :func:`~shardlease.controlplane.find_assets`: ``$KUBEBUILDER_ASSETS``, then
            the cache of ``scripts/build-kube-assets``).
        control_plane: with ``devserver="real"``, an already started
            :class:`~shardlease.controlplane.RealControlPlane` to use instead of starting one (starting
            one takes seconds, so a test module shares one between clusters, each with its own group
            name). It belongs to the caller: :meth:`stop` leaves it running.
        replica_kubeconfig: the kubeconfig the *replicas* use, when it is not the observer's (e.g. one
            that goes through a fault proxy, while snapshots read the server directly): a path, or a
            function from a replica's identity to a path (replicas split between API servers). It
            can also be set after :meth:`start`, before replicas are added.
        faults: enable the dev-server's fault injection.
        feature_gates: kube-apiserver feature gates for whichever server is started, e.g.
            ``{"ShardedListAndWatch": True}`` (KEP-5866 ``shardSelector``): ``DevServer(feature_gates=)``,
            ``dev-server --feature-gates``, or ``RealControlPlane(feature_gates=)``. With a shared
            ``control_plane`` they must equal the gates it was started with.
        die_with_parent: have the kernel SIGKILL replicas if this process dies (Linux only; see the
            module docstring for the thread caveat).
        cwd: working directory of the replicas (default: this process's), which ``python -c`` puts
            on ``sys.path`` so handler modules next to the tests import.
    """

    def __init__(
        self,
        *,
        handler: str = DEFAULT_HANDLER,
        group: str = "lc",
        shards: int = 12,
        namespace: str = "default",
        timings: Timings = Timings(),
        work_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        devserver: str = "thread",
        assets: str | os.PathLike[str] | None = None,
        control_plane: Any = None,
        replica_kubeconfig: str | os.PathLike[str] | Callable[[str], str | os.PathLike[str]] | None = None,
        faults: bool = True,
        feature_gates: Mapping[str, bool] | None = None,
        die_with_parent: bool = True,
        cwd: str | None = None,
        python: str = sys.executable,
    ) -> None:
        if devserver not in ("thread", "process", "real"):
            raise ValueError(f"devserver must be 'thread', 'process' or 'real', got {devserver!r}")
        if assets is not None and devserver != "real":
            raise ValueError(f"assets= is for devserver='real' (the kube-apiserver binaries), "
                             f"but devserver={devserver!r}")
        if control_plane is not None and devserver != "real":
            raise ValueError(f"control_plane= is for devserver='real' (a started RealControlPlane), "
                             f"but devserver={devserver!r}")
        if control_plane is not None and assets is not None:
            raise ValueError("pass either control_plane= (a started RealControlPlane) or assets= "
                             "(binaries to start one), not both")
        if (control_plane is not None and feature_gates is not None
                and dict(feature_gates) != dict(control_plane.feature_gates)):
            raise ValueError(f"feature_gates={dict(feature_gates)!r} differ from the shared control_plane's "
                             f"{dict(control_plane.feature_gates)!r}; start that plane with these gates, or "
                             f"leave feature_gates out")
        self.feature_gates = dict(feature_gates or {})
        self._shared_plane = control_plane
        self.replica_kubeconfig = replica_kubeconfig
        self.assets = assets
        self.handler = handler
        self.group = group
        self.shard_count = shards
        self.namespace = namespace
        self.timings = timings
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="shardlease-lc-"))
        self.log_dir = self.work_dir / "logs"
        self.journal_dir = self.work_dir / "journal"
        self.kubeconfig = self.work_dir / "kubeconfig"
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.devserver_mode = devserver
        self.faults_enabled = faults
        self.die_with_parent = die_with_parent
        self.cwd = cwd or os.getcwd()
        self.python = python
        #: Every replica ever started, in start order (stopped ones stay, for their logs).
        self.replicas: list[Replica] = []
        self.server: Any = None  # DevServer when devserver == "thread", RealControlPlane if "real"
        self._server_process: subprocess.Popen[bytes] | None = None
        self._server_log: Any = None
        self._server_pid: int | None = None  # kept after stop() for leftover_processes()
        self._control_plane_pids: set[int] = set()  # likewise, for devserver == "real"
        self._api: ApiClient | None = None
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self.url = ""

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        # After a failure, do not wait long for replicas that may be the reason for it.
        self.stop(grace=3.0 if exc_type is not None else 10.0)

    def start(self, replicas: int = 0) -> LocalCluster:
        """Start the dev-server (once) and ``replicas`` replicas; returns ``self`` for chaining."""
        if self._stopped:
            raise RuntimeError("a stopped LocalCluster cannot be restarted; make a new one")
        for directory in (self.work_dir, self.log_dir, self.journal_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not self._started:
            _LIVE_CLUSTERS.add(self)
            self._started = True
            try:
                self._start_devserver()
            except BaseException:
                self.stop()
                raise
        for _ in range(replicas):
            self.add_replica()
        return self

    def _start_devserver(self) -> None:
        if self.devserver_mode == "real":
            self._start_real_control_plane()
            return
        if self.devserver_mode == "thread":
            from shardlease.devserver import DevServer

            self.server = DevServer(host="127.0.0.1", port=0, faults=self.faults_enabled,
                                    feature_gates=self.feature_gates)
            self.server.__enter__()
            self.url = self.server.url
            self.server.write_kubeconfig(self.kubeconfig)
            return
        argv = [self.python, "-c", _BOOTSTRAP, "dev-server", "--port", "0",
                "--kubeconfig", str(self.kubeconfig)]
        if self.faults_enabled:
            argv.append("--faults")
        if self.feature_gates:
            argv += ["--feature-gates", ",".join(f"{name}={str(on).lower()}"
                                                 for name, on in sorted(self.feature_gates.items()))]
        self.kubeconfig.unlink(missing_ok=True)  # never mistake an old run's file for this one's
        self._server_log = open(self.log_dir / "dev-server.log", "ab", buffering=0)
        self._server_process = subprocess.Popen(
            argv, env=self._child_env(), cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=self._server_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._server_pid = self._server_process.pid
        self.url = self._await_kubeconfig(timeout=30)

    def _start_real_control_plane(self) -> None:
        from shardlease.controlplane import ControlPlaneError, RealControlPlane, find_assets

        if self._shared_plane is not None:
            if not self._shared_plane.running:
                raise ControlPlaneError(
                    f"LocalCluster(control_plane=...): {self._shared_plane!r} is not running; start() it "
                    f"first (or pass assets= to have the cluster start its own)")
            self.server = self._shared_plane
        else:
            assets = find_assets(self.assets)
            if assets is None:
                raise ControlPlaneError(
                    "LocalCluster(devserver='real') found no kube-apiserver/etcd binaries: pass "
                    "assets=DIR, set KUBEBUILDER_ASSETS, or build them with scripts/build-kube-assets")
            self.server = RealControlPlane(assets, work_dir=self.work_dir / "controlplane",
                                           feature_gates=self.feature_gates)
            self.server.start()
        self.url = self.server.url
        self.server.write_kubeconfig(self.kubeconfig)
        if self.namespace != "default":  # kube-apiserver refuses writes into a missing namespace
            from kubernetes.client import CoreV1Api, V1Namespace, V1ObjectMeta
            from kubernetes.client.exceptions import ApiException

            try:
                CoreV1Api(self.api_client()).create_namespace(
                    V1Namespace(metadata=V1ObjectMeta(name=self.namespace)))
            except ApiException as exc:
                if exc.status != 409:
                    raise

    @property
    def control_plane(self) -> Any:
        """The :class:`~shardlease.controlplane.RealControlPlane` with ``devserver="real"`` (logs,
        ``restart_apiserver()``), else ``None``."""
        return self.server if self.devserver_mode == "real" else None

    def _await_kubeconfig(self, timeout: float) -> str:
        """Wait until the child dev-server wrote its kubeconfig and answers; return its URL."""
        import yaml

        deadline = time.monotonic() + timeout
        assert self._server_process is not None
        while time.monotonic() < deadline:
            if self._server_process.poll() is not None:
                raise RuntimeError(
                    f"dev-server exited with {self._server_process.returncode}:\n"
                    + (self.log_dir / "dev-server.log").read_text(errors="replace")[-3000:])
            try:
                config = yaml.safe_load(self.kubeconfig.read_text())
                url = str(config["clusters"][0]["cluster"]["server"])
            except (OSError, TypeError, KeyError, IndexError, yaml.YAMLError):
                time.sleep(0.05)
                continue
            if self._answers(url):
                return url
            time.sleep(0.05)
        raise RuntimeError(f"dev-server did not come up within {timeout} s (log: {self.log_dir})")

    @staticmethod
    def _answers(url: str) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url + "/version", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered, even if not with 200
        except OSError:
            return False

    @property
    def faults(self) -> Any:
        """The dev-server's fault injector: ``DevServer.faults`` in ``"thread"`` mode, a
        :class:`RemoteFaults` with the same methods in ``"process"`` mode (``None`` there without
        ``faults=True``, since the admin endpoint is off).

        Partition a replica with ``cluster.faults.partition(replica.identity)``: replicas identify
        themselves by identity (``X-Shardlease-Client``), the observer as ``OBSERVER_CLIENT_ID``.
        """
        if self.server is not None:
            return self.server.faults
        if self.faults_enabled and self.url:
            return RemoteFaults(self.url)
        return None

    @property
    def server_pid(self) -> int | None:
        """The dev-server's process id in ``"process"`` mode; ``None`` in ``"thread"`` mode (it runs
        in this process)."""
        return self._server_pid

    def request_counts(self) -> dict[tuple[str, str], int]:
        """The dev-server's request counters, ``{(verb, resource): count}``, in either mode (in
        ``"process"`` mode through ``/_shardlease/requests``, which needs ``faults=True``)."""
        if self.devserver_mode == "real":
            raise RuntimeError("request_counts() needs the dev-server's counters; a real "
                               "kube-apiserver has none (read its /metrics instead)")
        if self.server is not None:
            return dict(self.server.request_counts())
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_shardlease/requests", timeout=10) as response:
            body = json.loads(response.read())
        return {(r["verb"], r["resource"]): int(r["count"]) for r in body.get("requests", [])}

    def stop(self, grace: float = 10.0) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after ``grace`` s) and the dev-server.

        Safe to call more than once and from ``atexit``. Replicas are terminated together so a
        cluster of N stops in one grace period, not N.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            running = [r for r in self.replicas if r.running]
            for replica in running:
                replica.terminate()
            deadline = time.monotonic() + grace
            for replica in running:
                replica.wait(max(0.0, deadline - time.monotonic()))
            for replica in self.replicas:
                replica._reap(0.0)
        finally:
            self._stop_devserver()
            _LIVE_CLUSTERS.discard(self)

    def _stop_devserver(self) -> None:
        if self._api is not None:
            try:
                self._api.close()
            except Exception:
                pass
            self._api = None
        if self.server is not None and self._shared_plane is not None:
            self.server = None  # the caller's control plane: left running, its processes not ours
        if self.server is not None:
            if self.devserver_mode == "real":
                self._control_plane_pids.update(
                    pid for pid in (self.server.apiserver_pid, self.server.etcd_pid) if pid)
            try:
                self.server.__exit__(None, None, None)
            finally:
                self.server = None
        if self._server_process is not None:
            try:
                os.killpg(self._server_process.pid, signal.SIGTERM)
                self._server_process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self._server_process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._server_process.wait(5)
            self._server_process = None
        if self._server_log is not None:
            self._server_log.close()
            self._server_log = None

    # ---------------------------------------------------------------- replicas

    def base_env(self) -> dict[str, str]:
        """The environment for any process that should talk to this cluster (a replica, ``shardlease
        status``, kubectl): this one's, plus ``KUBECONFIG`` and a ``PYTHONPATH`` that finds this
        shardlease even when it is not installed."""
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["KUBECONFIG"] = str(self.kubeconfig)
        # A `shardlease dev-server` started from here (the "process" server, or a test's own) must
        # be the embedded one, whatever the test run chose for its real-server fixture.
        env.pop("KUBEBUILDER_ASSETS", None)
        return env

    def _child_env(self) -> dict[str, str]:
        """:meth:`base_env` plus the bootstrap's die-with-parent request."""
        env = self.base_env()
        if self.die_with_parent:
            env["_SHARDLEASE_LOCALCLUSTER_PARENT"] = str(os.getpid())
        return env

    def kubeconfig_of(self, identity: str) -> Path:
        """The kubeconfig a replica with ``identity`` is given (see ``replica_kubeconfig``)."""
        chosen = self.replica_kubeconfig
        if chosen is None:
            return self.kubeconfig
        return Path(chosen(identity) if callable(chosen) else chosen)

    def replica_argv(self, identity: str, extra_args: Sequence[str] = ()) -> list[str]:
        """The command line of one replica (exposed so reports can show exactly what ran)."""
        return [
            "run", self.handler, "--group", self.group, "--shards", str(self.shard_count),
            "--namespace", self.namespace, "--identity", identity,
            "--kubeconfig", str(self.kubeconfig_of(identity)), *self.timings.cli_args(),
            *self.extra_args, *extra_args,
        ]

    def add_replica(
        self,
        identity: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        argv: Sequence[str] | None = None,
    ) -> Replica:
        """Start one more replica and return it (it may take a moment to join).

        ``argv`` replaces the ``shardlease`` arguments entirely (e.g. ``["dev-server", ...]`` or a
        different sub-command); the process still gets the bootstrap, the environment and a log.
        """
        if not self._started or self._stopped:
            raise RuntimeError("start() the cluster before adding replicas")
        index = len(self.replicas)
        identity = identity or f"replica-{index}"
        env_vars = self._child_env()
        env_vars.update({
            "SHARDLEASE_JOURNAL_DIR": str(self.journal_dir),
            "SHARDLEASE_JOURNAL_IDENTITY": identity,
        })
        env_vars.update(self.env)
        env_vars.update(env or {})
        args = list(argv) if argv is not None else self.replica_argv(identity, extra_args)
        log_path = self.log_dir / f"{identity}.log"
        restarts = sum(1 for r in self.replicas if r.identity == identity)
        if restarts:
            log_path = self.log_dir / f"{identity}.{restarts + 1}.log"
        replica = Replica(identity, index, [self.python, "-c", _BOOTSTRAP, *args], env_vars,
                          log_path, self.cwd)
        self.replicas.append(replica)
        return replica

    def replica(self, identity: str) -> Replica:
        """The most recently started replica with that identity."""
        for replica in reversed(self.replicas):
            if replica.identity == identity:
                return replica
        raise KeyError(identity)

    def send(self, identity: str, sig: int) -> float:
        """Send ``sig`` to the (latest) replica with ``identity``; see :class:`Replica` for the
        named shortcuts (``terminate``, ``kill``, ``pause``, ``resume``)."""
        return self.replica(identity).send(sig)

    def running(self) -> list[Replica]:
        """Replicas whose process has not exited (paused ones included)."""
        return [r for r in self.replicas if r.running]

    def running_identities(self) -> list[str]:
        return [r.identity for r in self.running()]

    # ---------------------------------------------------------------- observing

    def api_client(self) -> ApiClient:
        """A Kubernetes client for the dev-server, identified as the observer (never partitioned
        unless a test partitions ``OBSERVER_CLIENT_ID`` on purpose)."""
        if self._api is None:
            from shardlease.client.connect import load_api_client

            self._api = load_api_client(
                kubeconfig=str(self.kubeconfig), user_agent=OBSERVER_CLIENT_ID,
                client_id=OBSERVER_CLIENT_ID)
        return self._api

    def leases(self) -> list[dict[str, Any]]:
        """The group's Leases as plain dicts."""
        items, _ = list_group_leases(self.api_client(), self.namespace, group_selector(self.group))
        return items

    def snapshot(self) -> Snapshot:
        """Read the group's Leases now. The shard rows follow the group's running count (its group
        Lease) once there is one, else the count the replicas were started with."""
        items = self.leases()
        taken = time.monotonic()
        state = _group_state(self.group, items)
        view = GroupView.from_objects(
            self.group, self.namespace, items, _dt.datetime.now(_dt.timezone.utc),
            shards=state.count if state is not None else self.shard_count)
        return Snapshot(taken=taken, view=view)

    def group_state(self) -> GroupState | None:
        """The group's count and generation as its group Lease says now (``None``: not created yet)."""
        return _group_state(self.group, self.leases())

    def desired(self, members: Iterable[str] | None = None) -> dict[int, str]:
        """Who should own each shard if ``members`` (default: the running replicas) are live, under
        the group's running count, by the count assignment (under a load snapshot the replicas' owners
        are the ``desired`` column of :meth:`snapshot`'s view, which :meth:`wait_settled` follows)."""
        from shardlease.core.assignment import assign

        chosen = self.running_identities() if members is None else list(members)
        state = self.group_state()
        return assign(self.group, state.count if state is not None else self.shard_count, chosen)

    def wait_for(
        self,
        condition: Callable[[Snapshot], object],
        timeout: float,
        *,
        what: str = "condition",
        interval: float = 0.05,
    ) -> Snapshot:
        """Poll snapshots until ``condition(snapshot)`` is truthy; return that snapshot.

        On timeout raise :class:`ClusterTimeout` naming ``what``, with the last snapshot and the
        replicas' log tails. A failing read (e.g. the dev-server under injected latency) is retried.
        """
        deadline = time.monotonic() + timeout
        last: Snapshot | None = None
        error: Exception | None = None
        while True:
            try:
                last = self.snapshot()
                error = None
                if condition(last):
                    return last
            except Exception as exc:  # a read error is a reason to retry, not to fail
                error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        detail = f"last read failed: {error!r}\n" if error else ""
        raise ClusterTimeout(
            f"timed out after {timeout:g} s waiting for {what}\n{detail}"
            + self.diagnostics(last))

    def wait_settled(self, timeout: float = 30.0, members: Iterable[str] | None = None) -> Snapshot:
        """Wait until every shard is held by its desired owner among ``members`` (default: the
        running replicas) and every one of them has a live member Lease."""
        return self._wait_placed(timeout, members, handlers=False)

    def wait_working(self, timeout: float = 30.0, members: Iterable[str] | None = None) -> Snapshot:
        """:meth:`wait_settled`, and also until the journal shows exactly the holder's handler (in
        the holder's current process) running on every shard: the Lease is written before the
        handler starts, so a settled snapshot can come a moment before the last handler begins.
        Needs the journaling handler."""
        return self._wait_placed(timeout, members, handlers=True)

    def _wait_placed(self, timeout: float, members: Iterable[str] | None, handlers: bool) -> Snapshot:
        from shardlease.harness.journal import running_handlers

        expected = sorted(self.running_identities() if members is None else members)
        pids = {r.identity: r.pid for r in self.running()}

        def placed(snap: Snapshot) -> bool:
            # The desired owners as the replicas compute them over the live members (who are then the
            # expected ones): by count, or from the group's load snapshot (docs/load.md).
            desired = {row.shard: row.desired for row in snap.view.rows}
            if sorted(snap.live_members()) != expected or snap.holders() != desired:
                return False
            want_running = {shard: {(holder, pids.get(holder or "", -1))} for shard, holder in desired.items()}
            if not handlers:
                return True
            # Handlers of processes that are gone (SIGKILL writes no stop) do not count.
            running = {shard: {w for w in who if w[1] in pids.values()}
                       for shard, who in running_handlers(self.journal()).items()}
            return {shard: who for shard, who in running.items() if who} == want_running

        what = f"all shards held as assigned over {expected}" + (
            " with their handlers running" if handlers else "")
        return self.wait_for(placed, timeout, what=what)

    # ---------------------------------------------------------------- journal and reports

    def journal(self) -> list[Entry]:
        """Every entry the journaling handler wrote so far (see :mod:`shardlease.harness.journal`)."""
        from shardlease.harness.journal import load_journal

        return load_journal(self.journal_dir)

    def check_journal(self, *, require_work: bool = True,
                      excuse: Callable[[Overlap], bool] | None = None) -> list[Entry]:
        """Assert mutual exclusion and increasing fencing tokens over the whole journal so far.

        Returns the entries so callers can measure more. ``require_work`` guards against a vacuous
        pass (e.g. handlers that never ran because the journal directory was not passed on);
        ``excuse`` is passed to :func:`~shardlease.harness.journal.assert_no_overlaps`.
        """
        from shardlease.harness.journal import assert_no_overlaps, assert_tokens_increase

        entries = self.journal()
        if require_work and not any(e.kind == "work" for e in entries):
            raise AssertionError("the journal holds no work at all\n" + self.diagnostics())
        assert_no_overlaps(entries, excuse)
        assert_tokens_increase(entries)
        return entries

    def diagnostics(self, snapshot: Snapshot | None = None, log_lines: int = 25) -> str:
        """A failure report: the snapshot (read now if not given) and every replica's log tail."""
        parts = [f"work dir: {self.work_dir}"]
        if snapshot is None:
            try:
                snapshot = self.snapshot()
            except Exception as exc:
                parts.append(f"(could not read the Leases: {exc!r})")
        if snapshot is not None:
            parts.append(snapshot.render())
        for replica in self.replicas:
            state = "running" if replica.running else f"exited with {replica.returncode}"
            if replica.paused:
                state += " (paused)"
            parts.append(f"--- {replica.identity} pid {replica.pid} {state}; {replica.log_path} ---")
            parts.append(replica.log_tail(log_lines) or "(empty log)")
        return "\n".join(parts)

    def leftover_processes(self) -> list[int]:
        """Live processes still in a process group this cluster created (should be ``[]`` after
        :meth:`stop`). Finds helpers that outlived their replica too, which a child list would not."""
        groups = {r.pid for r in self.replicas}
        if self._server_pid is not None:
            groups.add(self._server_pid)
        groups.update(self._control_plane_pids)
        return [pid for pid, pgid in _process_groups().items() if pgid in groups]

    def describe(self) -> dict[str, Any]:
        """Machine-readable facts for reports (benchmarks store this next to their figures)."""
        return {
            "group": self.group, "shards": self.shard_count, "namespace": self.namespace,
            "server": self.devserver_mode, "url": self.url, "work_dir": str(self.work_dir),
            "timings": {k: v for k, v in vars(self.timings).items() if v is not None},
            "replicas": [
                {"identity": r.identity, "pid": r.pid, "returncode": r.returncode,
                 "signals": r.signals, "log": str(r.log_path)} for r in self.replicas
            ],
        }

    def write_report(self, name: str = "cluster.json") -> Path:
        path = self.work_dir / name
        path.write_text(json.dumps(self.describe(), indent=2))
        return path


def runtime_missing() -> str | None:
    """Why replica processes cannot run here yet, or ``None`` when they can.

    For test suites to skip (rather than fail) while the runtime or the CLI wiring is incomplete.
    """
    import importlib.util

    for module in ("shardlease.commands.run", "shardlease.runtime.manager", "shardlease.client.connect",
                   "shardlease.devserver"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not available"
    return None


def child_processes(pid: int | None = None) -> list[int]:
    """Pids of the live (non-zombie) children of ``pid`` (default: this process), from /proc.

    Tests use it to prove a cluster left nothing behind. Linux only; elsewhere returns ``[]``.
    """
    pid = os.getpid() if pid is None else pid
    children: list[int] = []
    try:
        task_dir = Path(f"/proc/{pid}/task")
        for task in task_dir.iterdir():
            text = (task / "children").read_text().split()
            children.extend(int(c) for c in text)
    except OSError:
        return []
    alive = []
    for child in children:
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        # The state is the field after the parenthesised command name.
        if stat[stat.rfind(")") + 2:].split()[0] != "Z":
            alive.append(child)
    return alive


def _process_groups() -> dict[int, int]:
    """pid -> process group of every live (non-zombie) process, from /proc (``{}`` elsewhere)."""
    groups: dict[int, int] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return groups
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields and fields[0] != "Z":
            groups[int(entry.name)] = int(fields[2])  # state, ppid, pgrp
    return groups
