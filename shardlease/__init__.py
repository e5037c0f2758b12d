"""shardlease: many replicas of one Deployment split a fixed set of shards, one Kubernetes Lease per shard.

The public API is small and re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
