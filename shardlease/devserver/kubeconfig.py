"""A kubeconfig for the dev-server: one cluster, no credentials, context ``shardlease-dev``.

Written as plain YAML text (no YAML library needed); kubectl and ``kubernetes.config.load_kube_config``
both read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONTEXT = "shardlease-dev"


def render(server_url: str, namespace: str = "default") -> str:
    q = json.dumps  # a JSON string is a valid YAML scalar, and quotes anything unusual safely
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: {CONTEXT}\n"
        "  cluster:\n"
        f"    server: {q(server_url)}\n"
        "contexts:\n"
        f"- name: {CONTEXT}\n"
        "  context:\n"
        f"    cluster: {CONTEXT}\n"
        f"    user: {CONTEXT}\n"
        f"    namespace: {q(namespace)}\n"
        f"current-context: {CONTEXT}\n"
        "users:\n"
        f"- name: {CONTEXT}\n"
        "  user: {}\n"
        "preferences: {}\n"
    )


def write(path: str | os.PathLike[str], server_url: str, namespace: str = "default") -> Path:
    """Write atomically (a reader never sees half a file) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(render(server_url, namespace))
    os.replace(tmp, target)
    return target
