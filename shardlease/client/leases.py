"""``LeaseClient``: single Lease requests as plain JSON dicts, over the ``kubernetes`` client's transport.

Why not the generated ``CoordinationV1Api`` methods: they (de)serialise through the model classes and
re-sanitise every body, which costs several times the HTTP round trip itself on a loopback server, and
one replica holding 1,024 shards renews about 512 Leases a second. So requests go one level lower but
stay inside the kubernetes client: the URL, default headers (User-Agent, ``X-Shardlease-Client``) and
auth (including in-cluster token refresh via ``Configuration.auth_settings()``) come from the user's
``ApiClient``, and the bytes travel through the urllib3 pool manager of a
``kubernetes.client.rest.RESTClientObject`` built from the same ``Configuration`` (so TLS, proxy and CA
settings are the client's own) with a connection pool as large as our writer pool.

Only the fastest path stays in the library: the pool manager's ``urlopen`` with a body serialised once.
Client CPU per conditional PUT against the dev-server in another process (``bench/request_paths.py``,
``bench/results/request_paths.json``): see that file for the figures of the generated
``CoordinationV1Api`` and of ``RESTClientObject.request``, which adds its own JSON encoding and response
wrapper on top of the same ``urlopen``.

Every call is a single attempt with an explicit timeout. Retrying is the caller's business, because only
the caller knows how much of a renew deadline is left; errors come back as the typed ``ApiError``
subclasses of :mod:`shardlease.errors` (``Conflict``, ``RequestTimeout``, ``Throttled`` with
``retry_after``, ...). ``LeaseClient`` implements :class:`shardlease.client.LeaseStore`.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client import rest as _rest

from shardlease.errors import (
    ApiError,
    Expired,
    NetworkError,
    NotFound,
    RequestTimeout,
    UnexpectedApiError,
    api_error,
)

__all__ = ["ApiError", "LeaseClient", "list_group_leases"]

_GROUP_PATH = "/apis/coordination.k8s.io/v1"


def _retry_after(headers: Mapping[str, str] | None, status_obj: Mapping[str, Any] | None) -> float | None:
    value: Any = None
    if headers is not None:
        value = headers.get("Retry-After")
    if value is None and status_obj is not None:
        details = status_obj.get("details")
        if isinstance(details, dict):
            value = details.get("retryAfterSeconds")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _error_from_response(status: int, body: bytes, headers: Mapping[str, str] | None) -> ApiError:
    reason = ""
    message = body[:300].decode("utf-8", "replace")
    status_obj: dict[str, Any] | None = None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        status_obj = parsed
        reason = str(parsed.get("reason") or "")
        message = str(parsed.get("message") or message)
    return api_error(status, reason, message, retry_after=_retry_after(headers, status_obj))


def _transport_error(exc: BaseException) -> ApiError:
    text = f"{type(exc).__name__}: {exc}"
    timeout_types = (urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)
    if isinstance(exc, timeout_types) or "timed out" in text.lower():
        return RequestTimeout(text)
    return NetworkError(text)


def _watch_error(obj: Mapping[str, Any]) -> ApiError:
    """The error an ``ERROR`` watch event carries (a ``Status``): 410 becomes ``Expired``, as if the
    server had answered the watch request itself with 410."""
    code = obj.get("code")
    status = code if isinstance(code, int) else 0
    reason = str(obj.get("reason") or "")
    message = str(obj.get("message") or "watch error event")
    if status == 410 or reason in ("Expired", "Gone"):
        return Expired(f"HTTP 410 {reason or 'Expired'}: {message}", status=410, reason=reason or "Expired")
    if not status:
        return UnexpectedApiError(f"watch error event: {message}", reason=reason)
    return api_error(status, reason, message)


class LeaseClient:
    """Create / replace / get / delete / list / watch Leases of one namespace as JSON dicts.

    Implements :class:`shardlease.client.LeaseStore`; every failure is an ``ApiError`` subclass.
    """

    def __init__(self, api_client: ApiClient, namespace: str, *, pool_size: int = 16) -> None:
        self._api_client = api_client
        self.namespace = namespace
        config = copy.copy(api_client.configuration)
        config.connection_pool_maxsize = max(pool_size, config.connection_pool_maxsize or 1)
        # No hidden urllib3 retries: a retried PUT could outlive the renew deadline the caller budgeted.
        config.retries = False
        # Our own pool, so that writer threads never overflow the user's pool (urllib3 would then open
        # and throw away a connection per request and warn about it). Only its pool manager is used:
        # it carries the TLS, proxy and CA settings of the user's Configuration.
        self._pool: urllib3.PoolManager = _rest.RESTClientObject(config).pool_manager
        self._host = config.host.rstrip("/")
        self._lock = threading.Lock()
        self._auth_headers: dict[str, str] = {}
        self._auth_at = -1e9
        self.current_watch: urllib3.BaseHTTPResponse | None = None

    # ---- plumbing ----

    def _headers(self) -> dict[str, str]:
        """Default headers plus auth. Auth is re-evaluated once a second so refreshed tokens are used."""
        now = time.monotonic()
        with self._lock:
            if now - self._auth_at > 1.0:
                auth: dict[str, str] = {}
                self._api_client.update_params_for_auth(auth, [], ["BearerToken"], "", "GET", None)
                self._auth_headers = auth
                self._auth_at = now
            headers = dict(self._api_client.default_headers)
            headers.update(self._auth_headers)
        headers["Accept"] = "application/json"
        headers["Content-Type"] = "application/json"
        return headers

    def _url(self, name: str | None = None, query: Mapping[str, Any] | None = None) -> str:
        url = f"{self._host}{_GROUP_PATH}/namespaces/{quote(self.namespace, safe='')}/leases"
        if name is not None:
            url += "/" + quote(name, safe="")
        if query:
            url += "?" + urlencode(query)
        return url

    def _send(self, method: str, url: str, body: Any, timeout: float | tuple[float, float] | None,
              *, stream: bool = False) -> urllib3.BaseHTTPResponse:
        """One request: ``urlopen`` on the pool manager with a body serialised once; raise the typed
        ``ApiError`` unless 2xx. With ``stream`` a 2xx response is returned unread (for watches)."""
        headers = self._headers()
        if isinstance(timeout, tuple):
            request_timeout: urllib3.Timeout | None = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            request_timeout = urllib3.Timeout(total=timeout) if timeout else None
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        try:
            response: urllib3.BaseHTTPResponse = self._pool.urlopen(
                method, url, body=payload, headers=headers, timeout=request_timeout, retries=False,
                preload_content=False)
        except Exception as exc:  # urllib3 transport errors
            raise _transport_error(exc) from None
        if stream and 200 <= response.status < 300:
            return response
        try:
            data = response.data
        except Exception as exc:
            raise _transport_error(exc) from None
        finally:
            response.release_conn()
        if not 200 <= response.status < 300:
            raise _error_from_response(response.status, data, response.headers)
        return response

    @staticmethod
    def _json(response: urllib3.BaseHTTPResponse) -> dict[str, Any]:
        try:
            value = json.loads(response.data)
        except ValueError as exc:
            raise UnexpectedApiError(f"response is not JSON: {exc}", status=response.status) from None
        if not isinstance(value, dict):
            raise UnexpectedApiError("response is not a JSON object", status=response.status)
        return value

    # ---- requests ----

    def get(self, name: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The Lease, or ``None`` if it does not exist."""
        try:
            return self._json(self._send("GET", self._url(name), None, timeout))
        except NotFound:
            return None

    def create(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """POST; ``AlreadyExists`` if the name is taken."""
        return self._json(self._send("POST", self._url(), body, timeout))

    def replace(self, name: str, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Conditional PUT: the body must carry ``metadata.resourceVersion``; a stale one gives ``Conflict``."""
        return self._json(self._send("PUT", self._url(name), body, timeout))

    def delete(self, name: str, *, resource_version: str | None = None, timeout: float | None = None) -> None:
        """Delete, conditional on ``resource_version`` when given (DeleteOptions preconditions)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        self._send("DELETE", self._url(name), body, timeout)

    def list(self, label_selector: str, *, timeout: float | None = None) -> tuple[list[dict[str, Any]], str]:
        """All matching Leases and the list's resourceVersion (where a watch continues from)."""
        doc = self._json(self._send("GET", self._url(query={"labelSelector": label_selector}), None, timeout))
        items = doc.get("items")
        meta = doc.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return ([i for i in items if isinstance(i, dict)] if isinstance(items, list) else [],
                str(rv) if rv is not None else "")

    def watch(self, label_selector: str, resource_version: str, *, timeout_seconds: int,
              read_timeout: float, connect_timeout: float = 5.0) -> Generator[dict[str, Any], None, None]:
        """Stream watch events (``{"type": ..., "object": ...}``) from ``resource_version``, with bookmarks.

        ``read_timeout`` bounds every socket read, so a connection that went silent (a dead peer, a
        partition that drops packets) raises ``RequestTimeout`` instead of hanging forever. An
        ``ERROR`` event is raised as its error (``Expired`` for 410), never yielded.
        """
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "labelSelector": label_selector,
            "resourceVersion": resource_version,
            "timeoutSeconds": str(int(timeout_seconds)),
        }
        response = self._send("GET", self._url(query=query), None, (connect_timeout, read_timeout), stream=True)
        self.current_watch = response
        buffer = b""
        try:
            try:
                for chunk in response.stream(65536, decode_content=True):
                    buffer += chunk
                    while True:
                        newline = buffer.find(b"\n")
                        if newline < 0:
                            break
                        line, buffer = buffer[:newline], buffer[newline + 1:]
                        if not line.strip():
                            continue
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if not isinstance(event, dict):
                            continue
                        if event.get("type") == "ERROR":
                            obj = event.get("object")
                            raise _watch_error(obj if isinstance(obj, dict) else {})
                        yield event
            except ApiError:
                raise
            except Exception as exc:
                raise _transport_error(exc) from None
        finally:
            response.release_conn()
            self.current_watch = None

    def close_watch(self) -> None:
        """Abort a running watch from another thread (used on shutdown)."""
        response = self.current_watch
        if response is not None:
            try:
                shutdown = getattr(response, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                else:
                    response.close()
            except Exception:
                pass

    def close(self) -> None:
        self.close_watch()
        try:
            self._pool.clear()
        except Exception:
            pass


if TYPE_CHECKING:  # LeaseClient must satisfy the protocol the runtime depends on; mypy checks it here.
    from shardlease.client.store import LeaseStore

    def _satisfies_protocol(client: LeaseClient) -> LeaseStore:
        return client




#: How long ``list_group_leases`` waits for the list (a human is waiting for the answer).
_LIST_TIMEOUT = 10.0


def list_group_leases(api: ApiClient, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
    """List Leases by label selector as plain dicts, plus the list's resourceVersion.

    ``_preload_content=False`` skips the client's model deserialisation: we only need the JSON.
    """
    from kubernetes.client import CoordinationV1Api

    # With _preload_content=False the client returns the raw urllib3 response, not the V1LeaseList
    # its annotations promise.
    response: Any = CoordinationV1Api(api).list_namespaced_lease(
        namespace, label_selector=selector, _preload_content=False,
        _request_timeout=_LIST_TIMEOUT)
    body = json.loads(response.data)
    items = body.get("items") or []
    return [item for item in items if isinstance(item, dict)], str(
        (body.get("metadata") or {}).get("resourceVersion") or "")
