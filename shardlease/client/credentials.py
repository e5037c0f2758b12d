"""Credentials the server rejected: re-read them at once, and tell the replica while it lasts.

In a pod the bearer token lives in a file the kubelet rewrites (the projected service-account token),
or comes from an exec plugin. The kubernetes Python client re-reads the in-cluster token file only
once a minute and a kubeconfig ``tokenFile`` never; so after the token was rotated behind a rejected
one, every request kept failing with 401 for up to a minute (or for good). client-go instead re-reads
its token source as soon as the server answers 401, and so do we: :func:`reload_credentials` makes the
loader that filled the ``Configuration`` read its source again before the next request.

:class:`CredentialState` (one per ``ApiClient``, shared by all of its transports) records whether the
last answer was a 401 and since when, so the runtime can log it once per lease duration instead of
once per request, count it, and fail readiness until a request gets through again.
"""

from __future__ import annotations

import datetime
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient, Configuration
from kubernetes.config.incluster_config import InClusterConfigLoader
from kubernetes.config.kube_config import KubeConfigLoader

from shardlease.errors import ApiError

__all__ = ["CredentialState", "credential_state", "reload_credentials"]


def _loader_of(configuration: Configuration) -> Any:
    """The kubernetes loader behind ``configuration.refresh_api_key_hook``, or None.

    Both loaders install a closure over themselves as the hook and offer no public way to force a
    re-read, so the loader is found in the closure's cells."""
    hook = getattr(configuration, "refresh_api_key_hook", None)
    for cell in getattr(hook, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, (InClusterConfigLoader, KubeConfigLoader)):
            return value
    return None


def reload_credentials(configuration: Configuration) -> bool:
    """Make the next request read its credentials from their source again; True if it could.

    - in-cluster service account: the token file is re-read on the next request (its one-minute cache
      is expired now);
    - kubeconfig: the user's ``tokenFile`` is re-read, or its exec plugin run again, right here.

    A static token (kubeconfig ``token``) or a hook of the user's own cannot be reloaded: False.
    Failures of the reload itself surface on the next request, as ``CredentialsError``.
    """
    loader = _loader_of(configuration)
    if isinstance(loader, InClusterConfigLoader):
        loader.token_expires_at = datetime.datetime.min
        return True
    if isinstance(loader, KubeConfigLoader):
        user = getattr(loader, "_user", None)
        if not user or not any(key in user for key in ("tokenFile", "exec")):
            return False
        try:
            loader._load_authentication()
            loader._set_config(configuration)
        except Exception:
            return False  # the next request still sends the old token and gets its 401 again
        return True
    return False


class CredentialState:
    """Whether the server currently rejects this client's credentials (thread-safe).

    ``rejected_since`` (monotonic seconds) is set by the first 401 and cleared by the next answer that is
    not a 401; ``rejections`` counts every 401. Listeners get ``(rejected, error)``: ``(True, err)`` on
    every 401, ``(False, None)`` once when a request gets through again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rejected_since: float | None = None
        self.rejections = 0
        self.last_error: ApiError | None = None
        self._listeners: list[Callable[[bool, ApiError | None], None]] = []

    @property
    def rejected(self) -> bool:
        return self.rejected_since is not None

    def add_listener(self, listener: Callable[[bool, ApiError | None], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[bool, ApiError | None], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def reject(self, error: ApiError) -> None:
        with self._lock:
            if self.rejected_since is None:
                self.rejected_since = time.monotonic()
            self.rejections += 1
            self.last_error = error
            listeners = list(self._listeners)
        for listener in listeners:
            listener(True, error)

    def accept(self) -> None:
        if not self.rejected:  # the common case, without the lock
            return
        with self._lock:
            was, self.rejected_since = self.rejected_since, None
            listeners = list(self._listeners) if was is not None else []
        for listener in listeners:
            listener(False, None)


_STATES: weakref.WeakKeyDictionary[ApiClient, CredentialState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def credential_state(api_client: ApiClient) -> CredentialState:
    """The one :class:`CredentialState` of ``api_client`` (created on first use)."""
    with _STATES_LOCK:
        state = _STATES.get(api_client)
        if state is None:
            state = _STATES[api_client] = CredentialState()
        return state
