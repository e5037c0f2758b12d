"""A minimal OpenAPI v3 index, enough for ``kubectl create/apply/replace -f`` with default validation.

kubectl downloads ``/openapi/v3`` and the group document of the object's GroupVersion. When it finds
an operation tagged with the object's GVK that takes a ``fieldValidation`` parameter, it leaves
validation to the server (sending ``fieldValidation=Strict``) instead of validating client-side; so
that is all these documents need to say. Full schemas are deliberately left out.
"""

from __future__ import annotations

import json
from typing import Any

from .resources import ALL, Resource

_HASH = "shardlease-dev-1"


def _doc_path(resource: Resource) -> str:
    return f"apis/{resource.api_version}" if resource.group else "api/v1"


def _collection_path(resource: Resource) -> str:
    scope = "/namespaces/{namespace}" if resource.namespaced else ""
    return f"/{_doc_path(resource)}{scope}/{resource.plural}"


def index() -> dict[str, Any]:
    return {"paths": {_doc_path(r): {"serverRelativeURL": f"/openapi/v3/{_doc_path(r)}?hash={_HASH}"}
                      for r in ALL}}


def _operation(resource: Resource, action: str) -> dict[str, Any]:
    return {
        "operationId": f"{action}{resource.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version,
                                            "kind": resource.kind},
        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
                        "description": "fieldValidation instructs the server on how to handle objects "
                                       "in the request containing unknown or duplicate fields."}],
        "responses": {"200": {"description": "OK"}},
    }


def group_document(doc_path: str) -> dict[str, Any] | None:
    """The document of one group-version: create, replace and patch of each of its resources."""
    paths: dict[str, Any] = {}
    for resource in ALL:
        if _doc_path(resource) != doc_path:
            continue
        prefix = _collection_path(resource)
        paths[prefix] = {"post": _operation(resource, "post")}
        paths[prefix + "/{name}"] = {"put": _operation(resource, "put"),
                                     "patch": _operation(resource, "patch")}
    if not paths:
        return None
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (shardlease dev-server)", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}


# --------------------------------------------------------------------------- OpenAPI v2 (Swagger 2.0)
#
# kubectl 1.27 and 1.28 still read ``/openapi/v2`` before ``create/apply/replace -f``, ``edit`` and
# ``diff``: it checks that the server's PATCH operation for the object's GVK takes a
# ``fieldValidation`` query parameter (then it leaves validation to the server) and parses the
# definitions for client-side apply. Those versions ask *only* for the gnostic protobuf encoding
# (``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``) and cannot read JSON, so
# the same small document is served in both encodings. Definitions stay empty: kubectl then falls back
# to its compiled-in types for strategic merge patches, which is what it does for built-in kinds.

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V2_PROTOBUF_ACCEPTS = ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf", V2_PROTOBUF)

_FIELD_VALIDATION_V2 = {
    "uniqueItems": True, "type": "string", "description": "fieldValidation instructs the server on "
    "how to handle objects in the request containing unknown or duplicate fields.",
    "name": "fieldValidation", "in": "query",
}


def _v2_operation(resource: Resource, action: str, verb: str) -> dict[str, Any]:
    return {
        "consumes": ["*/*"],
        "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
        "operationId": f"{verb}{resource.kind}",
        "parameters": [dict(_FIELD_VALIDATION_V2)],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "kind": resource.kind,
                                            "version": resource.version},
    }


def swagger_v2() -> dict[str, Any]:
    """The Swagger 2.0 document: create, replace and patch of every served resource."""
    paths: dict[str, Any] = {}
    for resource in ALL:
        prefix = _collection_path(resource)
        paths[prefix] = {"post": _v2_operation(resource, "post", "create")}
        paths[prefix + "/{name}"] = {"put": _v2_operation(resource, "put", "replace"),
                                     "patch": _v2_operation(resource, "patch", "patch")}
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "definitions": {}}


def wants_v2_protobuf(accept: str) -> bool | None:
    """True for the gnostic protobuf, False for JSON, None when neither is acceptable (406)."""
    media = [m.split(";")[0].strip().lower() for m in accept.split(",")] if accept.strip() else []
    for item in media:
        if item in _V2_PROTOBUF_ACCEPTS:
            return True
        if item in ("application/json", "*/*", "application/*"):
            return False
    return False if not media else None


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _string(number: int, value: str) -> bytes:
    return _bytes(number, value.encode()) if value else b""


def _bool(number: int, value: bool) -> bytes:
    return _key(number, 0) + b"\x01" if value else b""


def _yaml_scalar(value: Any) -> str:
    """A JSON value as the YAML text gnostic stores in ``Any.yaml`` (JSON is valid YAML)."""
    return json.dumps(value, separators=(",", ":")) + "\n"


def _named_any(name: str, value: Any) -> bytes:
    return _string(1, name) + _bytes(2, _string(2, _yaml_scalar(value)))


def _v2_parameter(param: dict[str, Any]) -> bytes:
    query = (_string(2, param["in"]) + _string(3, param["description"]) + _string(4, param["name"])
             + _string(6, param["type"]) + _bool(20, param["uniqueItems"]))
    non_body = _bytes(3, query)              # NonBodyParameter.query_parameter_sub_schema
    parameter = _bytes(2, non_body)          # Parameter.non_body_parameter
    return _bytes(1, parameter)              # ParametersItem.parameter


def _v2_operation_pb(op: dict[str, Any]) -> bytes:
    out = b"".join(_string(6, p) for p in op["produces"])
    out += b"".join(_string(7, c) for c in op["consumes"])
    out = _string(5, op["operationId"]) + out
    out += b"".join(_bytes(8, _v2_parameter(p)) for p in op["parameters"])
    codes = b"".join(_bytes(1, _string(1, code) + _bytes(2, _bytes(1, _string(1, r["description"]))))
                     for code, r in op["responses"].items())
    out += _bytes(9, codes)
    out += b"".join(_bytes(13, _named_any(k, v)) for k, v in op.items() if k.startswith("x-"))
    return out


_PATH_ITEM_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def swagger_v2_protobuf() -> bytes:
    """:func:`swagger_v2` in gnostic's ``openapi.v2.Document`` protobuf encoding."""
    doc = swagger_v2()
    info = _string(1, doc["info"]["title"]) + _string(2, doc["info"]["version"])
    paths = b""
    for path, item in doc["paths"].items():
        encoded = b"".join(_bytes(_PATH_ITEM_FIELDS[verb], _v2_operation_pb(op)) for verb, op in item.items())
        paths += _bytes(2, _string(1, path) + _bytes(2, encoded))   # Paths.path: NamedPathItem
    return _string(1, doc["swagger"]) + _bytes(2, info) + _bytes(8, paths) + _bytes(9, b"")
