"""``SelfSubjectAccessReview`` and ``SelfSubjectReview``: "may I?" and "who am I?", answered as the
admin the dev-server is.

The dev-server has no authentication and no authorization: every client can do everything. These two
reviews say so in the API's own terms, so that ``kubectl auth can-i create leases`` prints ``yes`` and
``kubectl auth whoami`` shows a user, as they do against kube-apiserver, instead of failing with a 404
that looks like a broken server. The user reported is the one ``--kube-assets`` puts in its kubeconfig
(``shardlease-admin`` in ``system:masters``), so both servers answer ``whoami`` alike.

Wire format, checked against kube-apiserver 1.36.3 (docs/fidelity.md): ``POST`` only (anything else
405), answer 201 with the request's spec echoed; a SelfSubjectAccessReview carries the ``managedFields``
entry of the request (``Update`` by the client's field manager) and ``status: {"allowed": true}``; a
SelfSubjectReview carries only ``metadata.creationTimestamp`` and ``status.userInfo``. A review with
neither or both of ``resourceAttributes`` / ``nonResourceAttributes``, or with metadata, is refused
with the same 422 as there. Bodies are read as JSON or protobuf (kubectl sends protobuf); the answer is
JSON, which kubectl accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import fieldmanager, protobuf
from .httpserver import Request, Response, json_response, parse_json
from .microtime import now_rfc3339
from .status import ApiError, bad_request

__all__ = ["ACCESS", "ALL", "BY_PATH", "USER", "WHOAMI", "Review", "handle"]

#: Who the dev-server says its client is: the admin user of the ``--kube-assets`` kubeconfig.
USER: dict[str, Any] = {"username": "shardlease-admin", "uid": "shardlease-admin",
                        "groups": ["system:masters", "system:authenticated"]}

PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass(frozen=True)
class Review:
    """A create-only, cluster-scoped review type (nothing is stored)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def path(self) -> str:
        return f"/apis/{self.api_version}/{self.plural}"

    def discovery_entry(self) -> dict[str, Any]:
        """As kube-apiserver lists it: no short names, no storage version hash (nothing is stored)."""
        return {"name": self.plural, "singularName": self.singular, "namespaced": False, "kind": self.kind,
                "verbs": ["create"]}


ACCESS = Review("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
                "SelfSubjectAccessReview")
WHOAMI = Review("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview")
#: In kube-apiserver's discovery order (authentication.k8s.io comes first).
ALL: tuple[Review, ...] = (WHOAMI, ACCESS)
BY_PATH: dict[str, Review] = {review.path: review for review in ALL}


def handle(review: Review, request: Request) -> Response:
    """Answer one POST of ``review`` (the caller has checked the method)."""
    obj = _decode(review, request)
    if review is WHOAMI:
        return json_response(201, {"kind": review.kind, "apiVersion": review.api_version,
                                   "metadata": {"creationTimestamp": now_rfc3339()},
                                   "status": {"userInfo": dict(USER)}})
    manager = fieldmanager.manager_name(request.query, request.headers.get("user-agent", ""))
    return json_response(201, _access(obj, manager))


def _decode(review: Review, request: Request) -> dict[str, Any]:
    """The request body as a dict, refused the way kube-apiserver refuses a body it cannot read."""

    def cannot(detail: str) -> ApiError:
        return bad_request(f'{review.kind} in version "{review.version}" cannot be handled as a '
                           f"{review.kind}: {detail}")

    body = request.body
    if request.headers.get("content-type", "").startswith(PROTOBUF):
        try:
            obj = protobuf.decode(body)
        except (protobuf.ProtobufError, UnicodeDecodeError) as exc:
            raise cannot(f"unable to decode protobuf: {exc}") from None
    else:
        if not body.strip():
            raise cannot("Object 'Kind' is missing in ''")
        try:
            obj = parse_json(body)
        except ValueError as exc:
            raise cannot(f"invalid character in JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise cannot("json: cannot unmarshal array into Go value of type struct")
    api_version = obj.get("apiVersion") or review.api_version
    kind = obj.get("kind") or review.kind
    if api_version != review.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match the expected "
                          f"API version ({review.api_version})")
    if kind != review.kind:
        raise cannot(f'no kind "{kind}" is registered for version "{review.api_version}" in scheme '
                     f'"k8s.io/apimachinery/pkg/runtime/scheme.go:100"')
    return obj


