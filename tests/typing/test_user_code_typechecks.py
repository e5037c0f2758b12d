"""A user's code that imports shardlease as the README shows is clean under ``mypy --strict``.

The package ships ``py.typed``; what a user sees is our public names and their types. mypy follows
shardlease silently (as it treats an installed package: errors inside it are not the user's) but still
enforces, at the user's import site, that every name is explicitly exported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

USER_CODE = '''
from typing import Any

from shardlease import (
    ConfigError,
    ObjectEvent,
    Shard,
    ShardConfig,
    ShardManager,
    ShardleaseError,
    shard_for_key,
    shard_for_object,
    shard_range,
)


def handle(shard: Shard) -> None:
    while not shard.stopped.wait(1.0):
        for key in ["a", "b"]:
            if shard_for_key(key, shard.count) == shard.id and shard.valid():
                print(key, shard.token)


async def handle_async(shard: Shard) -> None:
    async for event in shard.objects("v1", "configmaps", namespace="default"):
        obj: dict[str, Any] = event.object
        print(event.type, event.shard, shard_for_object(obj, shard.count))


def handle_objects(shard: Shard) -> None:
    start, end = shard_range(shard.id, shard.count)
    with shard.objects("apps/v1", "deployments", label_selector="app=web", by="namespace") as stream:
        for event in stream:
            first: ObjectEvent = event
            print(first.uid, start < end)


def main() -> None:
    try:
        manager = ShardManager(ShardConfig(group="orders", shards=64), handle,
                               on_change=lambda owned: print(sorted(owned)))
    except ConfigError as exc:
        raise SystemExit(str(exc)) from exc
    except ShardleaseError:
        raise
    manager.run()
    held: frozenset[int] = manager.owned_shards()
    print(held, manager.ready())
'''


def _mypy_strict(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict user.py`` in ``tmp_path``, following shardlease silently like an installed package."""
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n\n[mypy-shardlease.*]\nfollow_imports = silent\n")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(tmp_path / ".mypy_cache"),
         "user.py"],
        cwd=tmp_path, env={"MYPYPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=240, check=False)


@pytest.mark.slow  # mypy from cold, about 30 s: the slower tier
def test_the_readme_imports_are_clean_under_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_CODE)
    result = _mypy_strict(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_wrong_use_is_caught(tmp_path: Path) -> None:
    """The check above can fail: passing a str where the shard count goes is an error."""
    (tmp_path / "user.py").write_text("from shardlease import shard_for_key\nshard_for_key('k', '8')\n")
    result = _mypy_strict(tmp_path)
    assert result.returncode == 1 and "incompatible type" in result.stdout, result.stdout
