"""Who should own which shard: a pure function of (group, shard count, live members, load factor).

Every replica computes the assignment on its own from the member Leases it sees, with no
coordination, so the function must give the same answer in every process: it depends only on its
arguments (members are deduplicated and sorted first) and on md5, never on ``hash()`` or on
iteration order of sets.

The algorithm is consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018):

* members are placed on a uhashring ``HashRing`` (160 virtual nodes each, md5 positions);
* shard ``i`` has the ring position of the key ``f"{group}-shard-{i}"``;
* every member may own at most ``cap = ceil(load_factor * shards / members)`` shards;
* a shard's preference list is the members in the order ``HashRing.range(key, unique=True)`` yields
  them: clockwise from the shard's position, each member once;
* placement goes in rounds: in round k every shard not yet placed, in index order, asks its k-th
  preferred member and takes it if that member is below cap.

Why rounds: the textbook greedy places one shard at a time and walks it on to the first member with
room, so an early shard that overflows can take the slot a later shard would have had as its first
choice, which then overflows too. Filling first choices before any second choice leaves fewer
shards away from their primary, and those cascades shrink. Measured with ``bench/balance.py``-style
runs (moves / minimum when one member joins, average over random member sets): S=256, N=30: 1.75
(rounds) vs 1.90 (one-at-a-time, index order) vs 2.02 (one-at-a-time, ring order); S=1024, N=32:
1.95 vs 2.40 vs 2.54; small N is the same within noise.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache

from uhashring import HashRing  # type: ignore[import-untyped]  # ships no type information

from shardlease.core.records import shard_lease_name
from shardlease.errors import InvalidArgument

__all__ = [
    "VNODES",
    "assign",
    "capacity",
    "desired_owner",
    "inheritable",
    "loads",
    "moved_shards",
    "normalize_members",
    "shards_of",
]

VNODES = 160
"""Virtual nodes per member: uhashring's default, part of the assignment contract (do not change)."""

_CACHE_SIZE = 64


def _check_shards(shards: object) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidArgument(f"shards must be an integer >= 1, got {shards!r}; pass the group's shard count")
    return shards


def _check_load_factor(load_factor: object) -> float:
    if isinstance(load_factor, bool) or not isinstance(load_factor, (int, float)):
        raise InvalidArgument(f"load_factor must be a number >= 1.0, got {load_factor!r}")
    value = float(load_factor)
    if not (value >= 1.0 and math.isfinite(value)):
        raise InvalidArgument(
            f"load_factor must be a finite number >= 1.0, got {load_factor!r}; "
            "1.0 gives the tightest balance, larger values trade balance for fewer moves"
        )
    return value


def normalize_members(members: Iterable[str]) -> tuple[str, ...]:
    """The canonical member list: unique and sorted, so callers may pass any order or duplicates."""
    unique = set(members)
    for member in unique:
        if not isinstance(member, str) or not member:
            raise InvalidArgument(f"members must be non-empty strings, got {member!r}")
    return tuple(sorted(unique))


