"""``meta.k8s.io/v1`` Table responses (what kubectl asks for), read through the official client."""

from __future__ import annotations

import json
import threading
import time

from kubernetes.client import CoordinationV1Api, CoreV1Api

from .helpers import lease_body
from .test_watch import raw_lines

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


def test_lease_table(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a", holder="pod-a", labels={"x": "1"}))
    coord.create_namespaced_lease(ns, {"metadata": {"name": "b"}, "spec": {}})
    table = json.loads(coord.list_namespaced_lease(ns, _preload_content=False,
                                                   _headers={"Accept": TABLE}).data)
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Holder", "Age"]
    assert table["columnDefinitions"][0]["format"] == "name"
    assert [r["cells"][:2] for r in table["rows"]] == [["a", "pod-a"], ["b", ""]]
    assert table["rows"][0]["cells"][2].endswith("s")
    first = table["rows"][0]["object"]
    assert first["kind"] == "PartialObjectMetadata" and first["apiVersion"] == "meta.k8s.io/v1"
    assert first["metadata"]["namespace"] == ns and first["metadata"]["labels"] == {"x": "1"}
    single = json.loads(coord.read_namespaced_lease("a", ns, _preload_content=False,
                                                    _headers={"Accept": TABLE}).data)
    assert len(single["rows"]) == 1 and single["rows"][0]["cells"][0] == "a"
    plain = json.loads(coord.read_namespaced_lease("a", ns, _preload_content=False,
                                                   _headers={"Accept": "application/json"}).data)
    assert plain["kind"] == "Lease"


def test_configmap_table_counts_data(core: CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"},
                                           "binaryData": {"c": "AA=="}})
    table = json.loads(core.list_namespaced_config_map(ns, _preload_content=False,
                                                       _headers={"Accept": TABLE}).data)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["c", 3]


def test_table_watch_sends_columns_once(coord: CoordinationV1Api, ns: str) -> None:
    rv = coord.list_namespaced_lease(ns).metadata.resource_version

    def writes() -> None:
        time.sleep(0.2)
        coord.create_namespaced_lease(ns, lease_body("w1"))
        coord.create_namespaced_lease(ns, lease_body("w2", holder="h2"))

    threading.Thread(target=writes).start()
    response = coord.list_namespaced_lease(ns, watch=True, resource_version=rv, timeout_seconds=1,
                                           _preload_content=False, _headers={"Accept": TABLE})
    events = list(raw_lines(response))
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    first, second = (e["object"] for e in events)
    assert first["kind"] == "Table" and [c["name"] for c in first["columnDefinitions"]] == [
        "Name", "Holder", "Age"]
    assert second["columnDefinitions"] is None
    assert second["rows"][0]["cells"][:2] == ["w2", "h2"]
    assert second["rows"][0]["object"]["metadata"]["name"] == "w2"
