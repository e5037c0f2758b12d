"""Decoding of Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

Typed client-go clients -- ``kubectl create configmap`` among them -- send built-in objects as
protobuf. Only decoding is needed (responses are always JSON, which those clients accept), and only
for the fields of Leases, ConfigMaps, Namespaces, ObjectMeta and the two reviews ``kubectl auth can-i``
and ``kubectl auth whoami`` send (SelfSubjectAccessReview, SelfSubjectReview); the result is the same
dict shape JSON decoding gives, so validation is shared. Field numbers are from k8s.io/api's
``generated.proto``.
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Split a message into (field number, value) pairs; varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            out.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited field")
    return value.decode("utf-8")


def _signed(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise ProtobufError("expected a varint")
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(value: int | bytes, micro: bool) -> str:
    seconds = nanos = 0
    for number, item in _fields(value if isinstance(value, bytes) else b""):
        if number == 1:
            seconds = _signed(item)
        elif number == 2:
            nanos = _signed(item)
    moment = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(
        seconds=seconds, microseconds=nanos // 1000 if micro else 0)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _map(entries: list[int | bytes], binary: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        key, value = "", b""
        for number, item in _fields(entry if isinstance(entry, bytes) else b""):
            if number == 1:
                key = _text(item)
            elif number == 2 and isinstance(item, bytes):
                value = item
        out[key] = base64.b64encode(value).decode() if binary else value.decode("utf-8")
    return out


def _grouped(data: bytes) -> dict[int, list[int | bytes]]:
    groups: dict[int, list[int | bytes]] = {}
    for number, value in _fields(data):
        groups.setdefault(number, []).append(value)
    return groups


def _object_meta(data: bytes) -> dict[str, Any]:
    g = _grouped(data)
    meta: dict[str, Any] = {}
    for number, key in ((1, "name"), (2, "generateName"), (3, "namespace"), (5, "uid"),
                        (6, "resourceVersion")):
        if number in g:
            meta[key] = _text(g[number][-1])
    if 8 in g and g[8][-1] != b"":  # an empty Time is Go's zero time: unset, as JSON would omit it
        meta["creationTimestamp"] = _time(g[8][-1], micro=False)
    if 11 in g:
        meta["labels"] = _map(g[11])
    if 12 in g:
        meta["annotations"] = _map(g[12])
    if 14 in g:
        meta["finalizers"] = [_text(v) for v in g[14]]
    return meta


def _lease(raw: bytes) -> dict[str, Any]:
    g = _grouped(raw)
    obj: dict[str, Any] = {"metadata": _object_meta(g[1][-1]) if 1 in g else {}}  # type: ignore[arg-type]
    spec: dict[str, Any] = {}
    if 2 in g:
        s = _grouped(g[2][-1])  # type: ignore[arg-type]
        if 1 in s:
            spec["holderIdentity"] = _text(s[1][-1])
        if 2 in s:
            spec["leaseDurationSeconds"] = _signed(s[2][-1])
        if 3 in s:
            spec["acquireTime"] = _time(s[3][-1], micro=True)
        if 4 in s:
            spec["renewTime"] = _time(s[4][-1], micro=True)
        if 5 in s:
            spec["leaseTransitions"] = _signed(s[5][-1])
    obj["spec"] = spec
    return obj


def _configmap(raw: bytes) -> dict[str, Any]:
    g = _grouped(raw)
    obj: dict[str, Any] = {"metadata": _object_meta(g[1][-1]) if 1 in g else {}}  # type: ignore[arg-type]
    if 2 in g:
        obj["data"] = _map(g[2])
    if 3 in g:
        obj["binaryData"] = _map(g[3], binary=True)
    if 4 in g:
        obj["immutable"] = bool(g[4][-1])
    return obj


def _namespace(raw: bytes) -> dict[str, Any]:
    g = _grouped(raw)
    obj: dict[str, Any] = {"metadata": _object_meta(g[1][-1]) if 1 in g else {}}  # type: ignore[arg-type]
    if 2 in g:
        spec = _grouped(g[2][-1])  # type: ignore[arg-type]
        obj["spec"] = {"finalizers": [_text(v) for v in spec.get(1, [])]} if 1 in spec else {}
    return obj  # status (field 3) is ignored on create and update anyway


def _strings(data: bytes, names: tuple[tuple[int, str], ...]) -> dict[str, Any]:
    """The non-empty string fields of a message, in the order given (Go's struct order, as JSON has them:
    an empty string is omitted there too)."""
    g = _grouped(data)
    out: dict[str, Any] = {}
    for number, key in names:
        if number in g and _text(g[number][-1]):
            out[key] = _text(g[number][-1])
    return out


def _selector_attributes(data: bytes) -> dict[str, Any]:
    """``fieldSelector`` / ``labelSelector`` of ResourceAttributes: a raw selector or requirements."""
    g = _grouped(data)
    out = _strings(data, ((1, "rawSelector"),))
    requirements = []
    for raw in g.get(2, []):
        item = _grouped(raw if isinstance(raw, bytes) else b"")
        requirement: dict[str, Any] = _strings(raw if isinstance(raw, bytes) else b"", ((1, "key"), (2, "operator")))
        if 3 in item:
            requirement["values"] = [_text(v) for v in item[3]]
        requirements.append(requirement)
    if requirements:
        out["requirements"] = requirements
    return out


_RESOURCE_ATTRIBUTES = ((1, "namespace"), (2, "verb"), (3, "group"), (4, "version"), (5, "resource"),
                        (6, "subresource"), (7, "name"))


def _self_subject_access_review(raw: bytes) -> dict[str, Any]:
    g = _grouped(raw)
    obj: dict[str, Any] = {"metadata": _object_meta(g[1][-1]) if 1 in g else {}}  # type: ignore[arg-type]
    spec: dict[str, Any] = {}
    if 2 in g:
        s = _grouped(g[2][-1])  # type: ignore[arg-type]
        if 1 in s:
            data = s[1][-1] if isinstance(s[1][-1], bytes) else b""
            attributes = _strings(data, _RESOURCE_ATTRIBUTES)
            nested = _grouped(data)
            for number, key in ((8, "fieldSelector"), (9, "labelSelector")):
                if number in nested and isinstance(nested[number][-1], bytes):
                    attributes[key] = _selector_attributes(nested[number][-1])  # type: ignore[arg-type]
            spec["resourceAttributes"] = attributes
        if 2 in s:
            data = s[2][-1] if isinstance(s[2][-1], bytes) else b""
            spec["nonResourceAttributes"] = _strings(data, ((1, "path"), (2, "verb")))
    obj["spec"] = spec
    return obj  # status (field 3) is the server's to fill in


def _self_subject_review(raw: bytes) -> dict[str, Any]:
    g = _grouped(raw)
    return {"metadata": _object_meta(g[1][-1]) if 1 in g else {}}  # type: ignore[arg-type]


def decode(body: bytes) -> dict[str, Any]:
    """Turn an enveloped protobuf Lease, ConfigMap, Namespace, SelfSubjectAccessReview or
    SelfSubjectReview into its JSON-shaped dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    unknown = _grouped(body[len(MAGIC):])
    type_meta = _grouped(unknown[1][-1]) if 1 in unknown else {}  # type: ignore[arg-type]
    api_version = _text(type_meta[1][-1]) if 1 in type_meta else ""
    kind = _text(type_meta[2][-1]) if 2 in type_meta else ""
    raw = unknown.get(2, [b""])[-1]
    if not isinstance(raw, bytes):
        raise ProtobufError("missing raw object")
    if kind == "Lease":
        obj = _lease(raw)
    elif kind == "ConfigMap":
        obj = _configmap(raw)
    elif kind == "Namespace":
        obj = _namespace(raw)
    elif kind == "SelfSubjectAccessReview":
        obj = _self_subject_access_review(raw)
    elif kind == "SelfSubjectReview":
        obj = _self_subject_review(raw)
    else:
        raise ProtobufError(f"protobuf decoding of kind {kind!r} is not supported; send JSON")
    return {"kind": kind, "apiVersion": api_version, **obj}
