"""Namespace objects and the part of kube-apiserver's namespace lifecycle a stand-in needs.

kube-apiserver sets the ``kubernetes.io/metadata.name`` label, the ``kubernetes`` finalizer and the
``Active`` phase itself, keeps spec and status out of reach of ordinary updates, refuses to delete
``default``, ``kube-system`` and ``kube-public``, and (its NamespaceLifecycle admission) refuses to
create objects in a namespace that does not exist with ``404 namespaces "x" not found``.

The dev-server follows all of that, with two deliberate differences (see docs/fidelity.md):

* By default a write that creates an object in a missing namespace creates the namespace first,
  instead of failing. Before Namespaces existed here every valid namespace name worked without being
  created, and users' tests (and the docs of the pytest plugin) rely on that. ``strict=True``
  (``DevServer(strict_namespaces=True)``) gives kube-apiserver's 404.
* Deleting a namespace deletes its objects and the namespace at once. A real cluster shows the
  namespace as ``Terminating`` until the namespace controller (kube-controller-manager, not the
  apiserver) has emptied it; the DELETE answer is the same Terminating object in both.
"""

from __future__ import annotations

import json
from typing import Any

from .microtime import now_rfc3339
from .resources import NAMESPACED, NAMESPACES
from .selectors import FieldSelector, LabelSelector
from .status import ApiError
from .store import Store, Stored

NAME_LABEL = "kubernetes.io/metadata.name"
#: Created at start-up, as a fresh cluster has them.
DEFAULTS = ("default", "kube-node-lease", "kube-public", "kube-system")
#: kube-apiserver refuses to delete these.
PROTECTED = ("default", "kube-public", "kube-system")


def prepare_create(obj: dict[str, Any]) -> None:
    """What kube's namespace strategy does to a new Namespace before validation."""
    meta = obj["metadata"]
    meta.pop("namespace", None)
    if meta.get("name"):
        meta["labels"] = dict(meta.get("labels") or {}, **{NAME_LABEL: meta["name"]})
    spec = obj.setdefault("spec", {})
    if not spec.get("finalizers"):
        spec["finalizers"] = ["kubernetes"]
    obj["status"] = {"phase": "Active"}


def prepare_update(obj: dict[str, Any], old: dict[str, Any]) -> None:
    """Updates keep spec and status (they have their own subresources) and the name label."""
    meta = obj["metadata"]
    meta.pop("namespace", None)
    meta["labels"] = dict(meta.get("labels") or {}, **{NAME_LABEL: old["metadata"]["name"]})
    obj["spec"] = old.get("spec") or {}
    obj["status"] = old.get("status") or {}


def create(store: Store, name: str, dry_run: bool = False) -> Stored:
    obj: dict[str, Any] = {"metadata": {"name": name}}
    prepare_create(obj)
    return store.create(NAMESPACES, "", obj, dry_run)


def create_defaults(store: Store) -> None:
    for name in DEFAULTS:
        create(store, name)


def not_found(name: str) -> ApiError:
    return ApiError(404, f'namespaces "{name}" not found', "NotFound", {"name": name, "kind": "namespaces"})


def ensure(store: Store, name: str, strict: bool, dry_run: bool) -> None:
    """Before an object is created in ``name``: 404 (strict) or create the namespace (default)."""
    with store.lock:
        if store.exists(NAMESPACES, "", name):
            return
        if strict:
            raise not_found(name)
        if not dry_run:
            create(store, name)


def delete(store: Store, name: str, preconditions: dict[str, Any] | None, dry_run: bool) -> dict[str, Any]:
    """Delete the namespace and everything in it; returns the Terminating object kube answers with."""
    with store.lock:
        current = store.get(NAMESPACES, "", name)
        if name in PROTECTED:
            raise ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           "Forbidden", {"name": name, "kind": "namespaces"})
        if not dry_run:
            everything, nothing = LabelSelector(()), FieldSelector(())
            for resource in NAMESPACED:
                store.delete_collection(resource, name, everything, nothing)
        store.delete(NAMESPACES, "", name, preconditions, dry_run)
        answer: dict[str, Any] = json.loads(current.raw)
        meta = answer["metadata"]
        answer["metadata"] = {}
        for key, value in meta.items():  # kube's field order: deletionTimestamp after creation
            answer["metadata"][key] = value
            if key == "creationTimestamp":
                answer["metadata"]["deletionTimestamp"] = now_rfc3339()
        answer["status"] = {"phase": "Terminating"}
        return answer