def _paths(node: Any, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The fields set in ``node`` (a map is itself a field when it has members), as managedFields
    counts them; empty values are absent, as Go's ``omitempty`` leaves them."""
    out: set[tuple[str, ...]] = set()
    if not isinstance(node, dict):
        return out
    for key, value in node.items():
        if value in (None, "", {}, [], False):
            continue
        out.add(prefix + (key,))
        if isinstance(value, dict):
            out |= _paths(value, prefix + (key,))
    return out


#: ObjectMeta's fields in Go struct order: how kube prints metadata in the "must be empty" error.
_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields")


_RESOURCE_FIELDS = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
_SELECTOR_FIELDS = ("fieldSelector", "labelSelector")


def _strings(node: Any, names: tuple[str, ...], where: str) -> dict[str, Any]:
    """The string fields ``names`` of ``node`` in that (Go struct) order, empty ones left out, anything
    else dropped as kube's decoder drops unknown fields; a non-string is refused as Go refuses it."""
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise bad_request(f'{ACCESS.kind} in version "{ACCESS.version}" cannot be handled as a {ACCESS.kind}: '
                          f"json: cannot unmarshal {_json_type(node)} into Go struct field "
                          f"{ACCESS.kind}.{where} of type object")
    out: dict[str, Any] = {}
    for name in names:
        value = node.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise bad_request(f'{ACCESS.kind} in version "{ACCESS.version}" cannot be handled as a '
                              f"{ACCESS.kind}: json: cannot unmarshal {_json_type(value)} into Go struct field "
                              f"{ACCESS.kind}.{where}.{name} of type string")
        out[name] = value
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _spec(raw: Any) -> dict[str, Any]:
    """The spec as kube echoes it: known fields only, in Go struct order."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_request(f'{ACCESS.kind} in version "{ACCESS.version}" cannot be handled as a {ACCESS.kind}: '
                          f"json: cannot unmarshal {_json_type(raw)} into Go struct field {ACCESS.kind}.spec of "
                          f"type v1.SelfSubjectAccessReviewSpec")
    spec: dict[str, Any] = {}
    resource = raw.get("resourceAttributes")
    if resource is not None:
        where = "spec.resourceAttributes"
        attributes = _strings(resource, _RESOURCE_FIELDS, where)
        for name in _SELECTOR_FIELDS:
            selector = resource.get(name) if isinstance(resource, dict) else None
            if selector is None:
                continue
            shown = _strings(selector, ("rawSelector",), f"{where}.{name}")
            requirements = selector.get("requirements") if isinstance(selector, dict) else None
            if isinstance(requirements, list) and requirements:
                shown["requirements"] = [
                    {**_strings(item, ("key", "operator"), f"{where}.{name}.requirements"),
                     **({"values": item["values"]} if isinstance(item, dict) and item.get("values") else {})}
                    for item in requirements]
            attributes[name] = shown
        spec["resourceAttributes"] = attributes
    non_resource = raw.get("nonResourceAttributes")
    if non_resource is not None:
        spec["nonResourceAttributes"] = _strings(non_resource, ("path", "verb"), "spec.nonResourceAttributes")
    return spec


def _access(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    spec = _spec(obj.get("spec"))
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    # The request's own field ownership, as kube's create path records it for any object.
    tracked_meta = {key: value for key, value in metadata.items() if key in ("labels", "annotations")}
    owned = _paths({"metadata": tracked_meta, "spec": spec, "status": status}, ())
    owned -= {("metadata",), ("spec",), ("status",)}
    entry = {"manager": manager, "operation": "Update", "apiVersion": ACCESS.api_version, "time": now_rfc3339(),
             "fieldsType": "FieldsV1", "fieldsV1": fieldmanager.encode_fields(owned)}
    meta_out: dict[str, Any] = {"managedFields": [entry]} if owned else {}
    if any(value not in (None, "", {}, []) for value in metadata.values()):
        shown = {key: metadata[key] for key in _META_ORDER if metadata.get(key) not in (None, "", {}, [])}
        shown["managedFields"] = [entry]
        _invalid("metadata", json.dumps(shown, separators=(",", ":")), "must be empty")
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if resource is None and non_resource is None:
        _invalid("spec.resourceAttributes", "null",
                 "exactly one of nonResourceAttributes or resourceAttributes must be specified")
    if resource is not None and non_resource is not None:
        shown_non = non_resource if isinstance(non_resource, dict) else {}
        value = json.dumps({"Path": shown_non.get("path", ""), "Verb": shown_non.get("verb", "")},
                           separators=(",", ":"))
        _invalid("spec.nonResourceAttributes", value, "cannot be specified in combination with resourceAttributes")
    return {"kind": ACCESS.kind, "apiVersion": ACCESS.api_version, "metadata": meta_out, "spec": spec,
            "status": {"allowed": True}}


def _invalid(field: str, value: str, why: str) -> None:
    """Raise kube's 422 for a review: its message leads with ``.authorization.k8s.io ""`` because the
    internal type has neither a kind nor a name."""
    message = f"Invalid value: {value}: {why}"
    raise ApiError(422, f'.{ACCESS.group} "" is invalid: {field}: {message}', "Invalid",
                   {"group": ACCESS.group, "causes": [{"reason": "FieldValueInvalid", "message": message,
                                                       "field": field}]})
