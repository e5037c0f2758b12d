"""Decoding (400) and validation (422) of request bodies, following kube-apiserver's split.

kube-apiserver first *decodes* JSON into Go structs -- a wrong JSON type, an unparseable MicroTime or
bad base64 is a 400 BadRequest "cannot be handled as a Lease" -- and only then *validates* the typed
object, reporting every broken rule at once as a 422 Invalid with ``details.causes``. Unknown fields are
dropped at decode time (with a warning, or a 400 under ``fieldValidation=Strict``), so they are never
stored. Keeping the two stages separate keeps both the status codes and the messages faithful.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
from typing import Any

from . import microtime
from .resources import CONFIGMAPS, LEASES, NAMESPACES, Resource, Schema
from .status import ApiError, bad_request, invalid

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+\Z")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
    "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
_IMMUTABLE_MSG = "Forbidden: field is immutable when `immutable` is set"
_ANNOTATIONS_LIMIT = 256 * 1024
_CONFIGMAP_LIMIT = 1024 * 1024

Cause = tuple[str, str, str]  # (reason, field, message)


def is_subdomain(name: str) -> bool:
    return len(name) <= 253 and _DNS1123_SUBDOMAIN.match(name) is not None


def is_namespace_name(name: str) -> bool:
    return len(name) <= 63 and _DNS1123_LABEL.match(name) is not None


def qualified_name_problems(key: str) -> list[str]:
    """Why ``key`` is not a valid label/annotation key (``prefix/name``); empty when valid."""
    problems: list[str] = []
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        problems.append("prefix part must be non-empty")
    elif slash and not is_subdomain(prefix):
        problems.append("prefix part " + SUBDOMAIN_MSG)
    if not name:
        problems.append("name part must be non-empty")
    else:
        if len(name) > 63:
            problems.append("name part must be no more than 63 characters")
        if not _QUALIFIED_NAME.match(name):
            problems.append(_NAME_PART_MSG)
    return problems


def label_value_problems(value: str) -> list[str]:
    problems: list[str] = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        problems.append(_LABEL_VALUE_MSG)
    return problems


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- decoding (400)

_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "bool", int: "number",
                    float: "number"}
_GO_TYPES = {"string": "string", "int32": "int32", "int64": "int64", "bool": "bool",
             "microtime": "v1.MicroTime", "time": "v1.Time", "bytes": "[]uint8", "any": "any"}
_INT_BOUNDS = {"int32": 2**31, "int64": 2**63}


class _DecodeError(Exception):
    pass


def _decode_value(value: Any, node: Schema, path: str, struct: str, unknown: list[str]) -> Any:
    """Type-check ``value`` against ``node``; returns the (possibly normalised) value."""
    if value is None:
        return None
    if isinstance(node, tuple):
        shape = node[0]
        if shape == "struct":
            if not isinstance(value, dict):
                raise _DecodeError(_mismatch(value, f"{struct}.{path}" if path else None, node[1]))
            fields: dict[str, Schema] = node[2]
            decoded_fields: dict[str, Any] = {}
            for key, item in value.items():
                sub = fields.get(key)
                child = f"{path}.{key}" if path else key
                if sub is None:
                    unknown.append(child)
                    continue
                decoded = _decode_value(item, sub, child, node[1], unknown)
                if decoded is not None:
                    decoded_fields[key] = decoded
            # Go writes struct fields in declaration order, whatever order the client used.
            return {key: decoded_fields[key] for key in fields if key in decoded_fields}
        if shape == "map":
            if not isinstance(value, dict):
                raise _DecodeError(_mismatch(value, f"{struct}.{path}", "map[string]string"))
            return {k: ("" if v is None else _decode_value(v, node[1], path, struct, unknown))
                    for k, v in value.items()}
        if not isinstance(value, list):  # list
            raise _DecodeError(_mismatch(value, f"{struct}.{path}", "[]" + _GO_TYPES.get(node[1], "any")))
        return [_decode_value(v, node[1], path, struct, unknown) for v in value]
    if node == "any":
        return value
    if node == "string":
        if not isinstance(value, str):
            raise _DecodeError(_mismatch(value, f"{struct}.{path}", _GO_TYPES[node]))
        return value
    if node == "time":
        if not isinstance(value, str):
            raise _DecodeError(_mismatch(value, f"{struct}.{path}", _GO_TYPES[node]))
        return _rfc3339(value)
    if node == "microtime":
        if not isinstance(value, str):
            raise _DecodeError(_mismatch(value, f"{struct}.{path}", _GO_TYPES[node]))
        try:
            return microtime.normalize(value)
        except microtime.MicroTimeError as exc:
            raise _DecodeError(str(exc)) from None
    if node == "bool":
        if not isinstance(value, bool):
            raise _DecodeError(_mismatch(value, f"{struct}.{path}", "bool"))
        return value
    if node == "bytes":
        if not isinstance(value, str):
            raise _DecodeError(_mismatch(value, f"{struct}.{path}", "[]uint8"))
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _DecodeError("illegal base64 data at input byte 0") from None
        return value
    # int32 / int64
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _DecodeError(_mismatch(value, f"{struct}.{path}", node))
    if isinstance(value, float):
        if not value.is_integer():
            raise _DecodeError(f"json: cannot unmarshal number {value!r} into Go struct field "
                               f"{struct}.{path} of type {node}")
        value = int(value)
    bound = _INT_BOUNDS[node]
    if not -bound <= value < bound:
        raise _DecodeError(f"json: cannot unmarshal number {value} into Go struct field "
                           f"{struct}.{path} of type {node}")
    return value


def _rfc3339(value: str) -> str:
    """A metav1.Time as Go re-serialises it: UTC, whole seconds, ``Z``."""
    if value == "":
        return value
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise _DecodeError(f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse '
                           f'"{value}" as "2006"') from None
    if moment.tzinfo is None:
        raise _DecodeError(f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "Z07:00"')
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mismatch(value: Any, where: str | None, go_type: str) -> str:
    jtype = _JSON_TYPE_NAMES.get(type(value), "value")
    if where is None:
        return f"json: cannot unmarshal {jtype} into Go value of type struct {{ APIVersion string; Kind string }}"
    return f"json: cannot unmarshal {jtype} into Go struct field {where} of type {go_type}"


def decode_error(resource: Resource, detail: str) -> ApiError:
    return bad_request(f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                       f"{resource.kind}: {detail}")


def decode(resource: Resource, body: Any) -> tuple[dict[str, Any], list[str]]:
    """Decode a parsed JSON body into a clean object; returns it and the unknown field paths.

    ``kind``/``apiVersion`` default to the URL's; a different group/version or kind is rejected the
    way kube-apiserver rejects it.
    """
    if not isinstance(body, dict):
        raise decode_error(resource, _mismatch(body, None, ""))
    kind = body.get("kind") or resource.kind
    api_version = body.get("apiVersion") or resource.api_version
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise decode_error(resource, "json: cannot unmarshal into Go struct field .kind of type string")
    if api_version != resource.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match the expected "
                          f"API version ({resource.api_version})")
    if kind != resource.kind:
        raise decode_error(resource, f'no kind "{kind}" is registered for version '
                                     f'"{resource.api_version}" in scheme '
                                     f'"k8s.io/apimachinery/pkg/runtime/scheme.go:100"')
    unknown: list[str] = []
    try:
        decoded = _decode_value(body, resource.schema, "", resource.kind, unknown)
    except _DecodeError as exc:
        raise decode_error(resource, str(exc)) from None
    decoded.pop("kind", None)
    decoded.pop("apiVersion", None)
    decoded.setdefault("metadata", {})
    if resource is LEASES:
        spec = decoded.setdefault("spec", {})
        # The CoordinatedLeaderElection feature gate is off by default: these are silently dropped.
        spec.pop("strategy", None)
        spec.pop("preferredHolder", None)
    return decoded, unknown


# --------------------------------------------------------------------------- validation (422)

def _meta_causes(meta: dict[str, Any], label_name: bool = False) -> list[Cause]:
    """Metadata rules; ``label_name`` for Namespaces, whose names are RFC 1123 labels."""
    causes: list[Cause] = []
    name = meta.get("name", "")
    if not name:
        causes.append(("FieldValueRequired", "metadata.name",
                       "Required value: name or generateName is required"))
    elif label_name:
        if len(name) > 63:
            causes.append(("FieldValueInvalid", "metadata.name",
                           f"Invalid value: {_quote(name)}: must be no more than 63 characters"))
        if not _DNS1123_LABEL.match(name):
            causes.append(("FieldValueInvalid", "metadata.name", f"Invalid value: {_quote(name)}: {LABEL_MSG}"))
    else:
        if len(name) > 253:
            causes.append(("FieldValueInvalid", "metadata.name",
                           f"Invalid value: {_quote(name)}: must be no more than 253 characters"))
        if not _DNS1123_SUBDOMAIN.match(name):
            causes.append(("FieldValueInvalid", "metadata.name",
                           f"Invalid value: {_quote(name)}: {SUBDOMAIN_MSG}"))
    for key, value in (meta.get("labels") or {}).items():
        for problem in qualified_name_problems(key):
            causes.append(("FieldValueInvalid", "metadata.labels", f"Invalid value: {_quote(key)}: {problem}"))
        for problem in label_value_problems(value):
            causes.append(("FieldValueInvalid", "metadata.labels",
                           f"Invalid value: {_quote(value)}: {problem}"))
    annotations = meta.get("annotations") or {}
    size = 0
    for key, value in annotations.items():
        size += len(key) + len(value)
        for problem in qualified_name_problems(key.lower()):
            causes.append(("FieldValueInvalid", "metadata.annotations",
                           f"Invalid value: {_quote(key)}: {problem}"))
    if size > _ANNOTATIONS_LIMIT:
        causes.append(("FieldValueTooLong", "metadata.annotations",
                       f"Too long: may not be more than {_ANNOTATIONS_LIMIT} bytes"))
    return causes


def _lease_causes(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        causes.append(("FieldValueInvalid", "spec.leaseDurationSeconds",
                       f"Invalid value: {duration}: must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        causes.append(("FieldValueInvalid", "spec.leaseTransitions",
                       f"Invalid value: {transitions}: must be greater than or equal to 0"))
    return causes


def _configmap_causes(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    size = 0
    for section, entries in (("data", data), ("binaryData", binary)):
        for key, value in entries.items():
            size += len(value)
            field = f"{section}[{key}]"
            if len(key) > 253:
                causes.append(("FieldValueInvalid", field,
                               f"Invalid value: {_quote(key)}: must be no more than 253 characters"))
            if not _CONFIG_KEY.match(key):
                causes.append(("FieldValueInvalid", field, f"Invalid value: {_quote(key)}: {_CONFIG_KEY_MSG}"))
            if key in (".", ".."):
                causes.append(("FieldValueInvalid", field,
                               f"Invalid value: {_quote(key)}: must not be '.' or '..'"))
            if section == "data" and key in binary:
                causes.append(("FieldValueInvalid", field,
                               f"Invalid value: {_quote(key)}: duplicate of key present in binaryData"))
    if size > _CONFIGMAP_LIMIT:
        causes.append(("FieldValueTooLong", "", f"Too long: must have at most {_CONFIGMAP_LIMIT} bytes"))
    if old is not None and old.get("immutable"):
        if obj.get("immutable") is not True:
            causes.append(("FieldValueForbidden", "immutable", _IMMUTABLE_MSG))
        if data != (old.get("data") or {}):
            causes.append(("FieldValueForbidden", "data", _IMMUTABLE_MSG))
        if binary != (old.get("binaryData") or {}):
            causes.append(("FieldValueForbidden", "binaryData", _IMMUTABLE_MSG))
    return causes


def validate(resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Raise a 422 listing every broken rule; ``old`` is the stored object on updates."""
    causes = _meta_causes(obj["metadata"], label_name=resource is NAMESPACES)
    if resource is LEASES:
        causes += _lease_causes(obj.get("spec") or {})
    elif resource is CONFIGMAPS:
        causes += _configmap_causes(obj, old)
    if causes:
        name = obj["metadata"].get("name", "")
        raise invalid(resource.kind_label, name, resource.group, resource.kind, causes)
