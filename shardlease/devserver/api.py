"""Request routing and the Kubernetes verbs: HTTP requests in, store calls, Status or objects out.

Paths follow kube-apiserver: ``/api/v1`` (core) and ``/apis/coordination.k8s.io/v1``, each with
``namespaces/{ns}/{plural}[/{name}]``, the all-namespaces ``{plural}`` list, and the deprecated
``watch/`` prefix. Any valid namespace name is accepted without a Namespace object (the dev-server has
no namespace lifecycle); an invalid one answers like a missing namespace does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from . import admin, discovery, fieldmanager, namespaces, openapi, protobuf, reviews, shardselector, tables
from .counters import RequestCounter
from .faults import Faults
from .httpserver import Request, Response, Stream, json_response, parse_json
from .patch import PatchError, PatchTestFailed, json_patch, merge_patch
from .resources import BY_PATH, NAMESPACES, Resource
from .selectors import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector
from .status import ApiError, bad_request, method_not_allowed, path_not_found, success_status
from .store import Expired, Store, Stored, Track, dumps
from .validation import decode, decode_error, is_namespace_name
from .watch import Watcher, error_event

log = logging.getLogger("shardlease.devserver")
_EVERYTHING_LABELS = parse_label_selector("")
_EVERYTHING_FIELDS = parse_field_selector("")

_TRUE = frozenset(("1", "t", "T", "true", "TRUE", "True"))
_FALSE = frozenset(("", "0", "f", "F", "false", "FALSE", "False"))
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml")
PROTOBUF = "application/vnd.kubernetes.protobuf"
_HEALTH = frozenset(("/healthz", "/readyz", "/livez"))
_REVIEW_GROUPS = {f"/apis/{review.group}": review for review in reviews.ALL}
_REVIEW_VERSIONS = {f"/apis/{review.api_version}": review for review in reviews.ALL}
#: Distinct unserved resources reported at most (a client inventing paths cannot grow the set for ever).
_UNSERVED_LIMIT = 1000
#: What the unserved-type line lists.
SERVED = "Leases, ConfigMaps, Namespaces, SelfSubjectAccessReviews and SelfSubjectReviews"


def unserved_resource(path: str) -> tuple[str, str, str] | None:
    """``(group, version, resource)`` a resource path names (resource ``""`` for a group version's
    discovery), when this server does not serve it; ``None`` for a served type or a path that names no
    type at all (``/nothing``, a sub-resource of a served type)."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else ""), parts[3:]
    else:
        return None
    if rest[:1] == ["watch"]:
        rest = rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        plural = rest[2]
    elif rest:
        plural = rest[0]
    else:
        plural = ""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if (prefix, plural) in BY_PATH or f"{prefix}/{plural}" in reviews.BY_PATH:
        return None
    if not plural and (prefix in _REVIEW_VERSIONS or prefix in ("/api/v1", "/apis/coordination.k8s.io/v1")):
        return None
    if (group, version, plural) == ("", "v1", "events"):
        return None
    return group, version, plural


