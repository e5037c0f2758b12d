"""LeaseWatcher against the embedded API server: list+watch, resume after a cut, relist after 410,
and a silent (frozen) stream detected by the read timeout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from support import wait_until as wait_for

from shardlease.client.connect import load_api_client
from shardlease.client.leases import LeaseClient
from shardlease.client.watch import LeaseWatcher
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import SystemClock
from shardlease.devserver import DevServer

SELECTOR = "shardlease.io/group=wt"


@contextmanager
def running_watcher(tmp_path, *, read_timeout: float,  # type: ignore[no-untyped-def]
                    max_backoff: float) -> Iterator[tuple[DevServer, LeaseClient, LeaseCache, LeaseWatcher]]:
    """A dev-server, a writer client and a started watcher (with its cache) on another client."""
    with DevServer(port=0, faults=True) as srv:
        path = tmp_path / "kubeconfig"
        srv.write_kubeconfig(path)
        writer = LeaseClient(load_api_client(str(path), client_id="writer"), "default")
        reader = LeaseClient(load_api_client(str(path), client_id="reader"), "default")
        cache = LeaseCache(SystemClock())
        watcher = LeaseWatcher(reader, cache, SELECTOR, read_timeout=read_timeout,
                               logger=logging.getLogger("t"), max_backoff=max_backoff)
        watcher.start()
        try:
            yield srv, writer, cache, watcher
        finally:
            watcher.stop()


@pytest.fixture()
def setup(tmp_path) -> Iterator[tuple[DevServer, LeaseClient, LeaseCache, LeaseWatcher]]:  # type: ignore[no-untyped-def]
    with running_watcher(tmp_path, read_timeout=0.7, max_backoff=0.3) as parts:
        yield parts


def make(writer: LeaseClient, name: str) -> None:
    writer.create({"metadata": {"name": name, "labels": {"shardlease.io/group": "wt"}},
                   "spec": {"holderIdentity": "x", "leaseDurationSeconds": 5}})


def test_sees_creates_and_deletes(setup) -> None:  # type: ignore[no-untyped-def]
    _srv, writer, cache, _watcher = setup
    wait_for(cache.synced.is_set)
    make(writer, "a")
    wait_for(lambda: cache.get("a") is not None)
    writer.delete("a")
    wait_for(lambda: cache.get("a") is None)


def test_resumes_after_a_cut_without_relisting(setup) -> None:  # type: ignore[no-untyped-def]
    srv, writer, cache, watcher = setup
    wait_for(cache.synced.is_set)
    relists = watcher.relists
    srv.faults.cut_watches()
    make(writer, "after-cut")
    wait_for(lambda: cache.get("after-cut") is not None)
    assert watcher.relists == relists


def test_relists_after_410(setup) -> None:  # type: ignore[no-untyped-def]
    srv, writer, cache, watcher = setup
    wait_for(cache.synced.is_set)
    srv.faults.partition("reader", mode="error")  # hold the watcher off while history moves on
    make(writer, "during-partition")
    srv.compact()
    relists = watcher.relists
    srv.faults.heal("reader")
    wait_for(lambda: cache.get("during-partition") is not None)
    assert watcher.relists > relists


def test_silent_stream_is_cut_by_the_read_timeout(setup) -> None:  # type: ignore[no-untyped-def]
    srv, writer, cache, watcher = setup
    wait_for(cache.synced.is_set)
    restarts = watcher.restarts
    srv.faults.freeze_watches()
    time.sleep(1.6)  # > 2 x read timeout with no bytes on the stream
    assert watcher.restarts > restarts
    srv.faults.unfreeze_watches()
    make(writer, "after-freeze")
    wait_for(lambda: cache.get("after-freeze") is not None)


def test_backoff_restarts_after_a_stream_that_worked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Regression (chaos seed 5): every cut of a healthy stream counted as one more consecutive
    failure, so after a few cuts the watcher waited seconds (up to its cap) before reconnecting, and
    the replica stopped seeing member renewals for longer than a lease."""
    with running_watcher(tmp_path, read_timeout=5.0, max_backoff=5.0) as (srv, writer, cache, _):
        def cached(name: str) -> Callable[[], bool]:
            return lambda: cache.get(name) is not None

        gaps = []
        for round_ in range(5):
            make(writer, f"before-{round_}")
            wait_for(cached(f"before-{round_}"), 10)
            srv.faults.cut_watches()
            cut = time.monotonic()
            make(writer, f"after-{round_}")
            wait_for(cached(f"after-{round_}"), 10)
            gaps.append(time.monotonic() - cut)
        # First-failure back-off is at most 0.4 s; without the reset the 5th cut waits >= 2.5 s.
        assert max(gaps) < 1.5, gaps
