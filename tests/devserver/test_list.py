"""Lists: all namespaces vs one, label and field selectors, and limit/continue pagination."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException, CoordinationV1Api, CoreV1Api

from .helpers import lease_body, status_of


@pytest.fixture
def labelled(coord: CoordinationV1Api, ns: str) -> str:
    specs = {
        "a": {"app": "web", "tier": "front"},
        "b": {"app": "web", "tier": "back"},
        "c": {"app": "db"},
        "d": {},
    }
    for name, labels in specs.items():
        coord.create_namespaced_lease(ns, lease_body(name, labels=labels))
    return ns


@pytest.mark.parametrize(("selector", "expected"), [
    ("", ["a", "b", "c", "d"]),
    ("app=web", ["a", "b"]),
    ("app==web", ["a", "b"]),
    ("app!=web", ["c", "d"]),
    ("app in (db, web)", ["a", "b", "c"]),
    ("app notin (web)", ["c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
    ("app=web,tier=back", ["b"]),
    ("app=web,!tier", []),
])
def test_label_selectors(coord: CoordinationV1Api, labelled: str, selector: str,
                         expected: list[str]) -> None:
    items = coord.list_namespaced_lease(labelled, label_selector=selector).items
    assert [i.metadata.name for i in items] == expected


def test_bad_label_selector_is_400(coord: CoordinationV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        coord.list_namespaced_lease(ns, label_selector="app in web")
    assert status_of(err.value)["reason"] == "BadRequest"


def test_field_selectors(coord: CoordinationV1Api, labelled: str) -> None:
    names = lambda sel: [i.metadata.name for i in  # noqa: E731
                         coord.list_namespaced_lease(labelled, field_selector=sel).items]
    assert names("metadata.name=b") == ["b"]
    assert names("metadata.name!=b") == ["a", "c", "d"]
    assert names(f"metadata.namespace={labelled},metadata.name==c") == ["c"]
    assert names("metadata.namespace=elsewhere") == []
    with pytest.raises(ApiException) as err:
        coord.list_namespaced_lease(labelled, field_selector="spec.holderIdentity=x")
    assert status_of(err.value)["message"] == (
        '"spec.holderIdentity" is not a known field selector: only "metadata.name", '
        '"metadata.namespace"')


def test_list_all_namespaces(coord: CoordinationV1Api, ns: str) -> None:
    other = ns + "-b"
    coord.create_namespaced_lease(ns, lease_body("x", labels={"mark": ns}))
    coord.create_namespaced_lease(other, lease_body("x", labels={"mark": ns}))
    result = coord.list_lease_for_all_namespaces(label_selector=f"mark={ns}")
    assert [(i.metadata.namespace, i.metadata.name) for i in result.items] == [(ns, "x"), (other, "x")]
    assert result.kind == "LeaseList" and result.api_version == "coordination.k8s.io/v1"
    by_ns = coord.list_lease_for_all_namespaces(field_selector=f"metadata.namespace={other}")
    assert [i.metadata.namespace for i in by_ns.items] == [other]


def test_empty_list_has_items_and_resource_version(coord: CoordinationV1Api, ns: str) -> None:
    result = coord.list_namespaced_lease(ns)
    assert result.items == [] and result.metadata.resource_version.isdigit()


def test_pagination(coord: CoordinationV1Api, ns: str) -> None:
    for i in range(7):
        coord.create_namespaced_lease(ns, lease_body(f"p{i}"))
    first = coord.list_namespaced_lease(ns, limit=3)
    assert [i.metadata.name for i in first.items] == ["p0", "p1", "p2"]
    assert first.metadata.remaining_item_count == 4 and first.metadata._continue
    coord.create_namespaced_lease(ns, lease_body("p9"))  # a later page may see newer objects
    second = coord.list_namespaced_lease(ns, limit=3, _continue=first.metadata._continue)
    assert [i.metadata.name for i in second.items] == ["p3", "p4", "p5"]
    assert second.metadata.resource_version == first.metadata.resource_version
    third = coord.list_namespaced_lease(ns, limit=3, _continue=second.metadata._continue)
    assert [i.metadata.name for i in third.items] == ["p6", "p9"]
    assert not third.metadata._continue and third.metadata.remaining_item_count is None


def test_pagination_with_selector_omits_remaining_count(coord: CoordinationV1Api, ns: str) -> None:
    for i in range(4):
        coord.create_namespaced_lease(ns, lease_body(f"p{i}", labels={"x": "y"}))
    page = coord.list_namespaced_lease(ns, limit=2, label_selector="x=y")
    assert len(page.items) == 2 and page.metadata._continue
    assert page.metadata.remaining_item_count is None


def test_bad_continue_token_is_400(coord: CoordinationV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        coord.list_namespaced_lease(ns, limit=1, _continue="bm90LWpzb24=")
    assert err.value.status == 400


def test_configmaps_list_and_selectors(core: CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one", "labels": {"k": "1"}},
                                           "data": {"a": "b"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "two"}, "binaryData": {"bin": "AAE="}})
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="k").items] == ["one"]
    two = core.read_namespaced_config_map("two", ns)
    assert two.binary_data == {"bin": "AAE="}
    everything = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}")
    assert [c.metadata.name for c in everything.items] == ["one", "two"]
