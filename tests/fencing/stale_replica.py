"""The handler of tests/fencing/test_stale_replica.py: a replica that writes one ConfigMap of its own
when it gets the shard, and (identity ``stale``) then waits for the test's go, checks ``valid()``, and
writes again after a pause inside its write path, during which the test freezes it (SIGSTOP) until
another replica has taken the shard. Each step is appended to ``$FENCE_DIR/<identity>.jsonl``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from shardlease import Shard

NS = "default"


def _record(step: str, **fields: Any) -> None:
    me = os.environ["SHARDLEASE_IDENTITY"]
    with open(Path(os.environ["FENCE_DIR"]) / f"{me}.jsonl", "a") as out:
        out.write(json.dumps({"step": step, **fields}) + "\n")


def _attempt(step: str, call: Any) -> None:
    try:
        call()
        _record(step, outcome="accepted")
    except ApiException as exc:
        _record(step, outcome="refused", status=exc.status, body=str(exc.body))


def handle(shard: Shard) -> None:
    api = CoreV1Api(kubernetes.config.new_client_from_config(config_file=os.environ["SHARDLEASE_KUBECONFIG"]))
    name = f"{shard.group}-{shard.identity}"
    _record("acquired", fence=shard.fence_annotation)
    created = api.create_namespaced_config_map(NS, shard.stamp({"metadata": {"name": name}, "data": {"v": "0"}}))
    _record("created", fence=shard.fence_annotation)
    if shard.identity != "stale":
        return  # returning keeps the shard held
    go = Path(os.environ["FENCE_DIR"]) / "go"
    while not go.exists():
        time.sleep(0.02)
    if not shard.valid():
        _record("invalid")
        return
    _record("checked")
    time.sleep(1.0)  # the work between the check and the write: the test stops the process in here
    body = shard.stamp({"metadata": {"name": name, "resourceVersion": created.metadata.resource_version},
                        "data": {"v": "late"}})
    _attempt("update", lambda: api.replace_namespaced_config_map(name, NS, body))
    _attempt("delete", lambda: api.delete_namespaced_config_map(name, NS))
