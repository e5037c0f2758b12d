"""``ShardManager``: the thin threaded shell around the :class:`~shardlease.core.reactor.Reactor`.

Every rule and every piece of ownership state lives in the reactor, which is deterministic and never
waits. This shell connects it to the world: a ``LeaseStore`` (the real ``LeaseClient``, or an in-memory
store in tests), the watch that feeds the cache, the handler runners, the health server and signals.

Threads of one manager:

* **control loop** (one): wakes on a cache change, a finished write, a handler exit, or the reactor's
  next deadline; feeds the events to the reactor, asks it for commands and carries them out. Only this
  thread touches the reactor, so it needs no locks beyond the hand-off queue.
* **watch** (one, ``cache.LeaseWatcher``): the only reader of the API in steady state.
* **writers** (``WriterPool``): one conditional request each; the pool grows only while writes wait
  (one or two threads against a fast server, more against a slow one, so 1,024 renewals never queue
  behind one slow request); the control loop keeps at most one write in flight per Lease.
* **handlers**: a thread per held shard for sync handlers, or tasks on one asyncio loop thread.
* **health** (optional): ``/metrics``, ``/healthz``, ``/readyz``.

Membership and the group's shard count
    A member is live while its member Lease is held (non-empty holder that matches the Lease name) and
    not expired by the client-go rule (observed change + ``leaseDurationSeconds``). The shards are
    assigned over every live member. The *group's* shard count and generation live on the group Lease
    (``<group>-group``) and every member runs them, whatever its own ``--shards``: a count change, by a
    rolling update or ``shardlease reshard``, switches the whole group at once, with no handler of the
    new generation starting before every handler of the old one has stopped (docs/resharding.md).

One process per identity
    Every process draws a random incarnation id and writes it on its member Lease and on every shard
    Lease it writes. A Lease is ours only if it names our identity *and* our incarnation; one with our
    identity and another incarnation belongs to a second process started with the same identity and
    must expire before we take it. The member Lease decides which of the two works: a process that
    finds it held and live under another incarnation refuses to take shards, hands back any it holds,
    fails readiness and logs (at most once per lease duration) an error naming the identity and the fix;
    it also marks the live member Lease (``shardlease.io/refused-duplicate``) so ``shardlease status``
    shows the conflict. Two processes starting at once race on a conditional write of the member Lease,
    so exactly one wins. A process restarted with the same name after a crash waits, like any peer, for
    its predecessor's Leases to expire; after a graceful exit they are gone and it starts at once.

Shutdown (``stop()``, SIGTERM, SIGINT)
    1. Delete our member Lease at once (conditional on its resourceVersion), so peers see us leave via
       their watch and plan the new assignment while we drain. Deleting rather than releasing keeps the
       group's Lease list from filling with dead members of past pods.
    2. Stop every handler; keep renewing each shard until its handler has returned, then release it
       (``holderIdentity: ""``, ``leaseDurationSeconds: 1``, transitions kept, like client-go) so the new
       owner takes it immediately.
    3. Handlers that have not returned after ``drain_timeout`` keep their Lease (no double processing);
       the manager gives up on them and exits, and their Leases expire normally once the process exits.
"""

from __future__ import annotations

import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shardlease.client.credentials import CredentialState, credential_state
from shardlease.client.leases import LeaseClient
from shardlease.client.watch import LeaseWatcher
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import Clock, SystemClock
from shardlease.core.elector import Timing
from shardlease.core.loadmeter import LoadMeter
from shardlease.core.loadplan import Rebalance
from shardlease.core.reactor import (
    CRASH_LOOP_ERRORS,
    CRASH_LOOP_WINDOW,
    Command,
    Event,
    ExtendHandler,
    HandlerExited,
    HandlerRaised,
    PublishOwned,
    Reactor,
    StartHandler,
    StopHandler,
    WatchShards,
    Write,
    WriteDone,
    WriteKind,
)
from shardlease.core.records import (
    LeaseRecord,
    group_lease_name,
    member_lease_name,
    members_and_group_selector,
    shard_lease_name,
    shard_selector,
)
from shardlease.errors import ApiError, HandlerSignatureError, RequestTimeout, UnexpectedApiError
from shardlease.runtime.handlers import HandlerRun, HandlerRunner, Shard, check_handler_signature
from shardlease.runtime.health import HealthServer
from shardlease.runtime.logs import get_logger, quiet_unauthorized
from shardlease.runtime.metrics import ManagerMetrics
from shardlease.runtime.objects import ObjectFeeds
from shardlease.runtime.signals import STOP_SIGNALS, take_early
from shardlease.runtime.writers import WriterPool

