"""Which shard owns a Kubernetes object: the hash ranges of KEP-5866 (sharded list and watch).

Kubernetes 1.36 can filter LIST and WATCH on the server by a hash of one metadata field
(``shardSelector=shardRange(object.metadata.uid, '0x<start>', '0x<end>')``, feature gate
``ShardedListAndWatch``). To use that filter, our shards must be exactly the hash ranges the server
computes, so this mapping is part of the public contract and spelled out here:

1. ``value`` = the object's ``metadata.uid`` (``by="uid"``, the default) or ``metadata.namespace``
   (``by="namespace"``; ``""`` for a cluster-scoped object), encoded as UTF-8.
2. ``h`` = 64-bit FNV-1a of ``value`` (offset basis 0xcbf29ce484222325, prime 0x100000001b3), the hash
   kube-apiserver uses (``k8s.io/apimachinery/pkg/sharding``).
3. Shard ``i`` of ``S`` owns ``[floor(i * 2**64 / S), floor((i + 1) * 2**64 / S))``: equal slices of
   the hash space, in order.

A uid never changes, so an object stays in its shard for its whole life (``by="namespace"`` keeps all
of a namespace's objects together, for handlers that work per namespace). Unlike
:func:`~shardlease.core.keys.shard_for_key`, changing ``S`` moves many objects: ranges are cut anew.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from shardlease.core.keys import check_shard_count
from shardlease.errors import InvalidArgument

__all__ = [
    "SHARD_FIELDS",
    "ShardBy",
    "fnv1a_64",
    "merge_ranges",
    "object_hash",
    "selector_for_shards",
    "shard_for_hash",
    "shard_for_object",
    "shard_range",
]

ShardBy = Literal["uid", "namespace"]

#: The field each ``by`` hashes, in the selector's own spelling.
SHARD_FIELDS: Mapping[str, str] = {"uid": "object.metadata.uid", "namespace": "object.metadata.namespace"}

_SPACE = 1 << 64
_MASK = _SPACE - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a_64(data: str | bytes) -> int:
    """64-bit FNV-1a of ``data`` (a str is encoded as UTF-8) as an unsigned integer."""
    value = _FNV_OFFSET
    for byte in data.encode("utf-8") if isinstance(data, str) else data:
        value = ((value ^ byte) * _FNV_PRIME) & _MASK
    return value


def _check_by(by: object) -> str:
    if by not in SHARD_FIELDS:
        raise InvalidArgument(f"by must be 'uid' or 'namespace', got {by!r}; 'uid' spreads objects evenly, "
                              "'namespace' keeps each namespace's objects in one shard")
    return SHARD_FIELDS[str(by)]


def object_hash(obj: Mapping[str, Any], by: ShardBy = "uid") -> int:
    """The FNV-1a hash of the object's ``metadata.uid`` (or ``metadata.namespace``).

    An object without a uid cannot be placed (the server assigns one on create, so it is not an object
    read from the API): that is an :class:`InvalidArgument`, not a silent shard 0.
    """
    _check_by(by)
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        raise InvalidArgument(f"object has no metadata: {str(obj)[:80]!r}; pass an object as the API returns "
                              "it (a dict with metadata.uid)")
    value = meta.get(by)
    if by == "namespace":
        value = value or ""  # cluster-scoped objects hash the empty namespace, as the server does
    if not isinstance(value, str) or (by == "uid" and not value):
        raise InvalidArgument(f"object {meta.get('name')!r} has no metadata.{by} (got {value!r}); only objects "
                              "read from the API server have a uid")
    return fnv1a_64(value)


def shard_range(shard: int, shards: int) -> tuple[int, int]:
    """``(start, end)``: the hash range ``[start, end)`` that ``shard`` of ``shards`` owns."""
    check_shard_count(shards)
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
        raise InvalidArgument(f"shard must be an integer in 0..{shards - 1} (shards={shards}), got {shard!r}")
    return shard * _SPACE // shards, (shard + 1) * _SPACE // shards


def shard_for_hash(value: int, shards: int) -> int:
    """The shard whose range holds the 64-bit hash ``value``."""
    guess = value * shards >> 64
    # floor(value * S / 2**64) is the answer or one too small when a range start is not a whole number
    # before flooring; the exact bounds decide.
    if guess + 1 < shards and value >= (guess + 1) * _SPACE // shards:
        return guess + 1
    return guess


def shard_for_object(obj: Mapping[str, Any], shards: int, *, by: ShardBy = "uid") -> int:
    """The shard in ``range(shards)`` that owns ``obj`` (a dict as the API returns it).

    The same answer the API server gives when it filters with ``shardSelector``; stable across
    processes and releases. Raises :class:`InvalidArgument` for an object without ``metadata.uid``.
    """
    check_shard_count(shards)
    return shard_for_hash(object_hash(obj, by), shards)


def merge_ranges(shards: Iterable[int], count: int) -> list[tuple[int, int]]:
    """The ranges of ``shards`` (of ``count``), adjacent ones merged, in order."""
    merged: list[tuple[int, int]] = []
    for shard in sorted(set(shards)):
        start, end = shard_range(shard, count)
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _hex(bound: int) -> str:
    # The server takes exactly 16 lowercase hex digits, and 2**64 (the end of the space) as 17.
    return f"0x{bound:016x}"


def selector_for_shards(shards: Iterable[int], count: int, by: ShardBy = "uid") -> str:
    """The ``shardSelector`` for the objects of ``shards``: one ``shardRange`` per merged range,
    joined with ``||``, in the canonical form the server echoes in ``shardInfo``. ``""`` for no shards
    (a caller must not send an empty selector: the server rejects it)."""
    field = _check_by(by)
    return " || ".join(f"shardRange({field}, '{_hex(start)}', '{_hex(end)}')"
                       for start, end in merge_ranges(shards, count))
