"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), applied to plain dicts.

Leases and ConfigMaps have no lists with merge keys, so a strategic merge patch is applied as a merge
patch -- exactly what kube-apiserver ends up doing for these types.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """The patch document is malformed (400) -- see :class:`PatchTestFailed` for a failed ``test``."""


class PatchTestFailed(PatchError):
    """A JSON-patch ``test`` operation did not hold (kube-apiserver answers 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer must be empty or start with a "/": "{path}"')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _missing(parts: list[str]) -> PatchError:
    return PatchError(f"doc is missing path: /{'/'.join(parts)}")


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index: {token}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index out of bounds: {index}")
    return index


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise _missing(parts)
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, False)]
        else:
            raise _missing(parts)
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _missing(parts)
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise _missing(parts)


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise _missing(parts)
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict) and last not in parent:
        raise PatchError(f"Unable to remove nonexistent key: {last}: missing value")
    if not isinstance(parent, (dict, list)):
        raise _missing(parts)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[_index(parent, last, False)]
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict):
            raise PatchError("json patch operation must be an object")
        op = operation.get("op")
        parts = _pointer(operation.get("path"))
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"missing value for operation {op!r}")
        if op == "add":
            doc = _add(doc, parts, copy.deepcopy(operation["value"]))
        elif op == "remove":
            doc = _remove(doc, parts)
        elif op == "replace":
            _get(doc, parts)
            doc = _add(_remove(doc, parts), parts, copy.deepcopy(operation["value"])) if parts \
                else copy.deepcopy(operation["value"])
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from"))
            value = copy.deepcopy(_get(doc, source))
            if op == "move":
                doc = _remove(doc, source)
            doc = _add(doc, parts, value)
        elif op == "test":
            try:
                actual = _get(doc, parts)
            except PatchError:
                raise PatchTestFailed(f"testing value {operation.get('path')} failed: missing value") from None
            if actual != operation["value"] or type(actual) is not type(operation["value"]):
                raise PatchTestFailed(f"testing value {operation.get('path')} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}")
    return doc
