"""shardlease: many replicas of one Deployment split a fixed set of shards, one Kubernetes Lease per shard.

The public API is small and re-exported here; everything else is an implementation detail::

    from shardlease import ShardConfig, ShardManager, Shard, shard_for_key

    def handle(shard: Shard) -> None:
        while not shard.stopped.wait(1.0):
            ...

    ShardManager(ShardConfig(group="orders", shards=64), handle).run()

The names are resolved on first use (PEP 562), so that ``import shardlease`` stays cheap: the CLI,
the dev-server and the pytest plugin import this package without paying for pydantic and the
Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "shardlease.errors",
    "FencingUnsupported": "shardlease.runtime.fencing",
    "ObjectEvent": "shardlease.runtime.objects",
    "ObjectStream": "shardlease.runtime.objects",
    "ReshardResult": "shardlease.runtime.reshard",
    "Shard": "shardlease.runtime.handlers",
    "ShardConfig": "shardlease.config",
    "ShardManager": "shardlease.runtime.manager",
    "ShardleaseError": "shardlease.errors",
    "fencing_manifests": "shardlease.runtime.fencing",
    "install_fencing": "shardlease.runtime.fencing",
    "reshard": "shardlease.runtime.reshard",
    "shard_for_key": "shardlease.core.keys",
    "shard_for_object": "shardlease.core.objects",
    "shard_range": "shardlease.core.objects",
    "uninstall_fencing": "shardlease.runtime.fencing",
}

__all__ = [
    "ConfigError",
    "FencingUnsupported",
    "ObjectEvent",
    "ObjectStream",
    "ReshardResult",
    "Shard",
    "ShardConfig",
    "ShardManager",
    "ShardleaseError",
    "__version__",
    "fencing_manifests",
    "install_fencing",
    "reshard",
    "shard_for_key",
    "shard_for_object",
    "shard_range",
    "uninstall_fencing",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs: explicit re-exports
    from shardlease.config import ShardConfig as ShardConfig
    from shardlease.core.keys import shard_for_key as shard_for_key
    from shardlease.core.objects import shard_for_object as shard_for_object
    from shardlease.core.objects import shard_range as shard_range
    from shardlease.errors import ConfigError as ConfigError
    from shardlease.errors import ShardleaseError as ShardleaseError
    from shardlease.runtime.fencing import FencingUnsupported as FencingUnsupported
    from shardlease.runtime.fencing import fencing_manifests as fencing_manifests
    from shardlease.runtime.fencing import install_fencing as install_fencing
    from shardlease.runtime.fencing import uninstall_fencing as uninstall_fencing
    from shardlease.runtime.handlers import Shard as Shard
    from shardlease.runtime.manager import ShardManager as ShardManager
    from shardlease.runtime.objects import ObjectEvent as ObjectEvent
    from shardlease.runtime.objects import ObjectStream as ObjectStream
    from shardlease.runtime.reshard import ReshardResult as ReshardResult
    from shardlease.runtime.reshard import reshard as reshard


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardlease' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