def _bool(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bad_request(f'{name}: Invalid value: "{value}": strconv.ParseBool: parsing "{value}": '
                      f"invalid syntax")


def _int(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{value}": strconv.ParseInt: parsing "{value}": '
                          f"invalid syntax") from None
    if number < 0:
        raise bad_request(f"{name}: Invalid value: {number}: must be greater than or equal to 0")
    return number


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun")
    if value is None or value == "":
        return False
    if value != "All":
        raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return True


def _json_body(resource: Resource, request: Request) -> Any:
    """The decoded body: JSON (also for a missing Content-Type, as the Python client sends none),
    or protobuf as typed client-go clients send it."""
    body = request.body
    if request.headers.get("content-type", "").startswith(PROTOBUF):
        try:
            return protobuf.decode(body)
        except (protobuf.ProtobufError, UnicodeDecodeError) as exc:
            raise decode_error(resource, f"unable to decode protobuf: {exc}") from None
    if not body.strip():
        raise decode_error(resource, "Object 'Kind' is missing in ''")
    try:
        return parse_json(body)
    except ValueError as exc:
        raise decode_error(resource, f"invalid character in JSON: {exc}") from None


def _ok(payload: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, payload, headers=headers or {})


def _error(exc: ApiError) -> Response:
    return Response(exc.code, dumps(exc.status()), headers=exc.headers)


class Api:
    """All HTTP endpoints of one DevServer."""

    def __init__(self, store: Store, faults: Faults, counter: RequestCounter, *, admin: bool,
                 bookmark_interval: float, address: Callable[[], str],
                 strict_namespaces: bool = False, feature_gates: Mapping[str, bool] | None = None) -> None:
        self.store = store
        #: Effective feature gates (see shardselector.check_feature_gates); read per request.
        self.feature_gates = dict(feature_gates or {})
        self.strict_namespaces = strict_namespaces
        self.faults = faults
        self.counter = counter
        self.admin = admin
        self.bookmark_interval = bookmark_interval
        self.address = address
        self.watchers: set[Watcher] = set()
        #: Unserved resources already reported (see _unserved): one log line each, not one per request.
        self.unserved_reported: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ entry point

    async def handle(self, request: Request, stream: Stream) -> Response | None:
        path = request.path.rstrip("/") or "/"
        try:
            if path.startswith("/_shardlease/"):
                if not self.admin:
                    raise path_not_found()
                return admin.handle(request, path, self.faults, self.counter, self.store)
            if path in _HEALTH or path.startswith(("/healthz/", "/readyz/", "/livez/")):
                return Response(200, b"ok", "text/plain; charset=utf-8")
            static = self._static(request, path)
            if static is not None:
                return static
            return await self._api(request, stream, path)
        except ApiError as exc:
            return _error(exc)
        except Exception as exc:  # never let a bug kill the connection loop or corrupt state
            log.exception("internal error serving %s %s", request.method, request.path)
            return _error(ApiError(500, f"Internal error occurred: {exc!r}", "InternalError"))

    def _static(self, request: Request, path: str) -> Response | None:
        if path == "/version":
            payload: Any = discovery.VERSION_INFO
        elif path == "/api":
            payload = discovery.api_versions(self.address())
        elif path == "/apis":
            payload = discovery.api_group_list()
        elif path == "/apis/coordination.k8s.io":
            payload = discovery.coordination_group()
        elif path == "/apis/coordination.k8s.io/v1":
            payload = discovery.coordination_resources()
        elif path == "/api/v1":
            payload = discovery.core_resources()
        elif path in _REVIEW_GROUPS:
            payload = discovery.review_group(_REVIEW_GROUPS[path])
        elif path in _REVIEW_VERSIONS:
            payload = discovery.review_resources(_REVIEW_VERSIONS[path])
        elif path == "/openapi/v2":
            if request.method != "GET":
                raise method_not_allowed(request.method)
            protobuf_wanted = openapi.wants_v2_protobuf(request.headers.get("accept", ""))
            if protobuf_wanted is None:
                return Response(406, b"", "text/plain; charset=utf-8")
            if protobuf_wanted:
                return Response(200, openapi.swagger_v2_protobuf(), openapi.V2_PROTOBUF)
            payload = openapi.swagger_v2()
        elif path == "/openapi/v3":
            payload = openapi.index()
        elif path.startswith("/openapi/v3/"):
            payload = openapi.group_document(path[len("/openapi/v3/"):])
            if payload is None:
                raise path_not_found()
        else:
            return None
        if request.method != "GET":
            raise method_not_allowed(request.method)
        return json_response(200, payload)

    # ------------------------------------------------------------------ routing

    async def _api(self, request: Request, stream: Stream, path: str) -> Response | None:
        if path.startswith("/api/v1/"):
            prefix, rest = "/api/v1", path[8:]
        elif path.startswith("/apis/coordination.k8s.io/v1/"):
            prefix, rest = "/apis/coordination.k8s.io/v1", path[29:]
        elif path in reviews.BY_PATH:
            return await self._review(request, stream, reviews.BY_PATH[path])
        else:
            self._unserved(request, path)
            raise path_not_found()
        parts = rest.split("/")
        watch_path = parts[0] == "watch"
        if watch_path:
            parts = parts[1:]
        namespace: str | None = None
        name: str | None = None
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, plural, name = parts[1], parts[2], (parts[3] if len(parts) > 3 else None)
            if len(parts) > 4:
                raise path_not_found()
        elif len(parts) == 1:
            plural = parts[0]
        elif len(parts) == 2:
            plural, name = parts
        else:
            raise path_not_found()
        resource = BY_PATH.get((prefix, plural))
        if resource is not None and resource.namespaced == (namespace is None) and (
                name is not None or not resource.namespaced):
            # /namespaces/x/namespaces, /configmaps/x: a scope the resource does not have
            raise path_not_found()
        if resource is None and (prefix != "/api/v1" or plural != "events" or
                                 (namespace is None and name is not None)):
            if plural != "events":
                self._unserved(request, path)
            raise path_not_found()
        if resource is not None and not resource.namespaced:
            namespace = ""
        method = request.method
        query = request.query
        if resource is None:
            if method != "GET":
                raise method_not_allowed(method)
            verb = "get" if name else "list"
        elif name is None:
            if method == "GET":
                watching = watch_path or _bool(query, "watch")
                verb = "watch" if watching else "list"
            elif watch_path:
                raise method_not_allowed(method)
            elif method == "POST" and namespace is not None:
                verb = "create"
            elif method == "DELETE" and namespace and resource.namespaced:
                verb = "deletecollection"
            else:
                raise method_not_allowed(method)
        else:
            if watch_path:
                if method != "GET":
                    raise method_not_allowed(method)
                verb = "watch"
            else:
                verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "")
                if not verb:
                    raise method_not_allowed(method)
        self.counter.add(verb, plural)
        verdict = self.faults.verdict(request.client)
        if verdict.drop:
            stream.abort()
            return None
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        if verdict.error is not None:
            return _error(verdict.error)
        if resource is None:
            return self._events(name)
        if verb == "watch":
            await self._watch(request, stream, resource, namespace or None, name)
            return None
        handler = getattr(self, "_" + verb)
        response: Response | None = handler(request, resource, namespace or None if verb == "list" else namespace, name)
        return response

    async def _review(self, request: Request, stream: Stream, review: reviews.Review) -> Response | None:
        """A SelfSubjectAccessReview or SelfSubjectReview: create-only, subject to faults like any request."""
        if request.method != "POST":
            raise method_not_allowed(request.method)
        self.counter.add("create", review.plural)
        verdict = self.faults.verdict(request.client)
        if verdict.drop:
            stream.abort()
            return None
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        if verdict.error is not None:
            return _error(verdict.error)
        return reviews.handle(review, request)

    def _unserved(self, request: Request, path: str) -> None:
        """Say, once per resource, that a request asked for a type this server does not serve.

        The answer stays kube-apiserver's 404 (clients branch on it), but a bare "the server could not
        find the requested resource" from a server that looks like Kubernetes sends users hunting for
        a typo; this line names the type and the way to a server that has it.
        """
        what = unserved_resource(path)
        if what is None or what in self.unserved_reported or len(self.unserved_reported) >= _UNSERVED_LIMIT:
            return
        self.unserved_reported.add(what)
        group, version, plural = what
        group_version = f"{group}/{version}" if group else version
        if plural:
            subject = f"{group_version} {plural}"
        else:
            subject = f"API group version {group_version}" if version else f"API group {group}"
        log.warning("%s %s: %s is not served by the embedded dev-server (it serves %s) and was answered 404 "
                    "NotFound, as kube-apiserver answers for a type it does not know; for every other type run "
                    "a real kube-apiserver: shardlease dev-server --kube-assets DIR (DIR built by "
                    "scripts/build-kube-assets). Said once per resource.",
                    request.method, path, subject, SERVED)

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _selectors(query: dict[str, str], name: str | None = None) -> tuple[LabelSelector, FieldSelector]:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        if name is not None:
            fields = FieldSelector(fields.requirements + (("metadata.name", True, name),))
        return labels, fields

    def _get(self, request: Request, resource: Resource, namespace: str, name: str) -> Response:
        stored = self.store.get(resource, namespace, name)
        if tables.wants_table(request.headers.get("accept", "")):
            include = request.query.get("includeObject", "Metadata")
            return json_response(200, tables.table(resource, [stored], None, include))
        return _ok(stored.raw)

    def _list(self, request: Request, resource: Resource, namespace: str | None, _: None) -> Response:
        query = request.query
        labels, fields = self._selectors(query)
        limit = _int(query, "limit") or 0
        _int(query, "timeoutSeconds")  # validated like kube-apiserver does, though a list is instant
        shard = shardselector.from_query(query, self.feature_gates)
        if shard is None:
            items, rv, token, remaining = self.store.list(resource, namespace, labels, fields, limit,
                                                          query.get("continue", ""))
        else:
            items, rv, token, remaining = self._sharded_list(resource, namespace, labels, fields, limit,
                                                             query.get("continue", ""), shard)
        if tables.wants_table(request.headers.get("accept", "")):
            include = query.get("includeObject", "Metadata")
            return json_response(200, tables.table(resource, items, rv, include, True, token, remaining))
        return _ok(self._list_bytes(resource.api_version, resource.list_kind, rv, items, token, remaining,
                                    None if shard is None else str(shard)))

    def _sharded_list(self, resource: Resource, namespace: str | None, labels: LabelSelector,
                      fields: FieldSelector, limit: int, continue_token: str,
                      shard: shardselector.ShardSelector) -> tuple[list[Stored], int, str, int | None]:
        """A list page under a shard selector, paged the way kube-apiserver's watch cache pages it:
        see :func:`shardselector.page`. ``remainingItemCount`` is reported only without label and
        field selectors, as for any list."""
        everything, rv, _, _ = self.store.list(resource, namespace, _EVERYTHING_LABELS, _EVERYTHING_FIELDS,
                                               0, continue_token)
        selected, more, remaining = shardselector.page(everything, shard, limit, lambda s: (
            fields.matches(s.obj["metadata"].get("namespace", ""), s.obj["metadata"]["name"]) and labels.matches(s.labels)))
        token = ""
        if more:
            last = selected[-1].obj["metadata"]
            # store.py's token format, so a continue from here resumes in store.list as any other
            token = self.store._encode_continue(rv, last.get("namespace", ""), last["name"])
        return selected, rv, token, remaining if labels.empty and fields.empty else None

    @staticmethod
    def _list_bytes(api_version: str, list_kind: str, rv: int, items: list[Stored], token: str = "",
                    remaining: int | None = None, shard_info: str | None = None) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        if shard_info is not None:
            meta["shardInfo"] = {"selector": shard_info}
        head = dumps({"kind": list_kind, "apiVersion": api_version, "metadata": meta})
        return head[:-1] + b',"items":[' + b",".join(s.item_bytes() for s in items) + b"]}"

    def _events(self, name: str | None) -> Response:
        """Events: none are ever recorded, so every list is empty and every get is a 404."""
        if name is not None:
            raise ApiError(404, f'events "{name}" not found', "NotFound", {"name": name, "kind": "events"})
        return json_response(200, {"kind": "EventList", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": str(self.store.rv)}, "items": []})

    # ------------------------------------------------------------------ writes

    def _decode_body(self, request: Request, resource: Resource, body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """Decode and apply ``fieldValidation``; returns the object and the response headers."""
        mode = request.query.get("fieldValidation", "") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'fieldValidation: Unsupported value: "{mode}": supported values: '
                              f'"Ignore", "Strict", "Warn"')
        obj, unknown = decode(resource, body)
        headers: dict[str, str] = {}
        if unknown:
            if mode == "Strict":
                raise decode_error(resource, "strict decoding error: " +
                                   ", ".join(f'unknown field "{f}"' for f in unknown))
            if mode == "Warn":
                headers["Warning"] = ", ".join(
                    f'299 - "unknown field \\"{f}\\""' for f in unknown)
        return obj, headers

    def _check_namespace(self, resource: Resource, namespace: str, obj: dict[str, Any]) -> None:
        """The body's namespace must match the URL's (cluster-scoped objects have none)."""
        if not resource.namespaced:
            obj["metadata"].pop("namespace", None)
            return
        if not is_namespace_name(namespace):
            raise namespaces.not_found(namespace)
        body_ns = obj["metadata"].get("namespace")
        if body_ns and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace "
                              "sent on the request")

    def _before_create(self, resource: Resource, namespace: str, obj: dict[str, Any],
                       dry_run: bool) -> None:
        """Namespace lifecycle for a write that creates ``obj``: see namespaces.py."""
        if resource is NAMESPACES:
            namespaces.prepare_create(obj)
        else:
            namespaces.ensure(self.store, namespace, self.strict_namespaces, dry_run)

    @staticmethod
    def _check_name(obj: dict[str, Any], name: str) -> None:
        body_name = obj["metadata"].get("name", "")
        if body_name != name:
            raise bad_request(f"the name of the object ({body_name}) does not match the name on the "
                              f"URL ({name})")

    @staticmethod
    def _check_content_type(request: Request, resource: Resource) -> None:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ("", "application/json", "application/yaml", "*/*", PROTOBUF):
            raise ApiError(415, 'the body of the request was in an unknown format - accepted media '
                                'types include: application/json, application/yaml, '
                                'application/vnd.kubernetes.protobuf', "UnsupportedMediaType")

    def _create(self, request: Request, resource: Resource, namespace: str, _: None) -> Response:
        self._check_content_type(request, resource)
        obj, headers = self._decode_body(request, resource, _json_body(resource, request))
        self._check_namespace(resource, namespace, obj)
        dry_run = _dry_run(request.query)
        self._before_create(resource, namespace, obj, dry_run)
        stored = self.store.create(resource, namespace, obj, dry_run, self._tracker(request, resource))
        return _ok(stored.raw, 201, headers)

    def _update(self, request: Request, resource: Resource, namespace: str, name: str) -> Response:
        self._check_content_type(request, resource)
        obj, headers = self._decode_body(request, resource, _json_body(resource, request))
        self._check_name(obj, name)
        self._check_namespace(resource, namespace, obj)
        dry_run = _dry_run(request.query)
        if self.store.exists(resource, namespace, name):
            if resource is NAMESPACES:
                namespaces.prepare_update(obj, self.store.get(resource, namespace, name).obj)
        elif resource.create_on_update:
            self._before_create(resource, namespace, obj, dry_run)
        stored, created = self.store.update(resource, namespace, name, obj, dry_run,
                                            self._tracker(request, resource))
        return _ok(stored.raw, 201 if created else 200, headers)

    def _patch(self, request: Request, resource: Resource, namespace: str, name: str) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in _PATCH_TYPES:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media "
                                "types include: " + ", ".join(_PATCH_TYPES), "UnsupportedMediaType")
        try:
            patch = parse_json(request.body)
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from None
        dry_run = _dry_run(request.query)
        headers: dict[str, str] = {}
        if media == "application/apply-patch+yaml":
            return self._apply(request, resource, namespace, name, patch, dry_run)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            try:
                if media == "application/json-patch+json":
                    patched = json_patch(current, patch)
                else:
                    if not isinstance(patch, dict):
                        raise bad_request("patch body must be a JSON object")
                    patched = merge_patch(current, patch)
            except PatchTestFailed:
                raise ApiError(422, "the server rejected our request due to an error in our request",
                               "Invalid", {}) from None
            except PatchError as exc:
                raise bad_request(str(exc)) from None
            obj, more = self._decode_body(request, resource, patched)
            headers.update(more)
            self._check_name(obj, name)
            self._check_namespace(resource, namespace, obj)
            if resource is NAMESPACES:
                namespaces.prepare_update(obj, current)
            return obj

        stored = self.store.modify(resource, namespace, name, change, dry_run,
                                   self._tracker(request, resource))
        return _ok(stored.raw, 200, headers)

    @staticmethod
    def _tracker(request: Request, resource: Resource) -> Track:
        """Records the request's field manager as an Update in the written object's managedFields."""
        manager = fieldmanager.manager_name(request.query, request.headers.get("user-agent", ""))
        return lambda old, new: fieldmanager.track_update(resource, manager, old, new)

    def _apply(self, request: Request, resource: Resource, namespace: str, name: str, patch: Any,
               dry_run: bool) -> Response:
        """Server-side apply with field ownership, conflicts and ``force``: see fieldmanager.py."""
        if not request.query.get("fieldManager"):
            raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                'is required for apply patch', "Invalid", {"kind": "PatchOptions"})
        manager = fieldmanager.manager_name(request.query, "")
        force = _bool(request.query, "force")
        obj, headers = self._decode_body(request, resource, patch)
        self._check_name(obj, name)
        self._check_namespace(resource, namespace, obj)
        if not self.store.exists(resource, namespace, name):
            obj["metadata"].pop("resourceVersion", None)
            created, _ = decode(resource, fieldmanager.apply(resource, manager, None, obj, force))
            self._before_create(resource, namespace, created, dry_run)
            return _ok(self.store.create(resource, namespace, created, dry_run).raw, 201, headers)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            merged = fieldmanager.apply(resource, manager, current, obj, force)
            if obj["metadata"].get("resourceVersion"):  # an applied resourceVersion is a precondition
                merged["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
            decoded, _ = decode(resource, merged)
            if resource is NAMESPACES:
                namespaces.prepare_update(decoded, current)
            return decoded

        return _ok(self.store.modify(resource, namespace, name, change, dry_run).raw, 200, headers)

    def _delete(self, request: Request, resource: Resource, namespace: str, name: str) -> Response:
        options: dict[str, Any] = {}
        if request.body.strip():
            try:
                options = parse_json(request.body)
            except ValueError as exc:
                raise bad_request(f"error decoding DeleteOptions: {exc}") from None
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        preconditions = options.get("preconditions") or None
        if preconditions is not None and not isinstance(preconditions, dict):
            raise bad_request("preconditions must be a JSON object")
        dry_run = _dry_run(request.query) or options.get("dryRun") == ["All"]
        if resource is NAMESPACES:
            return json_response(200, namespaces.delete(self.store, name, preconditions, dry_run))
        gone = self.store.delete(resource, namespace, name, preconditions, dry_run)
        details: dict[str, Any] = {"name": name}
        if resource.group:
            details["group"] = resource.group
        details["kind"] = resource.plural
        details["uid"] = gone.obj["metadata"]["uid"]
        return json_response(200, success_status(details))

    def _deletecollection(self, request: Request, resource: Resource, namespace: str,
                          _: None) -> Response:
        labels, fields = self._selectors(request.query)
        shard = shardselector.from_query(request.query, self.feature_gates)
        if shard is None:
            deleted = self.store.delete_collection(resource, namespace, labels, fields,
                                                   _dry_run(request.query))
        else:  # kube lists through the same path, so only the shard's objects go (measured on 1.36)
            deleted = self._delete_shard(resource, namespace, labels, fields, shard, _dry_run(request.query))
        return _ok(self._list_bytes(resource.api_version, resource.list_kind, self.store.rv, deleted))

    def _delete_shard(self, resource: Resource, namespace: str, labels: LabelSelector, fields: FieldSelector,
                      shard: shardselector.ShardSelector, dry_run: bool) -> list[Stored]:
        with self.store.lock:  # one atomic step, as store.delete_collection is
            doomed = [s for s in self.store.list(resource, namespace, labels, fields)[0] if shard.matches(s.obj)]
            if dry_run:
                return doomed
            return [self.store.delete(resource, namespace, s.obj["metadata"]["name"]) for s in doomed]

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: Request, stream: Stream, resource: Resource,
                     namespace: str | None, name: str | None) -> None:
        query = request.query
        labels, fields = self._selectors(query, name)
        raw_rv = query.get("resourceVersion", "")
        send_initial = _bool(query, "sendInitialEvents")
        bookmarks = _bool(query, "allowWatchBookmarks")
        if send_initial and not bookmarks:
            raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: allowWatchBookmarks: "
                                "Required value: allowWatchBookmarks must be set to true when "
                                "sendInitialEvents is set", "Invalid", {"kind": "ListOptions"})
        since: int | None = None
        if raw_rv not in ("", "0") and not send_initial:
            try:
                since = int(raw_rv)
            except ValueError:
                raise bad_request(f'resourceVersion: Invalid value: "{raw_rv}": must be a valid '
                                  f'resource version') from None
        timeout = _int(query, "timeoutSeconds")
        table = None
        if tables.wants_table(request.headers.get("accept", "")):
            table = query.get("includeObject", "Metadata")
        shard = shardselector.from_query(query, self.feature_gates)
        watcher = Watcher(resource, namespace, labels, fields, request.client, stream, table, bookmarks,
                          on_delivered=self.counter.add_watch_events, shard=shard)
        try:
            initial = self.store.subscribe(watcher, since, namespace, fields)
        except Expired as exc:
            stream.start()
            stream.send(error_event({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                     "status": "Failure", "message": exc.message,
                                     "reason": "Expired", "code": 410}))
            return None
        self.watchers.add(watcher)
        try:
            await watcher.run(self.store, initial, self.faults,
                              None if timeout is None else float(timeout),
                              self.bookmark_interval, send_initial or (bookmarks and since is None), since)
        finally:
            self.watchers.discard(watcher)
        return None

    def cut_watches(self, client: str | None, graceful: bool) -> None:
        """Close every watch (of ``client``, when given). Runs on the event loop."""
        for watcher in list(self.watchers):
            if client is None or watcher.client == client:
                watcher.close(graceful)

    def wake_watches(self) -> None:
        for watcher in list(self.watchers):
            watcher.wakeup.set()
