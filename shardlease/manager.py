"""``ShardManager``: wires the watch cache, the assignment, the per-shard elector and the handlers.

Threads of one manager:

* **control loop** (one): wakes on a cache change, a finished write, a handler exit, or the next
  deadline it computed; recomputes membership and the assignment when member Leases change or expire;
  asks ``elector.decide`` what to do for every shard that may have changed; starts writes and handlers.
  All manager state is owned by this thread, so it needs no locks beyond the hand-off queue.
* **watch** (one, ``cache.LeaseWatcher``): the only reader of the API in steady state.
* **writers** (a small pool): one conditional request each, so 1,024 renewals never queue behind one
  slow request; the control loop keeps at most one write in flight per Lease.
* **handlers**: a thread per held shard for sync handlers, or tasks on one asyncio loop thread.
* **health** (optional): ``/metrics``, ``/healthz``, ``/readyz``.

Membership and the group's shard count
    A member is live while its member Lease is held (non-empty holder that matches the Lease name) and
    not expired by the client-go rule (observed change + ``leaseDurationSeconds``). The *group's* shard
    count is the count declared by the oldest live member (by ``creationTimestamp``, then name) that
    declares a readable count. Members declaring another count are left out of the ring; if that is us,
    we take no shards and log an error naming both counts. Such a replica still renews its member Lease
    and reports ready, so a rolling update that changes the count is not blocked forever.

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

import heapq
import logging
import queue
import random
import secrets
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .api import ApiError, LeaseClient
from .assignment import assign
from .bodies import Writer
from .cache import LeaseCache, LeaseWatcher
from .clock import Clock, SystemClock
from .elector import (
    Action,
    HandlerPhase,
    ShardView,
    Timing,
    decide,
    held_retry_at,
    is_ours,
    member_expiry,
    rv_of,
)
from .handlers import HandlerRun, HandlerRunner, Shard, check_handler_signature
from .logs import get_logger
from .membership import compute_membership
from .metrics import ManagerMetrics
from .records import (
    ANNOTATION_REFUSED,
    LeaseRecord,
    format_microtime,
    group_selector,
    member_lease_name,
    shard_lease_name,
)
from .signals import STOP_SIGNALS, take_early

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from .config import ShardConfig

__all__ = ["ShardManager"]

_MEMBER = -1  # index used for the member Lease in write results
_GC = -2  # index used for deleting dead members' Leases
_FLAG = -3  # index used for marking a live member Lease of our identity as refused-duplicate

#: A handler counts as crash-looping after this many raises in one run, while the last was recent.
CRASH_LOOP_ERRORS = 3
CRASH_LOOP_WINDOW = 90.0  # seconds; the runner's restart back-off caps at 30 s


@dataclass(slots=True)
class _ShardState:
    index: int
    name: str
    held: bool = False
    renew_started: float | None = None
    token: int | None = None
    run: HandlerRun | None = None
    phase: HandlerPhase = HandlerPhase.IDLE
    in_flight: bool = False
    retry_at: float = 0.0
    failures: int = 0
    conflict_rv: str | None = None
    conflict_at: float | None = None
    hold_until: float = 0.0
    fallback_streak: int = 0
    fallback_owner: str | None = None
    leaving_since: float | None = None
    stuck: bool = False
    scheduled: float = float("inf")
    own_rv: str | None = None
    handler_wanted: bool = False
    loss_streak: int = 0
    acquired_at: float = 0.0
    errors: int = 0
    last_error_at: float = float("-inf")


@dataclass(slots=True)
class _MemberState:
    in_flight: bool = False
    renew_started: float | None = None
    retry_at: float = 0.0
    failures: int = 0
    deleted: bool = False
    delete_tries: int = 0


@dataclass(slots=True)
class _WriteResult:
    kind: str
    index: int
    started: float
    sent_rv: str
    obj: dict[str, Any] | None = None
    error: ApiError | None = None
    fallback: bool = False
    name: str | None = None  # target Lease when it is neither a shard nor our member (garbage collection)


class ShardManager:
    """Hold this replica's share of a group's shards and run ``handler`` for each one held.

    ``run()`` blocks until stopped (SIGTERM/SIGINT handlers are installed when called on the main
    thread). ``start()`` returns at once; then ``wait()`` / ``join()``. ``stop()`` is thread-safe and
    idempotent. The manager is also a context manager (start on enter, stop and wait on exit).
    ``on_change(owned)`` receives the whole set of held shards whenever it changes, in order, from a
    notifier thread of its own (so a slow callback cannot delay renewals).
    """

    def __init__(self, config: ShardConfig, handler: Callable[[Shard], Any], *,
                 on_change: Callable[[frozenset[int]], Any] | None = None,
                 api_client: ApiClient | None = None, clock: Clock | None = None) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        check_handler_signature(handler)
        self.config = config
        self._handler = handler
        self._on_change = on_change
        self._api_client = api_client
        self._own_api_client = api_client is None
        self._clock: Clock = clock or SystemClock()
        self._timing = Timing.from_config(config)
        self.identity: str = config.identity
        #: Random per process: tells this process's Leases from those of another one with our identity.
        self.incarnation: str = secrets.token_hex(6)
        self.group: str = config.group
        self._shards: int = config.shards
        self._log = get_logger(self.identity, self.group)
        self.metrics = ManagerMetrics(self.group, self.identity)
        self.metrics.set_oldest_renewal_source(self._oldest_renewal_age)

        self._states = [_ShardState(i, shard_lease_name(self.group, i)) for i in range(self._shards)]
        self._index_of = {st.name: st.index for st in self._states}
        self._member_name = member_lease_name(self.group, self.identity)
        self._member_prefix = member_lease_name(self.group, "")
        #: How long a member Lease must have been expired before the oldest member deletes it.
        self._member_gc_after = 5 * self._timing.lease_duration
        self._gc_pending: set[str] = set()
        self._member = _MemberState()
        self._writer = Writer(self.group, config.namespace, self.identity, self.incarnation,
                              self._timing.lease_duration_seconds, self._shards)
        #: Incarnation of another live process holding our identity's member Lease, if any.
        self._conflict: str | None = None
        self._conflict_logged_at = float("-inf")
        self._conflict_flagged_at = float("-inf")
        self._refused_seen: str | None = None

        self._wake = threading.Event()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._cache = LeaseCache(self._clock, on_change=self._wake.set)
        self._timers: list[tuple[float, int, int]] = []
        self._timer_seq = 0
        self._dirty: set[int] = set()

        self._members: frozenset[str] = frozenset()
        self._assignment: dict[int, str] = {}
        self._group_count: int | None = None
        self._count_ok = True
        self._member_recheck_at = float("inf")
        self._member_due = float("inf")
        self._owned: frozenset[int] = frozenset()
        self._held: set[int] = set()
        self._owned_dirty = False

        self._lifecycle = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._stop_at: float | None = None
        self._done = threading.Event()
        self._tick_at: float | None = None
        self._crashed: BaseException | None = None

        self._client: LeaseClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._runner: HandlerRunner | None = None
        self._watcher: LeaseWatcher | None = None
        self._thread: threading.Thread | None = None
        self._health: Any = None
        self._notifier: ThreadPoolExecutor | None = None

        # Writes are bounded by the renew deadline; a request that hangs is abandoned well before it.
        self._request_timeout = min(self._timing.renew_deadline, max(1.0, 2 * self._timing.retry_period))
        self._workers = min(32, max(4, self._shards // 32 + 4))

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
            if self._api_client is None:
                from .kube import load_api_client

                self._api_client = load_api_client(self.config.kubeconfig, self.config.context,
                                                   client_id=self.identity, pool_size=self._workers + 4)
            port = getattr(self.config, "metrics_port", None)
            if port is not None:
                from .health import HealthServer

                self._health = HealthServer(self, port)
        except BaseException:
            self._done.set()
            raise
        self._client = LeaseClient(self._api_client, self.config.namespace, pool_size=self._workers + 2)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=f"shardlease-write-{self.identity}")
        self._runner = HandlerRunner(self._handler, on_exit=self._handler_exited, logger=self._log,
                                     clock=self._clock, name=f"shardlease-{self.identity}",
                                     on_error=self._handler_raised)
        read_timeout = max(2 * self._timing.retry_period, self._timing.lease_duration / 2)
        self._watcher = LeaseWatcher(self._client, self._cache, group_selector(self.group),
                                     read_timeout=read_timeout, logger=self._log, on_error=self.metrics.api_error)
        self._watcher.start()
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
        :func:`shardlease.signals.catch_early` (as ``shardlease run`` does from its first line) stops the
        manager before it starts: a replica terminated during start-up exits cleanly with nothing taken.
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
            for signum, previous in restore.items():
                try:
                    signal.signal(signum, previous)
                except (ValueError, OSError, TypeError):
                    pass
        if self._crashed is not None:
            raise RuntimeError("shardlease control loop crashed") from self._crashed

    def owned_shards(self) -> frozenset[int]:
        return self._owned

    def desired_shards(self) -> frozenset[int]:
        return frozenset(i for i, owner in self._assignment.items() if owner == self.identity)

    def members(self) -> frozenset[str]:
        return self._members

    def alive(self) -> bool:
        """The control loop is ticking (it wakes at least once a second)."""
        tick = self._tick_at
        return (self._thread is not None and self._thread.is_alive() and tick is not None
                and self._clock.monotonic() - tick < max(5.0, 3 * self._timing.retry_period))

    def ready(self) -> bool:
        """Counted as capacity: see :meth:`health` for the checks and why each one matters."""
        return bool(self.health()["ready"])

    def health(self) -> dict[str, Any]:
        """Readiness and its reasons, as ``/readyz`` and ``/health`` report them (docs/operations.md).

        Not ready: not started or stopping; the member Lease not held and renewed; another live process
        owns our identity; a handler stuck past the drain timeout; a handler crash-looping (it raised
        ``CRASH_LOOP_ERRORS`` times in its current run, the last within ``CRASH_LOOP_WINDOW``). A shard
        count that differs from the group's is reported but keeps the pod ready: during a rolling update
        that changes the count, the new pods must count as ready or the rollout would never finish.
        """
        now = self._clock.monotonic()
        started = self._member.renew_started
        member_ok = started is not None and now < started + self._timing.renew_deadline
        stuck = sorted(st.index for st in self._states if st.stuck)
        crashing = self.crashing_shards()
        failures: list[str] = []
        if self._stopping.is_set():
            failures.append("stopping")
        elif not self._cache.synced.is_set():
            failures.append("watch not synced yet")
        if self._conflict is not None:
            failures.append(f"identity conflict: another live process (incarnation {self._conflict}) holds the "
                            f"member Lease of identity {self.identity!r}; give every replica a unique "
                            f"--identity / POD_NAME")
        elif not member_ok and not self._stopping.is_set():
            failures.append("member Lease not held")
        if stuck:
            failures.append(f"handlers stuck past drain_timeout: shards {stuck}")
        if crashing:
            failures.append(f"handlers crash-looping: shards {crashing}")
        mismatch = None if self._count_ok or self._group_count is None else \
            {"configured": self._shards, "group": self._group_count}
        return {"ready": not failures, "failures": failures, "identity": self.identity,
                "incarnation": self.incarnation, "identity_conflict": self._conflict,
                "member_lease_held": member_ok, "count_mismatch": mismatch, "stuck_shards": stuck,
                "crashing_shards": crashing, "shards_held": sorted(self._owned)}

    def crashing_shards(self) -> list[int]:
        """Held shards whose handler keeps raising (see :meth:`health`)."""
        now = self._clock.monotonic()
        return sorted(st.index for st in self._states if st.run is not None and st.errors >= CRASH_LOOP_ERRORS
                      and now - st.last_error_at < CRASH_LOOP_WINDOW)

    def stuck_shards(self) -> frozenset[int]:
        return frozenset(st.index for st in self._states if st.stuck)

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
        try:
            while True:
                now = self._clock.monotonic()
                next_at = min(self._timers[0][0] if self._timers else now + 1.0, now + 1.0,
                              self._member_recheck_at, self._member_due)
                if self._stopping.is_set():
                    next_at = min(next_at, now + 0.1)
                self._wake.wait(max(0.0, next_at - now))
                self._wake.clear()
                now = self._clock.monotonic()
                self._tick_at = now
                try:
                    if self._iterate(now):
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

    def _iterate(self, now: float) -> bool:
        """One pass; True when shutdown is complete."""
        if self._stopping.is_set() and self._stop_at is None:
            self._stop_at = now
        self._drain_events(now)
        if not self._cache.synced.is_set():
            return self._stopping.is_set()
        if self._synced_at == float("inf"):
            self._synced_at = now  # records observed up to now came from the initial list
        self._member_step(now)
        changed = self._cache.take_changed()
        self._update_membership(now, changed)
        for name in changed:
            index = self._index_of.get(name)
            if index is not None:
                self._dirty.add(index)
        while self._timers and self._timers[0][0] <= now:
            at, _seq, index = heapq.heappop(self._timers)
            if self._states[index].scheduled == at:
                self._states[index].scheduled = float("inf")
                self._dirty.add(index)
        if self._stopping.is_set():
            self._dirty.update(range(self._shards))
        dirty, self._dirty = self._dirty, set()
        for index in sorted(dirty):
            self._step(self._states[index], now)
        self._publish_owned()
        return self._stopping.is_set() and self._shutdown_complete(now)

    def _schedule(self, st: _ShardState, at: float | None) -> None:
        if st.phase is HandlerPhase.STOPPING and not st.stuck and st.run is not None \
                and st.run.stop_requested_at is not None:
            drain_at = st.run.stop_requested_at + self._timing.drain_timeout
            at = drain_at if at is None else min(at, drain_at)
        if at is None or at >= st.scheduled:
            return
        st.scheduled = at
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, st.index))

    # ------------------------------------------------------------------ events

    def _handler_exited(self, run: HandlerRun) -> None:
        self._events.put(("exit", run))
        self._wake.set()

    def _handler_raised(self, shard: Shard) -> None:
        self.metrics.handler_errors.inc()
        self._events.put(("error", shard))
        self._wake.set()

    def _drain_events(self, now: float) -> None:
        while True:
            try:
                kind, payload = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "write":
                self._on_write(payload, now)
            elif kind == "exit":
                self._on_exit(payload, now)
            elif kind == "error":
                st = self._states[payload.id]
                if st.run is not None and st.run.shard is payload:
                    st.errors += 1
                    st.last_error_at = now

    def _on_exit(self, run: HandlerRun, now: float) -> None:
        st = self._states[run.shard.id]
        if st.run is not run:
            return
        st.run = None
        st.phase = HandlerPhase.IDLE
        if st.stuck:
            self._log.warning("stuck handler finally returned", extra={"shard": st.index})
            st.stuck = False
            self.metrics.stuck_handlers.set(sum(1 for s in self._states if s.stuck))
        elif run.stop_requested_at is None:
            st.handler_wanted = False  # it finished by itself: do not start it again in this tenure
            self._log.info("handler returned on its own; the shard stays held", extra={"shard": st.index})
        self._dirty.add(st.index)

    # ------------------------------------------------------------------ membership

    def _update_membership(self, now: float, changed: set[str]) -> None:
        if now < self._member_recheck_at and not any(n.startswith(self._member_prefix) for n in changed) \
                and self._members_initialised:
            return
        self._members_initialised = True
        snapshot = self._cache.snapshot()
        membership = compute_membership(
            self.group, ((cached.record, cached.observed) for cached in snapshot.values()), now, self._timing,
            wall_now=self._clock.now(), seen_change_after=self._synced_at, collect_after=self._member_gc_after,
            exclude_dead=self._member_name)
        live, dead = membership.live, membership.dead
        self._member_recheck_at = membership.recheck_at
        if live and live[0].identity == self.identity and not self._stopping.is_set():
            self._member_recheck_at = min([self._member_recheck_at,
                                           *(at for at, _ in dead if at > now)])
            self._collect_dead_members([record for at, record in dead if at <= now])
        group_count, eligible = membership.group_count, membership.eligible
        count_ok = group_count is None or group_count == self._shards
        if count_ok != self._count_ok or group_count != self._group_count:
            if not count_ok:
                assert group_count is not None
                oldest = membership.oldest
                assert oldest is not None
                self._log.error("%s", self._count_mismatch_message(group_count, oldest.identity))
            elif not self._count_ok:
                self._log.info("shard count now matches the group's (%d); taking shards again", self._shards)
        self._count_ok = count_ok
        self._group_count = group_count
        self.metrics.count_mismatch.set(0 if count_ok else 1)
        if eligible != self._members:
            self._members = eligible
            self._assignment = assign(self.group, self._shards, eligible, self.config.load_factor) if eligible else {}
            mine = sum(1 for owner in self._assignment.values() if owner == self.identity)
            self._log.info("members now %s; %d of %d shards desired here", sorted(eligible), mine, self._shards)
            self.metrics.members.set(len(eligible))
            self.metrics.shards_desired.set(mine)
            self._dirty.update(range(self._shards))

    def _count_mismatch_message(self, group_count: int, oldest: str) -> str:
        """What is wrong and how to fix it, including the clean-up after a count went down."""
        message = (
            f"shard count mismatch: this replica is configured with {self._shards} shards but group {self.group!r} "
            f"uses {group_count} (declared by its oldest live member {oldest}); this replica takes no shards "
            f"until the counts agree. Fix: give every replica of the group the same --shards / SHARDLEASE_SHARDS "
            f"and roll them all; the group's count is its oldest live member's, so it changes once the last "
            f"replica with the old count has stopped.")
        if self._shards < group_count:
            last = group_count - 1
            message += (
                f" If {self._shards} is the new count, shards {self._shards}..{last} will no longer exist: once no "
                f"replica runs with {group_count} shards, delete their Leases with `kubectl delete lease -n "
                f"{self.config.namespace} {self.group}-shard-{{{self._shards}..{last}}}` (bash/zsh brace "
                f"expansion; no replica with {self._shards} shards uses them).")
        return message

    _members_initialised = False
    #: Monotonic time of the first completed list: a record observed no later has not been seen to change.
    _synced_at = float("inf")

    def _collect_dead_members(self, records: list[LeaseRecord]) -> None:
        """Delete member Leases of replicas that died without cleaning up (SIGKILL, node loss).

        A graceful exit deletes its own member Lease; a crash cannot, and in a Deployment every
        crashed pod has a new name, so without this the group's Lease list would grow forever. Only
        the oldest live member collects (one writer, not N racing), only after the Lease has been
        expired for ``_member_gc_after`` (5 lease durations, far beyond any pause a live replica could
        recover from), and each delete is conditional on the resourceVersion we saw, so a replica
        that comes back and renews in the meantime keeps its Lease.
        """
        for record in records:
            if record.name in self._gc_pending:
                continue
            self._gc_pending.add(record.name)
            self._log.info("deleting member Lease %s, expired for over %.0f s", record.name,
                           self._member_gc_after)
            self._submit(_WriteResult("member_gc", _GC, 0.0, record.resource_version, name=record.name), None)

    def _eligible(self) -> bool:
        return (self._count_ok and self._conflict is None and self.identity in self._members
                and not self._stopping.is_set())

    # ------------------------------------------------------------------ member Lease

    def _member_step(self, now: float) -> None:
        ms = self._member
        if ms.in_flight or ms.deleted:
            return
        cached = self._cache.get(self._member_name)
        if self._stopping.is_set():
            if cached is None or ms.delete_tries >= 5 \
                    or not is_ours(cached.record, self.identity, self.incarnation):
                ms.deleted = True  # nothing of ours to delete (never another process's member Lease)
                return
            if now < ms.retry_at:
                return
            ms.in_flight = True
            ms.delete_tries += 1
            self._submit(_WriteResult("member_delete", _MEMBER, 0.0, cached.record.resource_version), None)
            return
        record = cached.record if cached is not None else None
        if record is not None and self._other_process_holds(record, cached.observed, now):
            return
        if record is not None and is_ours(record, self.identity, self.incarnation):
            refused = record.annotations.get(ANNOTATION_REFUSED)
            if refused and refused != self._refused_seen:
                self._refused_seen = refused
                self._log.warning("another process with identity %r tried to join and was refused (%s); "
                                  "give every replica a unique --identity / POD_NAME", self.identity, refused)
        due = max(ms.retry_at, (ms.renew_started + self._timing.retry_period) if ms.renew_started else now)
        if now < due:
            self._member_due = due
            return
        self._member_due = float("inf")
        held = record is not None and is_ours(record, self.identity, self.incarnation) \
            and ms.renew_started is not None
        body = self._writer.member(record, self._clock.now(), held=held, problems=self._problems())
        kind = "member_create" if record is None else "member_renew"
        ms.in_flight = True
        # Bound the request by the member's own renew deadline while it is still ahead of us.
        deadline = ms.renew_started + self._timing.renew_deadline if ms.renew_started is not None else None
        self._submit(_WriteResult(kind, _MEMBER, 0.0, rv_of(record)), body,
                     deadline=deadline if deadline is not None and deadline > now + 0.05 else None)

    def _other_process_holds(self, record: LeaseRecord, observed: float, now: float) -> bool:
        """Refuse to take part while another live process holds our identity's member Lease.

        True (and everything arranged: readiness fails, held shards are handed back, an error is logged
        and the live Lease marked at most once per lease duration) while the member Lease names our
        identity with another incarnation and has not expired. Once it expires or is deleted, the next
        conditional write of the member Lease decides who goes on, so two processes never both win.
        """
        other = record.incarnation
        if record.holder != self.identity or other is None or other == self.incarnation:
            if self._conflict is not None:
                self._log.info("no other live process holds identity %r any more; taking part again",
                               self.identity)
                self._conflict = None
                self.metrics.identity_conflict.set(0)
                self._dirty.update(range(self._shards))
            return False
        expires = member_expiry(record, observed, self._timing, wall_now=self._clock.now(),
                                seen_change=observed > self._synced_at)
        if expires <= now:
            return False
        if self._conflict != other:
            self._conflict = other
            self._conflict_logged_at = float("-inf")
            self._member.renew_started = None  # if this was ours, it is not any more
            self.metrics.identity_conflict.set(1)
            self._dirty.update(range(self._shards))
        if now - self._conflict_logged_at >= self._timing.lease_duration:
            self._conflict_logged_at = now
            self._log.error(
                "another live process (incarnation %s) holds the member Lease %s of identity %r: refusing to "
                "take shards until it is gone; every replica needs a unique identity (set --identity or "
                "SHARDLEASE_IDENTITY per replica, or POD_NAME from the downward API)",
                other, self._member_name, self.identity)
        if now - self._conflict_flagged_at >= self._timing.lease_duration and not self._stopping.is_set():
            self._conflict_flagged_at = now
            wall = format_microtime(self._clock.now())
            body = self._writer.mark(record, {ANNOTATION_REFUSED: f"{self.incarnation} {wall}"})
            self._submit(_WriteResult("member_flag", _FLAG, 0.0, record.resource_version,
                                      name=self._member_name), body)
        self._member_due = min(expires, now + self._timing.lease_duration)
        return True

    def _problems(self) -> str:
        """This replica's health summary for its member Lease (``records.ANNOTATION_PROBLEMS``)."""
        parts = []
        crashing = self.crashing_shards()
        if crashing:
            parts.append("crashing=" + ",".join(map(str, crashing)))
        stuck = [st.index for st in self._states if st.stuck]
        if stuck:
            parts.append("stuck=" + ",".join(map(str, stuck)))
        if not self._count_ok and self._group_count is not None:
            parts.append(f"count-mismatch={self._shards}/{self._group_count}")
        return ";".join(parts)

    def _on_member_result(self, res: _WriteResult, now: float) -> None:
        ms = self._member
        ms.in_flight = False
        if res.error is None:
            ms.failures = 0
            ms.retry_at = 0.0
            if res.kind == "member_delete":
                ms.deleted = True
                self._cache.delete(self._member_name, "")
                self._log.info("member Lease deleted")
                return
            if res.kind == "member_refresh" and res.obj is None:
                self._cache.delete(self._member_name, "")  # gone: the next step creates it again
                return
            record = LeaseRecord.from_object(res.obj or {})
            if record is not None:
                self._cache.apply(record)
            if res.kind == "member_refresh":
                return
            if ms.renew_started is None:
                self._log.info("member Lease %s held", self._member_name)
            ms.renew_started = res.started
            return
        err = res.error
        self.metrics.api_error(err.kind)
        if res.kind == "member_delete":
            if err.kind == "not_found":
                ms.deleted = True
                self._cache.delete(self._member_name, "")
                return
            ms.retry_at = now + 0.1
            if err.kind in ("conflict", "already_exists"):
                self._refresh_member()
            return
        if err.kind in ("conflict", "already_exists"):
            if ms.renew_started is not None:
                self._log.warning("member Lease %s was changed by someone else; is another replica running "
                                  "with identity %r?", self._member_name, self.identity)
            self._refresh_member()
            return
        ms.failures += 1
        # Like a held shard: keep trying about every retry period, the member Lease must not lapse.
        ms.retry_at = held_retry_at(now, ms.renew_started, self._backoff(ms.failures, err, held=True), self._timing)
        self._log.warning("member Lease %s failed: %s", res.kind.replace("member_", ""), err)

    def _refresh_member(self) -> None:
        self._member.in_flight = True
        self._submit(_WriteResult("member_refresh", _MEMBER, 0.0, ""), None)

    # ------------------------------------------------------------------ per-shard steps

    def _view(self, st: _ShardState, now: float) -> ShardView:
        cached = self._cache.get(st.name)
        record = cached.record if cached is not None else None
        observed = cached.observed if cached is not None else self._cache.absent_since(st.name)
        if st.conflict_rv is not None and rv_of(record) != st.conflict_rv:
            st.conflict_rv = None
            st.conflict_at = None
        return ShardView(
            identity=self.identity, record=record, observed=observed, desired=self._assignment.get(st.index),
            eligible=self._eligible(), shutting_down=self._stopping.is_set(), held=st.held,
            renew_started=st.renew_started, handler=st.phase, in_flight=st.in_flight, retry_at=st.retry_at,
            conflict_rv=st.conflict_rv, conflict_at=st.conflict_at, hold_until=st.hold_until,
            own_rv=st.own_rv if st.held else None, handler_wanted=st.handler_wanted,
            incarnation=self.incarnation, identity_conflict=self._conflict is not None)

    def _step(self, st: _ShardState, now: float) -> None:
        for _ in range(4):
            view = self._view(st, now)
            decision = decide(view, now, self._timing)
            action = decision.action
            if action is Action.WAIT:
                self._check_stuck(st, now)
                self._schedule(st, decision.at)
                return
            if action is Action.LOST:
                self._lose(st, decision.reason)
                continue
            if action is Action.STOP_HANDLER:
                self._stop_handler(st, now, decision.reason)
                continue
            if action is Action.START_HANDLER:
                self._log.info("restarting handler: %s", decision.reason, extra={"shard": st.index})
                self._start_handler(st)
                continue
            if action is Action.ACQUIRE:
                self._acquire(st, view, decision.reason)
            elif action is Action.RENEW:
                self._renew(st, view)
            elif action is Action.RELEASE:
                self._release(st, view)
            elif action is Action.REFRESH:
                st.in_flight = True
                self._submit(_WriteResult("refresh", st.index, 0.0, st.conflict_rv or ""), None)
            self._check_stuck(st, now)
            if st.held and st.renew_started is not None:
                self._schedule(st, st.renew_started + self._timing.renew_deadline)
            return

    def _check_stuck(self, st: _ShardState, now: float) -> None:
        run = st.run
        if st.phase is not HandlerPhase.STOPPING or st.stuck or run is None or run.stop_requested_at is None:
            return
        if now >= run.stop_requested_at + self._timing.drain_timeout:
            st.stuck = True
            self.metrics.stuck_handlers.set(sum(1 for s in self._states if s.stuck))
            self._log.error("handler did not return within drain_timeout (%.1fs); keeping the shard held and "
                            "reporting not ready", self._timing.drain_timeout, extra={"shard": st.index})

    def _lose(self, st: _ShardState, reason: str) -> None:
        now = self._clock.monotonic()
        # Rate-limited: whatever made us lose it (a fight over the Lease, an editing tool), taking it back
        # at once, every time, is how a misconfiguration turns into a tight loop of writes and log lines.
        st.loss_streak += 1
        pause = min(self._timing.retry_period * 2 ** min(st.loss_streak - 1, 5), self._timing.lease_duration)
        st.retry_at = max(st.retry_at, now + pause)
        level = logging.WARNING if st.loss_streak <= 3 or st.loss_streak % 10 == 0 else logging.DEBUG
        self._log.log(level, "lost shard: %s%s", reason,
                      f" (lost {st.loss_streak} times in a row; next try in {pause:.1f}s)" if st.loss_streak > 1 else "",
                      extra={"shard": st.index})
        self.metrics.losses.inc()
        self._set_held(st, False)
        st.hold_until = 0.0
        if st.run is not None and st.phase is HandlerPhase.RUNNING:
            self._stop_handler(st, self._clock.monotonic(), "lost")

    def _stop_handler(self, st: _ShardState, now: float, reason: str) -> None:
        if st.run is None or self._runner is None:
            st.phase = HandlerPhase.IDLE
            return
        self._log.info("stopping handler (%s)", reason, extra={"shard": st.index})
        st.phase = HandlerPhase.STOPPING
        if st.leaving_since is None:
            st.leaving_since = now
        self._runner.stop(st.run)
        self._dirty.add(st.index)

    def _acquire(self, st: _ShardState, view: ShardView, reason: str) -> None:
        record = view.record
        body, _token = self._writer.acquire(st.index, record, self._clock.now())
        self._log.debug("acquiring (%s)", reason, extra={"shard": st.index})
        st.in_flight = True
        self._submit(_WriteResult("create" if record is None else "acquire", st.index, 0.0, rv_of(record),
                                  fallback=view.desired != self.identity), body, deadline=None)

    def _renew(self, st: _ShardState, view: ShardView) -> None:
        record = view.record
        assert record is not None and st.renew_started is not None
        body = self._writer.renew(st.index, record, self._clock.now())
        st.in_flight = True
        self._submit(_WriteResult("renew", st.index, 0.0, record.resource_version), body,
                     deadline=st.renew_started + self._timing.renew_deadline)

    def _release(self, st: _ShardState, view: ShardView) -> None:
        record = view.record
        if record is None:
            self._set_held(st, False)
            return
        body = self._writer.release(st.index, record, self._clock.now())
        st.in_flight = True
        deadline = st.renew_started + self._timing.renew_deadline if st.held and st.renew_started else None
        self._submit(_WriteResult("release", st.index, 0.0, record.resource_version), body, deadline=deadline)

    # ------------------------------------------------------------------ writes

    def _submit(self, res: _WriteResult, body: dict[str, Any] | None, deadline: float | None = None) -> None:
        assert self._executor is not None
        try:
            self._executor.submit(self._do_write, res, body, deadline)
        except RuntimeError:  # executor shut down during teardown
            res.error = ApiError("other", "manager is shutting down")
            self._events.put(("write", res))

    def _do_write(self, res: _WriteResult, body: dict[str, Any] | None, deadline: float | None) -> None:
        client = self._client
        assert client is not None
        res.started = self._clock.monotonic()
        timeout = self._request_timeout
        try:
            if deadline is not None:
                remaining = deadline - res.started
                if remaining <= 0.01:
                    raise ApiError("timeout", "no time left before the renew deadline")
                timeout = min(timeout, remaining)
            name = res.name or (self._member_name if res.index == _MEMBER else self._states[res.index].name)
            if res.kind in ("create", "member_create"):
                res.obj = client.create(body or {}, timeout=timeout)
            elif res.kind in ("acquire", "renew", "release", "member_renew", "member_flag"):
                res.obj = client.replace(name, body or {}, timeout=timeout)
            elif res.kind in ("refresh", "member_refresh"):
                res.obj = client.get(name, timeout=timeout)
            elif res.kind in ("member_delete", "member_gc"):
                client.delete(name, resource_version=res.sent_rv or None, timeout=timeout)
        except ApiError as err:
            res.error = err
        except Exception as exc:  # defensive: a bug in a request must surface as a failed write
            res.error = ApiError("other", f"{type(exc).__name__}: {exc}")
        self._events.put(("write", res))
        self._wake.set()

    def _backoff(self, failures: int, err: ApiError, held: bool = False) -> float:
        if err.kind == "throttled" and err.retry_after is not None:
            return err.retry_after
        base = self._timing.retry_period
        if held:  # keep trying about every retry period while the renew deadline runs (client-go does)
            return base * random.uniform(0.5, 1.0)
        return min(base * 2 ** min(failures - 1, 4), max(base, self._timing.lease_duration)) * random.uniform(0.5, 1.0)

    def _on_write(self, res: _WriteResult, now: float) -> None:
        if res.index == _FLAG:
            if res.error is None and res.obj is not None:
                record = LeaseRecord.from_object(res.obj)
                if record is not None:
                    self._cache.apply(record)
            elif res.error is not None and res.error.kind not in ("conflict", "not_found"):
                self.metrics.api_error(res.error.kind)
            return
        if res.index == _GC:
            # Fire and forget: 404 (someone else deleted it) and 409 (it came back) are both fine; the
            # next membership pass retries whatever is still dead.
            self._gc_pending.discard(res.name or "")
            if res.error is not None and res.error.kind not in ("not_found", "conflict"):
                self.metrics.api_error(res.error.kind)
                self._log.warning("could not delete member Lease %s: %s", res.name, res.error)
            return
        if res.index == _MEMBER:
            self._on_member_result(res, now)
            return
        st = self._states[res.index]
        st.in_flight = False
        self._dirty.add(st.index)
        if res.error is not None:
            self._on_write_error(st, res, now)
            return
        st.failures = 0
        st.retry_at = 0.0
        st.conflict_rv = None
        st.conflict_at = None
        if res.kind == "refresh":
            if res.obj is None:
                self._cache.delete(st.name, "")
            else:
                record = LeaseRecord.from_object(res.obj)
                if record is not None:
                    self._cache.apply(record)
            return
        record = LeaseRecord.from_object(res.obj or {})
        if record is not None:
            self._cache.apply(record)
            st.own_rv = record.resource_version
        if res.kind in ("create", "acquire"):
            self._acquired(st, record, res, now)
        elif res.kind == "renew":
            if st.held:
                if st.loss_streak and res.started - st.acquired_at >= self._timing.lease_duration:
                    st.loss_streak = 0  # a tenure that lasted a lease duration: the trouble is over
                st.renew_started = res.started
                self.metrics.renew_seconds.observe(max(0.0, now - res.started))
                run = st.run
                if run is not None:
                    run.shard._extend(res.started + self._timing.renew_deadline)
        elif res.kind == "release":
            was_held = st.held
            self._set_held(st, False)
            st.hold_until = 0.0
            self.metrics.releases.inc()
            if st.leaving_since is not None:
                self.metrics.handoff_seconds.observe(max(0.0, now - st.leaving_since))
                st.leaving_since = None
            self._log.info("released" if was_held else "released a stale lease in our name", extra={"shard": st.index})

    def _acquired(self, st: _ShardState, record: LeaseRecord | None, res: _WriteResult, now: float) -> None:
        if record is None or record.holder != self.identity:
            self._log.warning("acquire response does not name us; ignoring it", extra={"shard": st.index})
            return
        self._set_held(st, True)
        st.renew_started = res.started
        st.acquired_at = res.started
        st.token = record.transitions if record.transitions is not None else 0
        st.hold_until = 0.0
        if res.fallback:
            # Taken because its desired owner did not take it. Keep it a while before offering it back,
            # and twice as long each time the same owner fails again, so an owner that is live but not
            # taking shards costs a handler restart every now and then rather than every few seconds.
            owner = self._assignment.get(st.index)
            st.fallback_streak = st.fallback_streak + 1 if owner == st.fallback_owner else 1
            st.fallback_owner = owner
            st.hold_until = res.started + self._timing.lease_duration * 2 ** min(st.fallback_streak - 1, 6)
        else:
            st.fallback_streak = 0
            st.fallback_owner = None
        st.leaving_since = None
        self.metrics.acquisitions.inc()
        valid_until = res.started + self._timing.renew_deadline
        if now >= valid_until:
            return  # acquired too late to be safe; decide() reports it lost and we start over
        if st.run is not None or self._runner is None:
            return
        if self._stopping.is_set():
            st.handler_wanted = False  # acquired as we began to stop: hand it straight back
            return
        self._log.info("acquired (token %d%s)", st.token, ", grace fallback" if res.fallback else "",
                       extra={"shard": st.index})
        self._start_handler(st)

    def _start_handler(self, st: _ShardState) -> None:
        assert self._runner is not None and st.renew_started is not None and st.run is None
        shard = Shard(st.index, self._shards, st.token or 0, identity=self.identity, group=self.group,
                      clock=self._clock, valid_until=st.renew_started + self._timing.renew_deadline)
        st.run = self._runner.start(shard)
        st.phase = HandlerPhase.RUNNING
        st.handler_wanted = True
        st.errors = 0
        st.last_error_at = float("-inf")

    def _on_write_error(self, st: _ShardState, res: _WriteResult, now: float) -> None:
        err = res.error
        assert err is not None
        self.metrics.api_error(err.kind)
        if res.kind == "refresh":
            st.conflict_at = now
            st.failures += 1
            return
        if err.kind in ("conflict", "already_exists"):
            st.conflict_rv = res.sent_rv
            st.conflict_at = now
            self._log.debug("%s conflicted at resourceVersion %r", res.kind, res.sent_rv, extra={"shard": st.index})
            return
        st.failures += 1
        backoff = self._backoff(st.failures, err, held=st.held)
        st.retry_at = held_retry_at(now, st.renew_started, backoff, self._timing) if st.held else now + backoff
        level = logging.DEBUG if res.kind == "acquire" and st.failures < 3 else logging.WARNING
        self._log.log(level, "%s failed: %s", res.kind, err, extra={"shard": st.index})

    # ------------------------------------------------------------------ owned set, shutdown

    def _set_held(self, st: _ShardState, held: bool) -> None:
        if st.held != held:
            st.held = held
            self._owned_dirty = True
            if held:
                self._held.add(st.index)
            else:
                self._held.discard(st.index)

    def _publish_owned(self) -> None:
        if not self._owned_dirty:
            return
        self._owned_dirty = False
        owned = frozenset(self._held)
        if owned == self._owned:
            return
        self._owned = owned
        self.metrics.shards_held.set(len(owned))
        if self._on_change is not None:
            # On its own thread, in order: a slow callback must never delay renewals or the deadline timer.
            if self._notifier is None:
                self._notifier = ThreadPoolExecutor(1, thread_name_prefix=f"shardlease-notify-{self.identity}")
            self._notifier.submit(self._notify, self._on_change, owned)

    def _notify(self, callback: Callable[[frozenset[int]], Any], owned: frozenset[int]) -> None:
        try:
            callback(owned)
        except Exception:
            self._log.exception("on_change callback failed")

    def _oldest_renewal_age(self) -> float:
        starts = [st.renew_started for st in self._states if st.held and st.renew_started is not None]
        return max(0.0, self._clock.monotonic() - min(starts)) if starts else 0.0

    def _shutdown_complete(self, now: float) -> bool:
        stop_at = self._stop_at if self._stop_at is not None else now
        hard_deadline = stop_at + self._timing.drain_timeout + self._timing.renew_deadline
        if now >= hard_deadline:
            self._log.warning("giving up on shutdown after %.1fs; shards still held: %s", now - stop_at,
                              sorted(st.index for st in self._states if st.held))
            return True
        if self._member.in_flight or not self._member.deleted:
            return False
        for st in self._states:
            if st.in_flight:
                return False
            if st.held and not st.stuck:
                return False
            if not st.held and st.phase is not HandlerPhase.IDLE and not st.stuck:
                return False  # a lost shard's handler still draining
        return True

    def abandoned_shards(self) -> frozenset[int]:
        """Shards whose handler had still not returned when the manager exited (empty until then).

        Their Leases were left held, to expire normally: releasing them would let another replica
        start while this handler may still be acting. ``shardlease run`` exits with status 3 for this.
        """
        return self._abandoned

    _abandoned: frozenset[int] = frozenset()

    def _teardown(self) -> None:
        stuck = [st.index for st in self._states if st.run is not None]
        self._abandoned = frozenset(stuck)
        if stuck:
            self._log.error("exiting with handlers that did not return: shards %s", stuck)
        if self._watcher is not None:
            self._watcher.stop(timeout=1.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._runner is not None and not stuck:
            self._runner.close()
        if self._health is not None:
            try:
                self._health.stop()
            except Exception:
                pass
        if self._client is not None:
            self._client.close()
        if self._own_api_client and self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:
                pass
        for st in self._states:
            self._set_held(st, False)
        self._publish_owned()
        if self._notifier is not None:
            self._notifier.shutdown(wait=False)  # queued notifications still run, in order
        self._log.info("stopped")
        self._done.set()
