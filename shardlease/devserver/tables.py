"""``meta.k8s.io/v1`` Table rendering, which is what ``kubectl get`` asks for.

kubectl prints the server's columns verbatim and takes NAMESPACE (``-A``) and LABELS
(``--show-labels``) from each row's ``object``, so rows carry PartialObjectMetadata by default.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any

from .resources import CONFIGMAPS, LEASES, NAMESPACES, Resource
from .store import Stored

_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
                "description": "Name must be unique within a namespace. Is required when creating "
                               "resources, although some resources may allow a client to request the "
                               "generation of an appropriate name automatically. Name is primarily "
                               "intended for creation idempotence and configuration definition. "
                               "Cannot be updated."}
_AGE_COLUMN = {"name": "Age", "type": "string", "format": "", "priority": 0,
               "description": "CreationTimestamp is a timestamp representing the server time when "
                              "this object was created."}
COLUMNS: dict[Resource, list[dict[str, Any]]] = {
    LEASES: [_NAME_COLUMN,
             {"name": "Holder", "type": "string", "format": "", "priority": 0,
              "description": "holderIdentity contains the identity of the holder of a current lease."},
             _AGE_COLUMN],
    CONFIGMAPS: [_NAME_COLUMN,
                 {"name": "Data", "type": "integer", "format": "", "priority": 0,
                  "description": "Data contains the configuration data."},
                 _AGE_COLUMN],
    NAMESPACES: [_NAME_COLUMN,
                 {"name": "Status", "type": "string", "format": "", "priority": 0,
                  "description": "The status of the namespace"},
                 _AGE_COLUMN],
}


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: the AGE column's wording."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(meta: dict[str, Any], now: _dt.datetime) -> str:
    created = meta.get("creationTimestamp")
    if not created:
        return "<unknown>"
    moment = _dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    return human_duration((now - moment).total_seconds())


def _cells(resource: Resource, obj: dict[str, Any], now: _dt.datetime) -> list[Any]:
    meta = obj["metadata"]
    if resource is LEASES:
        middle: Any = (obj.get("spec") or {}).get("holderIdentity", "")
    elif resource is NAMESPACES:
        middle = (obj.get("status") or {}).get("phase", "")
    else:
        middle = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [meta["name"], middle, _age(meta, now)]


def row(resource: Resource, stored: Stored, include: str, now: _dt.datetime) -> dict[str, Any]:
    """One table row; ``include`` is the includeObject parameter (None / Metadata / Object)."""
    obj = stored.obj
    entry: dict[str, Any] = {"cells": _cells(resource, obj, now)}
    if include == "Object":
        entry["object"] = obj
    elif include != "None":
        entry["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": obj["metadata"]}
    return entry


def table(resource: Resource, items: Iterable[Stored], resource_version: int | None, include: str,
          with_columns: bool = True, continue_token: str = "",
          remaining: int | None = None) -> dict[str, Any]:
    now = _dt.datetime.now(_dt.timezone.utc)
    meta: dict[str, Any] = {}
    if resource_version is not None:
        meta["resourceVersion"] = str(resource_version)
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    out["columnDefinitions"] = COLUMNS[resource] if with_columns else None
    out["rows"] = [row(resource, s, include, now) for s in items]
    return out


def wants_table(accept: str) -> bool:
    """True when the first acceptable media type is a meta.k8s.io/v1 (or v1beta1) Table."""
    for media in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in media.split(";")[1:])}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
        if media.strip().startswith(("application/json", "*/*")) and "as" not in params:
            return False
    return False
