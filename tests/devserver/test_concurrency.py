"""Optimistic concurrency under contention: no update is ever lost."""

from __future__ import annotations

import threading
from pathlib import Path

from kubernetes.client import ApiException, CoordinationV1Api

from .conftest import make_client
from .helpers import lease_body

WRITERS = 8
INCREMENTS = 25
KEY = "test.shardlease.io/counter"


def test_concurrent_read_modify_write_loses_nothing(kubeconfig: Path, coord: CoordinationV1Api,
                                                    ns: str) -> None:
    body = lease_body("counter")
    body["metadata"]["annotations"] = {KEY: "0"}
    coord.create_namespaced_lease(ns, body)
    conflicts = [0] * WRITERS
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        api = CoordinationV1Api(make_client(kubeconfig))  # one connection pool per writer
        try:
            for _ in range(INCREMENTS):
                while True:
                    lease = api.read_namespaced_lease("counter", ns)
                    lease.metadata.annotations[KEY] = str(int(lease.metadata.annotations[KEY]) + 1)
                    try:
                        api.replace_namespaced_lease("counter", ns, lease)
                        break
                    except ApiException as exc:
                        if exc.status != 409:
                            raise
                        conflicts[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    final = coord.read_namespaced_lease("counter", ns)
    assert final.metadata.annotations[KEY] == str(WRITERS * INCREMENTS)
    assert sum(conflicts) > 0, "the writers never collided: the test proves nothing"


def test_racing_creates_have_exactly_one_winner(kubeconfig: Path, ns: str) -> None:
    outcomes: list[int] = []
    barrier = threading.Barrier(WRITERS)

    def create(index: int) -> None:
        api = CoordinationV1Api(make_client(kubeconfig))
        barrier.wait()
        try:
            api.create_namespaced_lease(ns, lease_body("contested", holder=f"w{index}"))
            outcomes.append(201)
        except ApiException as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [201] + [409] * (WRITERS - 1)
