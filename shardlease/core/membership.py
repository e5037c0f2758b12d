"""Who is in the group: the membership rule, once, for the replicas and for ``shardlease status``.

A member is live while its member Lease is held by the identity its name carries and has not expired
(client-go's rule: observed change + ``leaseDurationSeconds``, see :func:`elector.member_expiry`). Every
live member is eligible: the shards are assigned over all of them, and each runs the count of the
group's current generation whatever it was configured with (``core/resharding.py``). Members are
ordered oldest first (server ``creationTimestamp``, then ``acquireTime``, then name): the oldest one
does the group's chores (creating and switching the group Lease, collecting dead members' Leases).

Pure: records and the times they were observed in, a ``now`` on the same clock, out comes a
:class:`Membership`. The replicas pass monotonic observation times; ``shardlease status``, which has no
history, passes each record's ``renewTime`` as its observation on the wall clock, which is the same rule
read from the record alone.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass

from shardlease.core.elector import Timing, expiry_of, member_expiry
from shardlease.core.records import ROLE_MEMBER, LeaseRecord, member_lease_name

__all__ = ["Member", "Membership", "age_key", "compute_membership"]


@dataclass(frozen=True, slots=True)
class Member:
    identity: str
    name: str
    declared: int | None
    expires: float
    record: LeaseRecord


@dataclass(frozen=True, slots=True)
class Membership:
    """The group as one replica sees it at one instant."""

    live: tuple[Member, ...]
    """Live members, oldest first."""
    group_count: int | None
    """The configured count of the oldest live member that declares one (how groups without a group
    Lease, from before resharding, chose their count); ``None`` without any."""
    eligible: frozenset[str]
    """The live members: the identities the shards are assigned over."""
    dead: tuple[tuple[float, LeaseRecord], ...]
    """Member Leases that are not live, with the time from which they may be collected."""
    recheck_at: float
    """When the answer changes without any new record: the earliest expiry of a live member."""


def age_key(record: LeaseRecord) -> tuple[str, float, str]:
    """Sort key for "oldest member": the server's ``creationTimestamp`` (whole seconds, from one clock),
    then the member's own ``acquireTime`` (microseconds) to order members created within one second,
    then the name. Unknown values sort last, so a broken record never defines the group's count."""
    meta = record.raw.get("metadata")
    created = meta.get("creationTimestamp") if isinstance(meta, dict) else None
    acquired = record.acquire_time.timestamp() if record.acquire_time is not None else float("inf")
    return (created if isinstance(created, str) and created else "~", acquired, record.name)


def compute_membership(group: str, observations: Iterable[tuple[LeaseRecord, float]], now: float,
                       timing: Timing, *, wall_now: _dt.datetime | None = None,
                       seen_change_after: float = float("inf"), collect_after: float = float("inf"),
                       exclude_dead: str | None = None) -> Membership:
    """Membership from ``(record, observed)`` pairs of a group's Leases (other roles are ignored).

    ``seen_change_after``: observations later than this were seen to change since we started (the
    newcomer rule of :func:`elector.member_expiry` applies to the others). ``collect_after``: how long a
    member Lease must have been expired before it may be deleted. ``exclude_dead``: a Lease name never
    reported as dead (our own member Lease: we renew or delete it ourselves).
    """
    prefix = member_lease_name(group, "")
    live: list[Member] = []
    dead: list[tuple[float, LeaseRecord]] = []
    for record, observed in observations:
        name = record.name
        if not name.startswith(prefix) or record.role != ROLE_MEMBER:
            continue
        expires = member_expiry(record, observed, timing, wall_now=wall_now,
                                seen_change=observed > seen_change_after)
        if not record.holder or member_lease_name(group, record.holder) != name or expires <= now:
            # Released, expired, or a record whose name and holder disagree: not a member.
            if name != exclude_dead:
                # Collection counts from client-go's expiry (observed + lease), never the newcomer
                # shortcut: that one may call a member gone up to a lease before its Lease ran out by
                # its own terms, and a deletion must never come early.
                dead.append((max(expiry_of(record, observed, timing), observed) + collect_after, record))
            continue
        live.append(Member(record.holder, name, record.declared_shards, expires, record))
    live.sort(key=lambda m: age_key(m.record))
    group_count = next((m.declared for m in live if m.declared is not None), None)
    eligible = frozenset(m.identity for m in live)
    return Membership(tuple(live), group_count, eligible, tuple(dead),
                      min((m.expires for m in live), default=float("inf")))
