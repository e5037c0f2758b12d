"""shard_for_key: a stable, documented key -> shard mapping that moves few keys when S changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shardlease
from shardlease.core.keys import jump_hash, shard_for_key

PACKAGE_ROOT = str(Path(shardlease.__file__).resolve().parent.parent)
SHARD_COUNTS = (1, 2, 7, 16, 1000, 16384)

# STABILITY CONTRACT. These values were computed once (release 0.1.0) and must never change: users
# route data by them, and replicas running different releases during a rolling upgrade must agree.
# If this test fails, the change is a breaking change of the wire contract, not a test to update.
PINNED: dict[str | bytes, list[int]] = {
    "": [0, 0, 6, 6, 987, 12038],
    "a": [0, 0, 3, 10, 333, 2007],
    "tenant-1": [0, 1, 2, 14, 825, 825],
    "orders/eu-west-1": [0, 1, 5, 8, 449, 14540],
    "héllo": [0, 1, 2, 13, 979, 2299],
    b"\x00\xff": [0, 0, 6, 7, 16, 10415],
}


def test_pinned_outputs_never_change() -> None:
    """Stability contract: the same key maps to the same shard in every process and every release."""
    for key, expected in PINNED.items():
        assert [shard_for_key(key, s) for s in SHARD_COUNTS] == expected, key


def test_jump_hash_matches_reference_c_implementation() -> None:
    """Values produced by the paper's C code (compiled with gcc -O2), so other languages can agree."""
    cases = {
        1: [0, 0, 55, 549, 549, 8421, 262355607],
        42: [0, 1, 43, 571, 571, 5747, 124795770],
        0xDEAD10CC: [0, 1, 13, 361, 361, 6591, 894060863],
        2**64 - 1: [0, 1, 10, 313, 313, 13242, 699554662],
    }
    for value, expected in cases.items():
        assert [jump_hash(value, b) for b in (1, 2, 57, 666, 1024, 16384, 1 << 30)] == expected


def test_str_key_is_its_utf8_bytes() -> None:
    assert shard_for_key("héllo", 1000) == shard_for_key("héllo".encode(), 1000)
    assert shard_for_key(bytearray(b"tenant-1"), 16384) == shard_for_key("tenant-1", 16384)


@given(key=st.one_of(st.text(), st.binary()), shards=st.integers(min_value=1, max_value=100_000))
def test_result_is_in_range(key: str | bytes, shards: int) -> None:
    assert 0 <= shard_for_key(key, shards) < shards


@pytest.mark.parametrize("shards", [7, 64, 256])
def test_keys_spread_uniformly(shards: int) -> None:
    """Pearson chi-square over 200 keys per shard stays far below a 99.9% critical value."""
    per_shard = 200
    counts = Counter(shard_for_key(f"item-{i}", shards) for i in range(per_shard * shards))
    assert set(counts) == set(range(shards))
    chi2 = sum((c - per_shard) ** 2 / per_shard for c in counts.values())
    dof = shards - 1
    # Wilson-Hilferty approximation of the chi-square 0.999 quantile (z = 3.09).
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * (2 / (9 * dof)) ** 0.5) ** 3
    assert chi2 < critical


@pytest.mark.parametrize("shards", [1, 2, 5, 16, 100])
def test_growing_by_one_shard_moves_only_to_the_new_shard(shards: int) -> None:
    """S -> S+1 moves about 1/(S+1) of the keys, and every moved key lands on the new shard S."""
    keys = [f"user-{i}" for i in range(20_000)]
    moved = 0
    for key in keys:
        before, after = shard_for_key(key, shards), shard_for_key(key, shards + 1)
        if before != after:
            moved += 1
            assert after == shards
    expected = len(keys) / (shards + 1)
    assert abs(moved - expected) < 4 * expected**0.5 + 10


def test_same_result_under_another_hash_seed() -> None:
    """Python's str hash is randomised per process; shard_for_key must not depend on it."""
    keys = ["a", "tenant-1", "orders/eu-west-1", "x" * 1000]
    here = [shard_for_key(k, 997) for k in keys]
    code = (
        "import json, sys; from shardlease.core.keys import shard_for_key; "
        "print(json.dumps([shard_for_key(k, 997) for k in json.loads(sys.argv[1])]))"
    )
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=PACKAGE_ROOT)
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(keys)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "16", None])
def test_invalid_shard_count_names_the_argument(bad: object) -> None:
    with pytest.raises(ValueError, match="shards must be an integer >= 1"):
        shard_for_key("k", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1, None, 1.5, ("a",)])
def test_non_text_key_is_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="key must be str or bytes"):
        shard_for_key(bad, 4)  # type: ignore[arg-type]
