"""Map an application key (a tenant id, a queue name, an object UID) to one of ``shards`` shards.

The mapping is part of shardlease's public contract: every replica, every process and every future
release must send the same key to the same shard, or two replicas would both (or neither) handle it.
So it is spelled out exactly here and never depends on Python's randomised ``hash()``:

1. ``key_bytes`` = the key itself if it is ``bytes``, else the key encoded as UTF-8.
2. ``h`` = the 8-byte BLAKE2b digest of ``key_bytes`` (``hashlib.blake2b(key_bytes, digest_size=8)``,
   no key, no salt, no person), read as an unsigned little-endian 64-bit integer.
3. The shard is the jump consistent hash of ``h`` over ``shards`` buckets (Lamping & Veach 2014,
   "A Fast, Minimal Memory, Consistent Hash Algorithm", the reference loop below).

Jump hash is used instead of ``h % shards`` because changing the shard count from S to S+1 then moves
only about 1/(S+1) of the keys, all of them to the new shard, instead of nearly all keys.
"""

from __future__ import annotations

from hashlib import blake2b

from shardlease.errors import InvalidArgument

__all__ = ["check_shard_count", "jump_hash", "shard_for_key"]


def check_shard_count(shards: object, name: str = "shards") -> int:
    """``shards`` if it is an integer >= 1, else :class:`InvalidArgument` naming ``name`` and the fix."""
    # bool is an int subclass, but shard_for_key(k, True) is a bug, not a shard count of 1.
    if isinstance(shards, bool) or not isinstance(shards, int):
        raise InvalidArgument(
            f"{name} must be an integer >= 1, got {shards!r} ({type(shards).__name__}); "
            "pass the group's shard count, e.g. ShardConfig.shards"
        )
    if shards < 1:
        raise InvalidArgument(
            f"{name} must be an integer >= 1, got {shards!r}; "
            "pass the group's shard count, e.g. ShardConfig.shards"
        )
    return shards


def jump_hash(value: int, buckets: int) -> int:
    """Jump consistent hash of an unsigned 64-bit ``value`` into ``range(buckets)``.

    A transcription of the paper's reference code, kept bit-for-bit identical (64-bit LCG state,
    ``(state >> 33) + 1`` as a double) so results match other languages' implementations.
    The caller guarantees ``0 <= value < 2**64`` and ``buckets >= 1``.
    """
    bucket = -1
    candidate = 0
    # Literal constants: LOAD_CONST is cheaper than a global lookup in this hot loop.
    while candidate < buckets:
        bucket = candidate
        value = (value * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        candidate = int((bucket + 1) * (2147483648.0 / ((value >> 33) + 1)))
    return bucket


def shard_for_key(key: str | bytes, shards: int) -> int:
    """Return the shard in ``range(shards)`` that owns ``key``; stable across processes and releases.

    Use it to route work to shards, e.g. ``if shard_for_key(tenant_id, cfg.shards) in owned: ...``.

    Raises ``TypeError`` when ``key`` is neither ``str`` nor ``bytes`` (silently stringifying other
    objects would make the result depend on their ``repr``), and ``ValueError`` when ``shards`` is not
    an integer >= 1.
    """
    check_shard_count(shards)
    if isinstance(key, str):
        data = key.encode("utf-8")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        data = key
    else:
        raise TypeError(
            f"key must be str or bytes, got {type(key).__name__}; "
            "convert it explicitly, e.g. str(key) or key.encode()"
        )
    return jump_hash(int.from_bytes(blake2b(data, digest_size=8).digest(), "little"), shards)
