"""Field ownership (``metadata.managedFields``) and server-side apply, as kube-apiserver does them.

kube-apiserver records, per field manager and operation, which fields that manager set
(``structured-merge-diff``). Two rules follow from it that users rely on:

* **Update** (POST, PUT, and every PATCH except apply): the writer becomes the owner of every field
  whose value it added or changed, and every other manager loses those fields. Removed fields are
  forgotten by everyone.
* **Apply** (PATCH ``application/apply-patch+yaml``): the applier owns exactly the fields of its
  applied configuration. A field it applied last time but no longer does is removed from the object,
  unless another manager owns it too. Changing a field another manager owns is a 409 Conflict that
  lists each field and owner, unless ``force=true``, which moves the field to the applier. Applying
  the value a field already has is not a conflict: the field is then co-owned.

The field sets here cover what Leases, ConfigMaps and Namespaces carry: labels and annotations key by
key, every Lease spec field, ConfigMap ``data``/``binaryData`` keys and ``immutable``. A map that a
write brings into existence is itself owned by that writer (the ``"."`` entry kube shows). Lists
(``ownerReferences``, ``finalizers``) are owned as a whole, where kube tracks them item by item; a
Namespace's spec and status are the server's and are not tracked. See docs/fidelity.md.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from .microtime import now_rfc3339
from .resources import CONFIGMAPS, LEASES, Resource
from .status import ApiError, bad_request

Path = tuple[str, ...]
#: Marks a map (labels, data, ...) in a field listing: it can be owned, but has no value to compare.
_MAP = object()
_META_MAPS = ("labels", "annotations")
_META_LISTS = ("ownerReferences", "finalizers")
APPLY, UPDATE = "Apply", "Update"


def _fields(resource: Resource, obj: dict[str, Any]) -> dict[Path, Any]:
    """Every tracked field of ``obj`` with its value (``_MAP`` for a non-empty map)."""
    out: dict[Path, Any] = {}

    def add_map(prefix: Path, value: Any) -> None:
        if isinstance(value, dict) and value:
            out[prefix] = _MAP
            for key, item in value.items():
                out[prefix + (key,)] = item

    meta = obj.get("metadata") or {}
    for name in _META_MAPS:
        add_map(("metadata", name), meta.get(name))
    for name in _META_LISTS:
        if meta.get(name):
            out[("metadata", name)] = meta[name]
    if resource is LEASES:
        for key, value in (obj.get("spec") or {}).items():
            out[("spec", key)] = value
    elif resource is CONFIGMAPS:
        add_map(("data",), obj.get("data"))
        add_map(("binaryData",), obj.get("binaryData"))
        if "immutable" in obj:
            out[("immutable",)] = obj["immutable"]
    return out


def _leaves(resource: Resource, obj: dict[str, Any]) -> set[Path]:
    return {path for path, value in _fields(resource, obj).items() if value is not _MAP}


def _compare(resource: Resource, old: dict[str, Any] | None,
             new: dict[str, Any]) -> tuple[set[Path], set[Path]]:
    """(added or modified, removed) fields from ``old`` to ``new``."""
    before = _fields(resource, old) if old is not None else {}
    after = _fields(resource, new)
    changed = {p for p, v in after.items() if p not in before or (v is not _MAP and before[p] != v)}
    return changed, set(before) - set(after)


# --------------------------------------------------------------------------- the managedFields list

@dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    time: str
    fields: set[Path] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, str]:
        return self.manager, self.operation


def encode_fields(paths: set[Path]) -> dict[str, Any]:
    """A path set as ``fieldsV1``: ``f:`` per field; ``"."`` where a member also has members below."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault("f:" + part, {})
    for path in paths:
        node = tree
        for part in path:
            node = node["f:" + part]
        if node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(node: dict[str, Any]) -> dict[str, Any]:
    return {key: _sorted_tree(node[key]) for key in sorted(node)}


def decode_fields(tree: Any, prefix: Path = ()) -> set[Path]:
    """The inverse of :func:`encode_fields`; ``k:``/``v:``/``i:`` list entries count as their list."""
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for key, child in tree.items():
        if key == ".":
            out.add(prefix)
        elif key.startswith("f:"):
            path = prefix + (key[2:],)
            below = decode_fields(child, path)
            out |= below if below else {path}
        else:
            out.add(prefix)
    return out


def _decode_entries(raw: Any) -> list[Entry]:
    entries: list[Entry] = []
    for item in raw or []:
        if not isinstance(item, dict) or not item.get("manager"):
            continue
        entries.append(Entry(str(item["manager"]), str(item.get("operation") or UPDATE),
                             str(item.get("apiVersion") or ""), str(item.get("time") or ""),
                             decode_fields(item.get("fieldsV1"))))
    return entries


def _encode_entries(entries: list[Entry]) -> list[dict[str, Any]]:
    ordered = sorted((e for e in entries if e.fields),
                     key=lambda e: (e.operation, e.time, e.manager))  # kube: Apply first, then by time
    return [{"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
             "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": encode_fields(e.fields)}
            for e in ordered]


