"""The public names promised in the README import from the package root, and importing the package
itself stays cheap (the CLI and the pytest plugin import it in every process)."""

from __future__ import annotations

import subprocess
import sys

import shardlease


def test_public_names_resolve_to_the_real_objects() -> None:
    from shardlease import Shard, ShardConfig, ShardManager, shard_for_key
    from shardlease.config import ShardConfig as ConfigClass
    from shardlease.core.keys import shard_for_key as key_function
    from shardlease.runtime.handlers import Shard as ShardClass
    from shardlease.runtime.manager import ShardManager as ManagerClass

    assert (ShardConfig, ShardManager, Shard, shard_for_key) == (
        ConfigClass, ManagerClass, ShardClass, key_function)
    assert set(shardlease.__all__) >= {"ShardConfig", "ShardManager", "Shard", "shard_for_key"}


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        shardlease.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_does_not_load_the_kubernetes_client() -> None:
    code = "import sys, shardlease; print('kubernetes' in sys.modules, 'pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