def capacity(shards: int, members: int, load_factor: float = 1.0) -> int:
    """Most shards any one member may own: ``ceil(load_factor * shards / members)``.

    Computed with integers when ``load_factor`` is 1 so that float rounding can never turn an exact
    quotient (e.g. 1024 / 32) into one more than intended.
    """
    if members < 1:
        raise InvalidArgument(f"members must be >= 1, got {members}")
    if load_factor == 1.0:
        return -(-shards // members)
    return max(1, math.ceil(load_factor * shards / members - 1e-9))


@lru_cache(maxsize=4096)
def _member_points(member: str) -> tuple[tuple[int, str], ...]:
    """One member's virtual nodes as uhashring places them; cached so a membership change only
    hashes the member that changed (160 md5 calls each, the bulk of the cost of a new ring)."""
    return tuple(HashRing(nodes=[member], vnodes=VNODES).get_points())


class _Ring:
    """A member ring flattened into two parallel lists for a fast clockwise walk.

    Equal to ``HashRing(nodes=members, vnodes=VNODES).get_points()`` (a test checks it), built from
    per-member point lists. Two members' points coinciding would need an md5 collision.
    """

    __slots__ = ("positions", "owners", "members")

    def __init__(self, members: tuple[str, ...]) -> None:
        points = sorted(point for member in members for point in _member_points(member))
        self.positions: list[int] = [position for position, _ in points]
        self.owners: list[str] = [member for _, member in points]
        self.members = members

    def start(self, position: int) -> int:
        """Index of the first ring point strictly after ``position``, wrapping to 0 (as uhashring)."""
        index = bisect_right(self.positions, position)
        return 0 if index == len(self.positions) else index


@lru_cache(maxsize=_CACHE_SIZE)
def _ring_for(members: tuple[str, ...]) -> _Ring:
    return _Ring(members)


_ring_position = HashRing(nodes=[]).hashi
"""The ring position of a key: uhashring's own md5 hash, the one it places virtual nodes with."""


@lru_cache(maxsize=_CACHE_SIZE)
def _shard_positions(group: str, shards: int) -> tuple[int, ...]:
    """Ring position of every shard, indexed by shard."""
    return tuple(_ring_position(shard_lease_name(group, i)) for i in range(shards))


@lru_cache(maxsize=_CACHE_SIZE)
def _assign_cached(group: str, shards: int, members: tuple[str, ...], load_factor: float) -> tuple[str, ...]:
    ring = _ring_for(members)
    cap = capacity(shards, len(members), load_factor)
    owners = ring.owners
    points = len(owners)
    load: dict[str, int] = dict.fromkeys(members, 0)
    result: list[str] = [""] * shards
    # cursor[shard]: ring index where the shard's walk resumes; tried[shard]: members that refused it.
    cursor = [ring.start(position) for position in _shard_positions(group, shards)]
    tried: dict[int, set[str]] = {}
    pending: list[int] | range = range(shards)
    while pending:
        # Round k: every unplaced shard, in index order, proposes to its k-th distinct member in ring
        # order. Total capacity is >= shards, so every shard finds room within len(members) rounds.
        refused: list[int] = []
        for shard in pending:
            index = cursor[shard]
            owner = owners[index]
            seen = tried.get(shard)
            if seen is not None:
                while owner in seen:
                    index = index + 1 if index + 1 < points else 0
                    owner = owners[index]
            if load[owner] < cap:
                load[owner] += 1
                result[shard] = owner
            else:
                tried.setdefault(shard, set()).add(owner)
                cursor[shard] = index + 1 if index + 1 < points else 0
                refused.append(shard)
        pending = refused
    return tuple(result)


def assign(group: str, shards: int, members: Iterable[str], load_factor: float = 1.0) -> dict[int, str]:
    """Map every shard ``0..shards-1`` to the member that should own it; ``{}`` without members.

    Deterministic: the same group, shard count, member *set* and load factor give the same mapping
    in every process and release. No member gets more than ``capacity(shards, len(members),
    load_factor)`` shards: with the default load factor 1.0 the busiest member has ``ceil(shards /
    members)``, the best whole shards allow, and when ``shards`` is a multiple of the member count
    every member gets exactly ``shards / members``. (Others may have fewer than ``floor(shards /
    members)`` when shards do not divide evenly.) When one member joins or leaves, only a few times the minimum number
    of shards change owner (see ``bench/results/balance.md``).

    Results are memoised (the last 64 distinct inputs), since every replica recomputes the same
    assignment on every membership change.
    """
    shards = _check_shards(shards)
    load_factor = _check_load_factor(load_factor)
    if not isinstance(group, str):
        raise InvalidArgument(f"group must be a string, got {group!r}")
    canonical = normalize_members(members)
    if not canonical:
        return {}
    return dict(enumerate(_assign_cached(group, shards, canonical, load_factor)))


def desired_owner(
    group: str, shard: int, shards: int, members: Iterable[str], load_factor: float = 1.0
) -> str | None:
    """The member that should own one shard, or ``None`` when there are no members."""
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
        raise InvalidArgument(f"shard must be an integer in 0..{shards - 1}, got {shard!r}")
    return assign(group, shards, members, load_factor).get(shard)


#: Above this many (members x shards), :func:`inheritable` estimates instead of recomputing the
#: assignment once per other member (about 1.5 s of CPU per membership change at 100 x 10,000).
EXACT_INHERITABLE_LIMIT = 300_000


def inheritable(group: str, shards: int, members: Iterable[str], member: str, load_factor: float = 1.0) -> frozenset[int]:
    """Shards that would move to ``member`` if any one other member left: the ones worth watching.

    A replica that only starts to watch a shard Lease when it becomes its own would time the old
    holder's expiry from that first observation, so a failover would take two lease durations. Watching
    these in advance keeps it at one. Exact (the assignment recomputed without each other member) up to
    ``EXACT_INHERITABLE_LIMIT``; beyond it, the shards whose ring walk reaches ``member`` second, which
    misses the few that a bounded-load cascade moves further (measured: 4 of 85 at 50 x 4,096).
    """
    shards = _check_shards(shards)
    load_factor = _check_load_factor(load_factor)
    canonical = normalize_members(members)
    if member not in canonical or len(canonical) < 2:
        return frozenset()
    current = _assign_cached(group, shards, canonical, load_factor)
    mine = {shard for shard, owner in enumerate(current) if owner == member}
    found: set[int] = set()
    if len(canonical) * shards <= EXACT_INHERITABLE_LIMIT:
        compute = _assign_cached.__wrapped__  # not memoised: N one-off inputs would flush the cache
        for leaving in canonical:
            if leaving == member:
                continue
            rest = tuple(m for m in canonical if m != leaving)
            found.update(shard for shard, owner in enumerate(compute(group, shards, rest, load_factor))
                         if owner == member)
    else:
        ring = _ring_for(canonical)
        owners, points = ring.owners, len(ring.owners)
        for shard, position in enumerate(_shard_positions(group, shards)):
            index = ring.start(position)
            first = owners[index]
            while owners[index] == first:
                index = index + 1 if index + 1 < points else 0
            if owners[index] == member:
                found.add(shard)
    return frozenset(found - mine)


def loads(mapping: Mapping[int, str], members: Iterable[str] = ()) -> dict[str, int]:
    """Shards per member; members passed in ``members`` but owning nothing are listed with 0."""
    counts: dict[str, int] = dict.fromkeys(members, 0)
    counts.update(Counter(mapping.values()))
    return counts


def shards_of(mapping: Mapping[int, str], member: str) -> frozenset[int]:
    """The shards ``mapping`` gives to ``member``."""
    return frozenset(shard for shard, owner in mapping.items() if owner == member)


def moved_shards(before: Mapping[int, str], after: Mapping[int, str]) -> frozenset[int]:
    """Shards whose owner differs between two mappings (a shard missing from one side counts)."""
    return frozenset(shard for shard in before.keys() | after.keys() if before.get(shard) != after.get(shard))
