"""The reactor's vocabulary: the events a shell feeds it and the commands it returns.

Small frozen dataclasses and one enum, so that what passes between the pure core and the threaded shell
is typed and printable (no strings, no sentinel indexes), and table tests can compare commands with
``==``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from shardlease.core.records import LeaseRecord
from shardlease.errors import ApiError

__all__ = [
    "Command",
    "Event",
    "ExtendHandler",
    "HandlerExited",
    "HandlerRaised",
    "PublishOwned",
    "StartHandler",
    "StopHandler",
    "WatchShards",
    "Write",
    "WriteDone",
    "WriteKind",
]


class WriteKind(enum.Enum):
    """What a :class:`Write` does, and so which ``LeaseStore`` call carries it out."""

    CREATE = "create"                  # a shard Lease that did not exist (store.create)
    ACQUIRE = "acquire"                # a new tenure of an existing shard Lease (store.replace)
    RENEW = "renew"                    # store.replace
    RELEASE = "release"                # store.replace
    REFRESH = "refresh"                # re-read a shard Lease after a conflict the watch did not explain (store.get)
    MEMBER_CREATE = "member_create"    # store.create
    MEMBER_RENEW = "member_renew"      # store.replace
    MEMBER_REFRESH = "member_refresh"  # store.get
    MEMBER_DELETE = "member_delete"    # store.delete, conditional on the resourceVersion
    MEMBER_MARK = "member_mark"        # store.replace: annotate the live member Lease of our identity
    COLLECT = "collect"                # store.delete of a dead member's Lease or a retired shard's (clean-up)
    RETIRE = "retire"                  # store.replace: stamp a retired shard's Lease with our generation
    RETIRE_CREATE = "retire_create"    # store.create: the same for a retired shard without a Lease
    GROUP_CREATE = "group_create"      # store.create of the group Lease (count and generation)
    GROUP_UPDATE = "group_update"      # store.replace of the group Lease: a switch, or its span lowered
    GROUP_CHECK = "group_check"        # store.get of the group Lease: confirm our generation after a create
    GROUP_SNAPSHOT = "group_snapshot"  # store.replace of the group Lease: a new load snapshot (docs/load.md)

    @property
    def store_call(self) -> str:
        """``create`` / ``replace`` / ``get`` / ``delete``."""
        return _STORE_CALL[self]


_STORE_CALL = {
    WriteKind.CREATE: "create", WriteKind.MEMBER_CREATE: "create",
    WriteKind.RETIRE_CREATE: "create", WriteKind.GROUP_CREATE: "create",
    WriteKind.RETIRE: "replace", WriteKind.GROUP_UPDATE: "replace", WriteKind.GROUP_SNAPSHOT: "replace",
    WriteKind.ACQUIRE: "replace", WriteKind.RENEW: "replace", WriteKind.RELEASE: "replace",
    WriteKind.MEMBER_RENEW: "replace", WriteKind.MEMBER_MARK: "replace",
    WriteKind.REFRESH: "get", WriteKind.MEMBER_REFRESH: "get", WriteKind.GROUP_CHECK: "get",
    WriteKind.MEMBER_DELETE: "delete", WriteKind.COLLECT: "delete",
}


# ---------------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Write:
    """One request. ``name`` is the Lease, ``shard`` its index for shard writes (else ``None``),
    ``sent_rv`` the resourceVersion it is conditional on (``""``: none), ``body`` the object for
    create/replace, ``deadline`` the monotonic time after which the answer is useless (the renew
    deadline of what we hold), ``fallback`` whether an acquisition takes a shard desired elsewhere."""

    kind: WriteKind
    name: str
    shard: int | None = None
    sent_rv: str = ""
    body: dict[str, Any] | None = None
    deadline: float | None = None
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class StartHandler:
    """Start the handler for ``shard`` of ``count`` under ``generation``: a new run, numbered ``run``,
    with fencing token ``token``; ``shard.valid()`` is true until ``valid_until`` unless extended."""

    shard: int
    run: int
    token: int
    count: int
    valid_until: float
    generation: int = 1


@dataclass(frozen=True, slots=True)
class StopHandler:
    shard: int
    run: int


@dataclass(frozen=True, slots=True)
class ExtendHandler:
    shard: int
    run: int
    valid_until: float


@dataclass(frozen=True, slots=True)
class PublishOwned:
    owned: frozenset[int]


@dataclass(frozen=True, slots=True)
class WatchShards:
    """Watch exactly these shard Leases from now on (held, assigned here, or inherited if one peer
    fails); the shell re-targets the shard watch. Until the new list is in, the cache does not cover
    the added shards and the reactor leaves them alone."""

    shards: frozenset[int]
    total: int = 0
    """The span (shard Leases that may exist): the shell watches them all when asked for most of them."""


Command = Write | StartHandler | StopHandler | ExtendHandler | PublishOwned | WatchShards


# ------------------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class WriteDone:
    """A :class:`Write` finished: ``started`` is when its request left (monotonic), ``obj`` the object
    the server returned (``None`` for deletes and for a get that found nothing), ``error`` the
    failure, ``finished`` when the answer came (``None``: when it is handled; the shell batches events,
    so latency metrics use this), ``record`` the answer already parsed *and applied to the cache* by
    the shell (``None``: the reactor parses ``obj`` and applies it)."""

    write: Write
    started: float
    obj: dict[str, Any] | None = None
    error: ApiError | None = None
    finished: float | None = None
    record: LeaseRecord | None = None


@dataclass(frozen=True, slots=True)
class HandlerExited:
    shard: int
    run: int


@dataclass(frozen=True, slots=True)
class HandlerRaised:
    shard: int
    run: int


Event = WriteDone | HandlerExited | HandlerRaised
