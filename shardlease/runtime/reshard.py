"""Change a running group's shard count: :func:`reshard`, behind ``shardlease reshard`` (the
rules: ``core/resharding.py``, docs/resharding.md).

The count lives on the group Lease (``core/resharding.py`` states the protocol). Changing it is one
conditional write of the next generation, ``reshard_state(state, shards, fleet)``, where ``fleet`` is the
count a strict majority of the *live* members is configured with: it becomes the new state's basis, so
those members' configuration does not switch the group back (a later rollout to yet another count still
wins). The replicas do the rest: each stops its old handlers and stamps its Leases with the new
generation, and no handler of the new generation starts before every shard Lease below the span carries
it. ``wait`` polls the Leases for that barrier, the moment the switch is complete.

Who else writes the group Lease: the oldest member (creating it, or switching it for a rollout). Every
write is conditional on the resourceVersion read, so a concurrent change makes ours fail with 409; we
then read again and build the next generation on top of what won, never overwrite it.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardlease.core.groupview import membership_at
from shardlease.core.records import LeaseRecord, group_lease_name, member_selector, shard_selector
from shardlease.core.resharding import MAX_SHARDS, GroupState, fleet_count, group_lease_body, pending_shards, reshard_state
from shardlease.errors import Conflict, InvalidArgument, NotFound, ShardleaseError

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

    from shardlease.client.store import LeaseStore

__all__ = [
    "GroupLeaseMissing",
    "GroupLeaseUnreadable",
    "ReshardError",
    "ReshardResult",
    "ReshardSuperseded",
    "ReshardTimeout",
    "check_shards",
    "reshard",
    "reshard_on",
]

#: Each request's timeout: a person (or a script) is waiting for the answer.
REQUEST_TIMEOUT = 10.0
#: Conditional writes tried before giving up when the group Lease keeps changing under us.
WRITE_ATTEMPTS = 5
#: How often ``wait`` looks at the shard Leases. A healthy switch takes about one handoff.
POLL_INTERVAL = 0.25


class ReshardError(ShardleaseError):
    """The group's count could not be changed (or the switch did not complete); the message says why and
    what to do."""


class GroupLeaseMissing(ReshardError):
    """The group has no group Lease: no replica of a version with resharding has run it yet."""


class GroupLeaseUnreadable(ReshardError):
    """The group Lease exists but carries no readable count or generation (edited by hand?)."""


class ReshardTimeout(ReshardError, TimeoutError):
    """``wait`` passed before the switch completed; ``result.pending`` names the shards still waiting."""

    def __init__(self, message: str, result: ReshardResult) -> None:
        super().__init__(message)
        self.result = result


class ReshardSuperseded(ReshardError):
    """While waiting, a later generation replaced the one written (a rollout or another reshard)."""

    def __init__(self, message: str, result: ReshardResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class ReshardResult:
    """What :func:`reshard` did: the group's state before and after, and, with ``wait``, the barrier.

    ``count``, ``generation`` and ``previous`` are those of the state the group now runs, as on a
    :class:`~shardlease.core.resharding.GroupState`.
    """

    group: str
    namespace: str
    before: GroupState
    state: GroupState
    changed: bool
    """``False`` when the group already ran the requested count: nothing was written."""
    fleet: int | None
    """The count a strict majority of the live members is configured with (the new basis), if any."""
    pending: tuple[int, ...] | None = None
    """Shards whose Lease is not yet stamped with ``state.generation``, as last seen: ``()`` once the
    switch is complete, ``None`` when not waited for."""

    @property
    def count(self) -> int:
        return self.state.count

    @property
    def generation(self) -> int:
        return self.state.generation

    @property
    def previous(self) -> int | None:
        return self.state.previous

    @property
    def span(self) -> int:
        return self.state.span


def check_shards(shards: object, name: str = "shards") -> int:
    """``shards`` as a count the group Lease accepts, else ``InvalidArgument`` naming ``name`` and the fix."""
    if isinstance(shards, bool) or not isinstance(shards, int):
        raise InvalidArgument(f"{name} must be a whole number of shards, got {shards!r}")
    if shards < 1:
        raise InvalidArgument(f"{name} must be at least 1 (got {shards}): a group needs a shard to run")
    if shards > MAX_SHARDS:
        raise InvalidArgument(f"{name} must be at most {MAX_SHARDS} (got {shards}): every shard is a Lease "
                              f"renewed every retry period")
    return shards


def reshard(group: str, shards: int, *, namespace: str | None = None, api_client: ApiClient | None = None,
            wait: float | None = None) -> ReshardResult:
    """Switch ``group`` to ``shards`` shards in its next generation, while its replicas keep running.

    ``namespace``: where the group's Leases are; ``None`` finds it by the rule every command and
    ``ShardConfig`` use (``SHARDLEASE_NAMESPACE``, ``POD_NAMESPACE``, the in-cluster namespace file,
    ``default``), so a call from inside a replica's pod reaches its own group.

    ``api_client``: a configured ``kubernetes.client.ApiClient``; by default one is loaded the way
    kubectl finds its configuration (and closed again). ``wait``: seconds to wait for the switch to
    complete (every old handler stopped, every shard Lease below the span stamped with the new
    generation); ``None`` returns once the group Lease is written.

    Returns the result (``changed=False`` and nothing written when the group already runs ``shards``;
    with ``wait`` it then waits for that generation's switch if one is still in progress). Raises
    ``InvalidArgument`` for a count out of range, :class:`GroupLeaseMissing` /
    :class:`GroupLeaseUnreadable`, :class:`ReshardTimeout` when ``wait`` passes first,
    :class:`ReshardSuperseded` when a later generation replaces ours meanwhile, ``ConfigError`` when no
    Kubernetes configuration is found (without ``api_client``), and the ``ApiError`` of a request that
    failed.
    """
    from shardlease.client.leases import LeaseClient

    check_shards(shards)
    if wait is not None and not wait >= 0:
        raise InvalidArgument(f"wait must be a number of seconds >= 0 or None, got {wait!r}")
    if namespace is None:
        from shardlease.config import checked_namespace

        namespace = checked_namespace().name
    owned = api_client is None
    if api_client is None:
        from shardlease.client.connect import load_api_client

        api_client = load_api_client(user_agent="shardlease-reshard")
    store = LeaseClient(api_client, namespace, pool_size=1)
    try:
        return reshard_on(store, group, shards, namespace=namespace, wait=wait)
    finally:
        store.close()
        if owned:
            api_client.close()


def reshard_on(store: LeaseStore, group: str, shards: int, *, namespace: str = "default",
               wait: float | None = None, poll: float = POLL_INTERVAL,
               clock: Callable[[], float] = time.monotonic) -> ReshardResult:
    """:func:`reshard` through a :class:`~shardlease.client.LeaseStore` the caller owns (its namespace
    is the store's; ``namespace`` only names it in messages and in a created body)."""
    check_shards(shards)
    name = group_lease_name(group)
    result: ReshardResult | None = None
    for _attempt in range(WRITE_ATTEMPTS):
        record, before = _read_group(store, group, namespace)
        fleet = _fleet(store, group)
        if before.count == shards:
            result = ReshardResult(group, namespace, before, before, changed=False, fleet=fleet)
            break
        after = reshard_state(before, shards, fleet)
        body = group_lease_body(group, namespace, after, _dt.datetime.now(_dt.timezone.utc), record)
        try:
            written = store.replace(name, body, timeout=REQUEST_TIMEOUT)
        except Conflict:
            continue  # changed since we read it (a rollout, another reshard): decide again on the new state
        except NotFound:
            raise _missing(group, namespace) from None
        written_record = LeaseRecord.from_object(written)
        state = GroupState.from_record(written_record) if written_record is not None else None
        result = ReshardResult(group, namespace, before, state or after, changed=True, fleet=fleet)
        break
    if result is None:
        raise ReshardError(f"the group Lease {name} in namespace {namespace!r} changed under every one of "
                           f"{WRITE_ATTEMPTS} attempts to write it (another reshard or a rollout in progress?); "
                           f"check `shardlease status --group {group}` and try again")
    if wait is None:
        return result
    return _wait(store, result, wait, poll, clock)


def _read_group(store: LeaseStore, group: str, namespace: str) -> tuple[LeaseRecord, GroupState]:
    name = group_lease_name(group)
    obj = store.get(name, timeout=REQUEST_TIMEOUT)
    record = LeaseRecord.from_object(obj) if obj is not None else None
    if record is None:
        raise _missing(group, namespace)
    state = GroupState.from_record(record)
    if state is None:
        raise GroupLeaseUnreadable(
            f"the group Lease {name} in namespace {namespace!r} has no readable shard count or generation "
            f"(annotations {dict(record.annotations)!r}); restore shardlease.io/shards and "
            f"shardlease.io/generation, or delete the Lease and let the oldest replica create it again")
    return record, state


def _missing(group: str, namespace: str) -> GroupLeaseMissing:
    return GroupLeaseMissing(
        f"group {group!r} has no group Lease {group_lease_name(group)} in namespace {namespace!r}: it has never "
        f"run with a version of shardlease that supports resharding. Start the replicas first (they create it), "
        f"or check --group and --namespace")


def _fleet(store: LeaseStore, group: str) -> int | None:
    """The majority configured count of the live members, judged as ``shardlease status`` judges it."""
    items, _ = store.list(member_selector(group), timeout=REQUEST_TIMEOUT)
    records = [r for r in map(LeaseRecord.from_object, items) if r is not None]
    membership = membership_at(group, records, _dt.datetime.now(_dt.timezone.utc))
    return fleet_count(m.declared for m in membership.live)


def _pending(store: LeaseStore, group: str, state: GroupState) -> list[int]:
    items, _ = store.list(shard_selector(group), timeout=REQUEST_TIMEOUT)
    leases: dict[int, LeaseRecord] = {}
    for record in map(LeaseRecord.from_object, items):
        if record is not None and record.shard is not None:
            leases[record.shard] = record
    return pending_shards(state, leases.get)


def _wait(store: LeaseStore, result: ReshardResult, timeout: float, poll: float,
          clock: Callable[[], float]) -> ReshardResult:
    """Poll until no shard Lease below the span lacks the generation written; the group Lease is read
    each time, since the oldest member lowers the span once the retired Leases are deleted."""
    group, namespace, target = result.group, result.namespace, result.state
    deadline = clock() + timeout
    while True:
        _, state = _read_group(store, group, namespace)
        if state.generation > target.generation:
            # Its barrier implies ours (stamps only grow): complete if the later switch is.
            if not _pending(store, group, state):
                return _done(result, ())
            raise ReshardSuperseded(
                f"generation {target.generation} ({target.count} shards) was replaced by generation "
                f"{state.generation} ({state.count} shards, changed by {state.changed_by or 'unknown'}) before "
                f"its switch completed; see `shardlease status --group {group}`",
                _done(result, None))
        current = state if state.generation == target.generation else target
        pending = tuple(_pending(store, group, current))
        if not pending:
            return _done(result, ())
        if clock() >= deadline:
            done = _done(result, pending)
            raise ReshardTimeout(
                f"the switch to generation {target.generation} ({target.count} shards) did not complete within "
                f"{timeout:g}s: shards {list(pending)} are still pending (their Leases are not yet stamped "
                f"with generation {target.generation}: an old handler has not returned, or its holder is gone "
                f"and its Lease has not expired yet); see `shardlease status --group {group}`", done)
        time.sleep(max(0.0, min(poll, deadline - clock())))


def _done(result: ReshardResult, pending: tuple[int, ...] | None) -> ReshardResult:
    return ReshardResult(result.group, result.namespace, result.before, result.state, result.changed,
                         result.fleet, pending)