def _baseline(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Entry]:
    """The entries an update starts from: the stored ones, unless the body replaced them.

    As in kube, leaving ``managedFields`` out (or sending ``[]``) keeps the stored list, and
    ``[{}]`` clears it."""
    stored = (old or {}).get("metadata", {}).get("managedFields") or []
    sent = new["metadata"].get("managedFields")
    if not sent or sent == stored:
        return _decode_entries(stored)
    return _decode_entries(sent)


def _remove_fields(entries: list[Entry], skip: tuple[str, str], paths: set[Path]) -> None:
    for entry in entries:
        if entry.key != skip:
            entry.fields -= paths


def _entry(entries: list[Entry], manager: str, operation: str, api_version: str) -> Entry:
    for entry in entries:
        if entry.key == (manager, operation):
            return entry
    entry = Entry(manager, operation, api_version, now_rfc3339())
    entries.append(entry)
    return entry


def manager_name(query: dict[str, str], user_agent: str) -> str:
    """``?fieldManager=``, else the User-Agent up to its first ``/`` (kube's default)."""
    name = query.get("fieldManager") or user_agent.split("/")[0]
    if len(name) > 128:
        raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be '
                            "more than 128 bytes", "Invalid", {"kind": "PatchOptions"})
    return name


def track_update(resource: Resource, manager: str, old: dict[str, Any] | None,
                 new: dict[str, Any]) -> None:
    """Set ``new``'s managedFields after an Update by ``manager`` (``old`` is None on create)."""
    sent = new["metadata"].get("managedFields")
    if sent == [{}]:
        new["metadata"].pop("managedFields", None)  # the documented way to clear them
        return
    entries = _baseline(old, new)
    changed, removed = _compare(resource, old, new)
    if changed:
        _remove_fields(entries, (manager, UPDATE), changed)
    for entry in entries:
        entry.fields -= removed
    if changed:
        mine = _entry(entries, manager, UPDATE, resource.api_version)
        mine.fields |= changed
        mine.time = now_rfc3339()
        mine.api_version = resource.api_version
    _store(new, entries)


def _store(obj: dict[str, Any], entries: list[Entry]) -> None:
    encoded = _encode_entries(entries)
    if encoded:
        obj["metadata"]["managedFields"] = encoded
    else:
        obj["metadata"].pop("managedFields", None)


# --------------------------------------------------------------------------- server-side apply

def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    node = obj
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = copy.deepcopy(value)


def _get(obj: dict[str, Any], path: Path) -> Any:
    node: Any = obj
    for part in path:
        node = node[part]
    return node


def _delete(obj: dict[str, Any], path: Path) -> None:
    parents = [obj]
    for part in path[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop maps the removal emptied (not spec/metadata)
        if parents[depth] or path[:depth] not in _PRUNABLE_MAPS:
            break
        parents[depth - 1].pop(path[depth - 1], None)


_PRUNABLE_MAPS = {("metadata", "labels"), ("metadata", "annotations"), ("data",), ("binaryData",)}


def _path_text(path: Path) -> str:
    return "".join("." + part for part in path)


def _manager_text(entry: Entry) -> str:
    """How kube names a manager in a conflict: Update managers with their API version."""
    name = json.dumps(entry.manager)
    return f"{name} using {entry.api_version}" if entry.operation == UPDATE else name


def _conflict(resource: Resource, conflicts: list[tuple[Entry, Path]]) -> ApiError:
    conflicts.sort(key=lambda c: (_manager_text(c[0]), c[1]))
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {_manager_text(e)}",
               "field": _path_text(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {_manager_text(entry)}: {_path_text(path)}"
    else:
        lines: list[str] = []
        for who in sorted({_manager_text(e) for e, _ in conflicts}):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {_path_text(p)}" for e, p in conflicts if _manager_text(e) == who]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, message, "Conflict", {"causes": causes})


def apply(resource: Resource, manager: str, live: dict[str, Any] | None, applied: dict[str, Any],
          force: bool) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (None: it does not exist yet),
    managedFields included; raises the 409 Conflict kube gives when not forced."""
    if applied["metadata"].get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil")
    key = (manager, APPLY)
    entries = _decode_entries((live or {}).get("metadata", {}).get("managedFields"))
    previous = next((e.fields for e in entries if e.key == key), set())
    applied_fields = _leaves(resource, applied)

    merged = copy.deepcopy(live) if live is not None else {"metadata": {}}
    for name, value in applied["metadata"].items():  # name, namespace, ... as given
        if name not in _META_MAPS and name not in _META_LISTS:
            merged["metadata"].setdefault(name, value)
    for path in applied_fields:
        _set(merged, path, _get(applied, path))
    others = set().union(*(e.fields for e in entries if e.key != key))
    for path in previous - applied_fields - others:  # no longer applied, and nobody else wants it
        _delete(merged, path)

    changed, removed = _compare(resource, live, merged)
    conflicts = [(e, p) for e in entries if e.key != key for p in sorted(e.fields & changed)]
    if conflicts and not force:
        raise _conflict(resource, conflicts)
    _remove_fields(entries, key, changed)
    for entry in entries:
        entry.fields -= removed
    mine = _entry(entries, manager, APPLY, resource.api_version)
    if mine.fields != applied_fields or changed or removed:
        mine.time = now_rfc3339()
    mine.fields = set(applied_fields)
    mine.api_version = resource.api_version
    _store(merged, entries)
    return merged