_CREDENTIALS_HINT = (
    "the token is re-read from its source before each retry; check the service account token file "
    "(/var/run/secrets/kubernetes.io/serviceaccount/token: automountServiceAccountToken, the pod's "
    "serviceAccountName, that the account exists) or, with a kubeconfig, its user's token, tokenFile or "
    "exec plugin (is it for this cluster, not expired or revoked?)")

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from shardlease.client.store import LeaseStore
    from shardlease.config import ShardConfig

__all__ = ["CRASH_LOOP_ERRORS", "CRASH_LOOP_WINDOW", "ShardManager"]

#: The control loop runs at most once per this many seconds; whatever arrives meanwhile (write answers,
#: cache changes, handler exits) is handled together in the next pass. Without it the loop ran once or
#: twice per renewal, each pass paying the member Lease, group Lease and membership checks plus two
#: thread wake-ups; with it, one replica holding 1,024 shards handles about five renewals per pass
#: (measured from the process's CPU counters: 0.15 -> 0.09 core together with a two-thread writer
#: pool; the steps are in docs/scaling.md). The price is at most this much latency per step of a
#: handoff, against a 100 ms target; stopping skips the wait.
_BATCH_WINDOW = 0.005


class ShardManager:
    """Hold this replica's share of a group's shards and run ``handler`` for each one held.

    ``run()`` blocks until stopped (SIGTERM/SIGINT handlers are installed when called on the main
    thread). ``start()`` returns at once; then ``wait()`` / ``join()``. ``stop()`` is thread-safe and
    idempotent. The manager is also a context manager (start on enter, stop and wait on exit).
    ``on_change(owned)`` receives the whole set of held shards whenever it changes, in order, from a
    notifier thread of its own (so a slow callback cannot delay renewals). ``store`` replaces the
    Kubernetes API with any ``LeaseStore`` (an in-memory one in tests); ``api_client`` supplies the
    ``kubernetes`` client to build the real one from.
    """

    def __init__(self, config: ShardConfig, handler: Callable[[Shard], Any], *,
                 on_change: Callable[[frozenset[int]], Any] | None = None,
                 api_client: ApiClient | None = None, clock: Clock | None = None,
                 store: LeaseStore | None = None) -> None:
        if not callable(handler):
            raise HandlerSignatureError(f"handler must be callable, got {handler!r}: pass a function that "
                                        "takes one argument, the Shard, e.g. def handle(shard): ...")
        check_handler_signature(handler)
        self.config = config
        self._handler = handler
        self._on_change = on_change
        self._api_client = api_client
        self._own_api_client = api_client is None and store is None
        self._clock: Clock = clock or SystemClock()
        self._timing = Timing.from_config(config)
        self.identity: str = config.identity
        #: Random per process: tells this process's Leases from those of another one with our identity.
        self.incarnation: str = secrets.token_hex(6)
        self.group: str = config.group
        self._shards: int = config.shards
        self._log = get_logger(self.identity, self.group)
        self.metrics = ManagerMetrics(self.group, self.identity)

        self._wake = threading.Event()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        # Nothing covered until the shard watch has listed what the reactor asks for (WatchShards).
        self._cache = LeaseCache(self._clock, on_change=self._wake.set, covered=frozenset())
        #: Each held shard's load meter and the generation it measures, fed by shard.report_load(); kept
        #: across handler restarts within a tenure, dropped when the shard is no longer held.
        self._meters: dict[int, tuple[int, LoadMeter]] = {}
        self._reactor = Reactor(
            group=self.group, namespace=config.namespace, identity=self.identity, incarnation=self.incarnation,
            shards=self._shards, timing=self._timing, cache=self._cache, clock=self._clock,
            load_factor=config.load_factor, log=self._log, metrics=self.metrics, targeted=True,
            capacity=config.capacity, load_of=self._load_of,
            rebalance=Rebalance(period=config.rebalance_period, threshold=config.rebalance_threshold,
                                epsilon=config.rebalance_epsilon, max_moves=config.rebalance_max_moves),
            weight_of=config.weight_of if config.weights is not None else None)
        self.metrics.set_oldest_renewal_source(lambda: self._reactor.oldest_renewal_age(self._clock.monotonic()))
        #: Handler runs by the reactor's run number, and the run number of each Shard object handed to a
        #: handler (registered before the run starts, so an instant exit is never lost). Only the control
        #: loop writes them; handler threads only read.
        self._runs: dict[int, HandlerRun] = {}
        self._run_numbers: dict[Shard, int] = {}
        self._abandoned: frozenset[int] = frozenset()

        self._lifecycle = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._tick_at: float | None = None
        self._crashed: BaseException | None = None

        self._store: LeaseStore | None = store
        self._writers: WriterPool[Write] | None = None
        self._runner: HandlerRunner | None = None
        self._watcher: LeaseWatcher | None = None
        self._shard_watcher: LeaseWatcher | None = None
        self._shard_store: LeaseStore | None = None
        self._watched_names: frozenset[str] = frozenset()
        self._thread: threading.Thread | None = None
        self._health: HealthServer | None = None
        self._notifier: ThreadPoolExecutor | None = None
        self._objects: ObjectFeeds | None = None
        self._credentials: CredentialState | None = None
        self._credentials_logged_at = float("-inf")

        # Writes are bounded by the renew deadline; a request that hangs is abandoned well before it.
        self._request_timeout = min(self._timing.renew_deadline, max(1.0, 2 * self._timing.retry_period))
        # The most writes in flight at once. The pool only grows while writes queue, so a fast server
        # keeps one or two threads; a slow one needs (renewals/s x latency) of them: on a loaded real
        # kube-apiserver 2,048 shards at RI 2 s met 112 ms per write, and a cap of 32 threads served
        # only 290 of the 1,024 renewals/s asked.
        self._workers = min(128, max(4, self._shards // 16 + 4))

    # ------------------------------------------------------------------ public API

    def start(self) -> ShardManager:
        """Connect, start the watch, the control loop and (if configured) the health server.

        Raises ``ConfigError`` (no usable kubeconfig) or ``OSError`` (metrics port taken) before any
        thread is started; the manager then counts as stopped.
        """
        with self._lifecycle:
            if self._started:
                return self
            self._started = True
            if self._stopping.is_set():
                # Stopped before it started (a SIGTERM during start-up): nothing was taken, nothing to do.
                self._done.set()
                return self
        try:
            if self._store is None and self._api_client is None:
                from shardlease.client.connect import load_api_client

                self._api_client = load_api_client(self.config.kubeconfig, self.config.context,
                                                   client_id=self.identity, pool_size=self._workers + 4)
            port = getattr(self.config, "metrics_port", None)
            if port is not None:
                self._health = HealthServer(self, port)
        except BaseException:
            self._done.set()
            raise
        if self._store is None:
            assert self._api_client is not None
            self._store = LeaseClient(self._api_client, self.config.namespace, pool_size=self._workers + 2)
        if self._api_client is not None:
            self._credentials = credential_state(self._api_client)
            self._credentials.add_listener(self._credentials_changed)
            quiet_unauthorized()
            self._objects = ObjectFeeds(self._api_client, logger=self._log, metrics=self.metrics)
        self._writers = WriterPool(self._do_write, max_threads=self._workers, name=f"shardlease-write-{self.identity}")
        self._runner = HandlerRunner(self._handler, on_exit=self._handler_exited, logger=self._log,
                                     clock=self._clock, name=f"shardlease-{self.identity}",
                                     on_error=self._handler_raised)
        read_timeout = max(2 * self._timing.retry_period, self._timing.lease_duration / 2)
        member_prefix = member_lease_name(self.group, "")
        group_name = group_lease_name(self.group)
        self._watcher = LeaseWatcher(self._store, self._cache, members_and_group_selector(self.group),
                                     read_timeout=read_timeout, logger=self._log, on_error=self.metrics.api_error,
                                     scope=lambda name: name.startswith(member_prefix) or name == group_name,
                                     name="watch-members")
        # The shard watch gets a connection pool of its own, so re-targeting it never cuts the member
        # watch (an injected store is shared: its close_watch ends both, and both resume).
        if self._api_client is not None and isinstance(self._store, LeaseClient):
            self._shard_store = LeaseClient(self._api_client, self.config.namespace, pool_size=2)
        self._shard_watcher = LeaseWatcher(self._shard_store or self._store, self._cache, None,
                                           read_timeout=read_timeout, logger=self._log,
                                           on_error=self.metrics.api_error, sync=False, name="watch-shards")
        self._watcher.start()
        self._shard_watcher.start()
        if self._health is not None:
            self._health.start()
        self._thread = threading.Thread(target=self._loop, name=f"shardlease-control-{self.identity}", daemon=True)
        self._thread.start()
        self._log.info("started: %d shards, namespace %s, lease %.1fs / renew deadline %.1fs / retry %.1fs",
                       self._shards, self.config.namespace, self._timing.lease_duration,
                       self._timing.renew_deadline, self._timing.retry_period)
        return self

    @property
    def health_port(self) -> int | None:
        """The port ``/metrics`` etc. are served on (useful with ``metrics_port=0``)."""
        return self._health.port if self._health is not None else None

    def stop(self) -> None:
        """Ask the manager to hand everything back and exit. Safe from any thread, any number of times."""
        if not self._stopping.is_set():
            self._stopping.set()
            self._log.info("stopping")
        self._wake.set()
        with self._lifecycle:
            if not self._started:
                self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the manager has fully stopped; True if it has."""
        return self._done.wait(timeout)

    join = wait

    def run(self) -> None:
        """Start, block until stopped, return. SIGTERM/SIGINT call ``stop()`` when run on the main thread.

        The handlers are installed before anything is started, and a stop signal recorded earlier by
        :func:`shardlease.runtime.signals.catch_early` (as ``shardlease run`` does from its first line) stops the
        manager before it starts: a replica terminated during start-up exits cleanly with nothing taken.
        Raises :class:`~shardlease.errors.ControlLoopCrashed` if the control loop failed for good.
        """
        restore: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                try:
                    restore[signum] = signal.signal(signum, self._on_signal)
                except (ValueError, OSError):
                    pass
            early = take_early()
            if early is not None:
                self._on_signal(early, None)
        try:
            self.start()
            while not self._done.wait(0.5):
                pass
        finally:
            for restored, previous in restore.items():
                try:
                    signal.signal(restored, previous)
                except (ValueError, OSError, TypeError):
                    pass
        if self._crashed is not None:
            from shardlease.errors import ControlLoopCrashed

            raise ControlLoopCrashed(f"shardlease control loop crashed: {self._crashed!r}") from self._crashed

    def owned_shards(self) -> frozenset[int]:
        return self._reactor.owned()

    def desired_shards(self) -> frozenset[int]:
        return self._reactor.desired()

    def members(self) -> frozenset[str]:
        return self._reactor.members()

    def alive(self) -> bool:
        """The control loop is ticking (it wakes at least once a second)."""
        tick = self._tick_at
        return (self._thread is not None and self._thread.is_alive() and tick is not None
                and self._clock.monotonic() - tick < max(5.0, 3 * self._timing.retry_period))

    def ready(self) -> bool:
        """Counted as capacity: see :meth:`health` for the checks and why each one matters."""
        return bool(self.health()["ready"])

    def _load_of(self, shard: int) -> float | None:
        """The smoothed load of a held shard, ``None`` before its handler reported one."""
        metered = self._meters.get(shard)
        return metered[1].value if metered is not None else None

    def health(self) -> dict[str, Any]:
        """Readiness and its reasons, as ``/readyz`` and ``/health`` report them (see ``Reactor.health``),
        and the load balance as this replica sees it (``load``: docs/load.md)."""
        health = self._reactor.health(self._clock.monotonic())
        try:
            health["load"] = self._reactor.load_status(self._clock.now())
        except RuntimeError:  # a dict replaced under us by the control loop: next time
            health["load"] = None
        credentials = self._credentials
        since = credentials.rejected_since if credentials is not None else None
        if since is not None:
            health["failures"].append(f"credentials rejected (HTTP 401) for {time.monotonic() - since:.0f}s: "
                                      f"{_CREDENTIALS_HINT}")
            health["ready"] = False
        if self._stopping.is_set() and "stopping" not in health["failures"]:
            health["failures"].insert(0, "stopping")
            health["ready"] = False
        return health

    def _credentials_changed(self, rejected: bool, error: ApiError | None) -> None:
        """Called from request threads on every 401 and once when credentials work again: counted every
        time, logged once per lease duration (every request of every thread fails alike meanwhile; the
        per-request lines that carry an ``Unauthorized`` are dropped, see ``quiet_unauthorized``)."""
        if not rejected:
            self._credentials_logged_at = float("-inf")
            self._log.warning("credentials accepted again; requests succeed")
            return
        self.metrics.credentials_rejected.inc()
        now = time.monotonic()
        if now - self._credentials_logged_at < self._timing.lease_duration:
            return
        self._credentials_logged_at = now
        credentials = self._credentials
        count = credentials.rejections if credentials is not None else 0
        self._log.error("the API server rejects our credentials (%s; %d rejected so far); not ready until a "
                        "request succeeds. %s", str(error), count, _CREDENTIALS_HINT)

    def crashing_shards(self) -> list[int]:
        """Held shards whose handler keeps raising (see :meth:`health`)."""
        return self._reactor.crashing_shards(self._clock.monotonic())

    def stuck_shards(self) -> frozenset[int]:
        return self._reactor.stuck_shards()

    def abandoned_shards(self) -> frozenset[int]:
        """Shards whose handler had still not returned when the manager exited (empty until then).

        Their Leases were left held, to expire normally: releasing them would let another replica
        start while this handler may still be acting. ``shardlease run`` exits with status 3 for this.
        """
        return self._abandoned

    def __enter__(self) -> ShardManager:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.wait()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._log.info("received %s", signal.Signals(signum).name)
        self.stop()

    # ------------------------------------------------------------------ control loop

    def _loop(self) -> None:
        failures = 0
        reactor = self._reactor
        try:
            last = float("-inf")
            while True:
                now = self._clock.monotonic()
                self._wake.wait(max(0.0, reactor.next_wakeup(now) - now))
                now = self._clock.monotonic()
                if now - last < _BATCH_WINDOW and not self._stopping.is_set():
                    self._stopping.wait(_BATCH_WINDOW - (now - last))
                    now = self._clock.monotonic()
                self._wake.clear()
                last = now
                self._tick_at = now
                try:
                    if self._stopping.is_set():
                        reactor.request_stop(now)
                    while True:
                        try:
                            event = self._events.get_nowait()
                        except queue.Empty:
                            break
                        reactor.handle(event, now)
                        if isinstance(event, HandlerExited):
                            done = self._runs.pop(event.run, None)
                            if done is not None:
                                self._run_numbers.pop(done.shard, None)
                    self._execute(reactor.step(now))
                    if self._writers is not None:
                        self._writers.poke()
                    if reactor.finished:
                        break
                    failures = 0
                except Exception as exc:  # a bug must not take the replica down silently
                    failures += 1
                    self._log.exception("control loop iteration failed")
                    if failures > 50:
                        self._crashed = exc
                        break
                    self._stopping.wait(min(1.0, 0.05 * failures))
        finally:
            self._teardown()

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Write):
                self._submit(command)
            elif isinstance(command, StartHandler):
                assert self._runner is not None
                metered = self._meters.get(command.shard)
                if metered is None or metered[0] != command.generation:
                    metered = (command.generation, LoadMeter(self.config.load_half_life))
                    self._meters[command.shard] = metered
                shard = Shard(command.shard, command.count, command.token, identity=self.identity, group=self.group,
                              clock=self._clock, valid_until=command.valid_until, objects=self._objects,
                              generation=command.generation, load=metered[1])
                self._run_numbers[shard] = command.run
                self._runs[command.run] = self._runner.start(shard)
            elif isinstance(command, StopHandler):
                run = self._runs.get(command.run)
                if run is not None and self._runner is not None:
                    self._runner.stop(run)
            elif isinstance(command, ExtendHandler):
                run = self._runs.get(command.run)
                if run is not None:
                    run.shard._extend(command.valid_until)
            elif isinstance(command, PublishOwned):
                for index in [i for i in self._meters if i not in command.owned]:
                    del self._meters[index]  # a new tenure starts measuring afresh
                self._publish(command.owned)
            elif isinstance(command, WatchShards):
                self._watch_shards(command.shards, command.total)

    def _watch_shards(self, shards: frozenset[int], total: int) -> None:
        """Point the shard watch at ``shards``; past half the group, at all of them (one simple selector,
        and the saving would be under 2x)."""
        assert self._shard_watcher is not None
        everything = 2 * len(shards) > total
        wanted = range(total) if everything else shards
        names = frozenset(shard_lease_name(self.group, i) for i in wanted)
        forget, self._watched_names = self._watched_names - names, names
        if not shards:
            self._shard_watcher.retarget(None, scope=None, covered=frozenset(), forget=forget)
            return
        self._shard_watcher.retarget(shard_selector(self.group, None if everything else shards),
                                     scope=names.__contains__, covered=None if everything else shards,
                                     forget=forget)

    # ------------------------------------------------------------------ events from other threads

    def _handler_exited(self, run: HandlerRun) -> None:
        number = self._run_numbers.get(run.shard)
        if number is not None:
            self._events.put(HandlerExited(run.shard.id, number))
            self._wake.set()

    def _handler_raised(self, shard: Shard) -> None:
        self.metrics.handler_errors.inc()
        number = self._run_numbers.get(shard)
        if number is not None:
            self._events.put(HandlerRaised(shard.id, number))
            self._wake.set()

    # ------------------------------------------------------------------ writes

    def _submit(self, write: Write) -> None:
        assert self._writers is not None
        if not self._writers.submit(write):  # closed during teardown
            self._events.put(WriteDone(write, self._clock.monotonic(),
                                       error=UnexpectedApiError("manager is shutting down")))

    def _do_write(self, write: Write) -> None:
        store = self._store
        assert store is not None
        started = self._clock.monotonic()
        timeout = self._request_timeout
        obj: dict[str, Any] | None = None
        error: ApiError | None = None
        try:
            if write.deadline is not None:
                remaining = write.deadline - started
                if remaining <= 0.01:
                    raise RequestTimeout("no time left before the renew deadline")
                timeout = min(timeout, remaining)
            call = write.kind.store_call
            if call == "create":
                obj = store.create(write.body or {}, timeout=timeout)
            elif call == "replace":
                obj = store.replace(write.name, write.body or {}, timeout=timeout)
            elif call == "get":
                obj = store.get(write.name, timeout=timeout)
            else:
                store.delete(write.name, resource_version=write.sent_rv or None, timeout=timeout)
        except ApiError as err:
            error = err
        except Exception as exc:  # defensive: a bug in a request must surface as a failed write
            error = UnexpectedApiError(f"{type(exc).__name__}: {exc}")
        record = None
        if obj is not None and write.kind is WriteKind.RENEW:
            # Into the cache now, not when the control loop gets to it: the watch echo of this renewal
            # arrives about as fast as the answer, and finding its version cached lets the watch drop
            # it unread instead of decoding it and waking the loop for a change that is ours.
            record = LeaseRecord.from_object(obj)
            if record is not None:
                self._cache.apply(record)
        self._events.put(WriteDone(write, started, obj, error, self._clock.monotonic(), record))
        self._wake.set()

    # ------------------------------------------------------------------ owned set, shutdown

    def _publish(self, owned: frozenset[int]) -> None:
        if self._on_change is None:
            return
        # On its own thread, in order: a slow callback must never delay renewals or the deadline timer.
        if self._notifier is None:
            self._notifier = ThreadPoolExecutor(1, thread_name_prefix=f"shardlease-notify-{self.identity}")
        self._notifier.submit(self._notify, self._on_change, owned)

    def _notify(self, callback: Callable[[frozenset[int]], Any], owned: frozenset[int]) -> None:
        try:
            callback(owned)
        except Exception:
            self._log.exception("on_change callback failed")

    def _teardown(self) -> None:
        stuck = sorted(self._reactor.running_handlers())
        self._abandoned = frozenset(stuck)
        if stuck:
            self._log.error("exiting with handlers that did not return: shards %s", stuck)
        if self._watcher is not None:
            self._watcher.stop(timeout=1.0)
        if self._shard_watcher is not None:
            self._shard_watcher.stop(timeout=1.0)
        if self._shard_store is not None:
            self._shard_store.close()
        if self._objects is not None:
            self._objects.close()
        if self._writers is not None:
            self._writers.close()
        if self._runner is not None and not stuck:
            self._runner.close()
        if self._health is not None:
            try:
                self._health.stop()
            except Exception:
                pass
        if self._credentials is not None:
            self._credentials.remove_listener(self._credentials_changed)
        if self._store is not None:
            self._store.close()
        if self._own_api_client and self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:
                pass
        final = self._reactor.drop_all()
        if final is not None:
            self._publish(final.owned)
        if self._notifier is not None:
            self._notifier.shutdown(wait=False)  # queued notifications still run, in order
        self._log.info("stopped")
        self._done.set()
