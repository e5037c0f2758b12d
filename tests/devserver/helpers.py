"""Small builders shared by the dev-server tests."""

from __future__ import annotations

import json
from typing import Any

import kubernetes


def lease_body(name: str, holder: str = "pod-a", labels: dict[str, str] | None = None,
               **spec: object) -> dict[str, object]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, **spec}}


def status_of(exc: kubernetes.client.ApiException) -> dict[str, Any]:
    """The v1 Status body of a failed call."""
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
    assert body["code"] == exc.status, body
    return body
