"""KEP-5866 sharded LIST/WATCH (``shardSelector``), the same cases on the dev-server and on a real
kube-apiserver 1.36, both with ``ShardedListAndWatch=true``; and both with the gate off (the default).

The gate is fixed for a server's life, so the gate-on servers are this module's own (the real one
costs about 3 s); the gate-off cases use the suite's session servers. Expectations are computed with
FNV-1a-64 over each object's uid (or namespace), so the real server's selections also prove the
dev-server's hash.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from shardlease.devserver import DevServer
from shardlease.devserver.shardselector import fnv1a_64
from shardlease.testing import real_control_plane

from .conftest import call
from .test_reads import watch

GATE = {"ShardedListAndWatch": True}
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"
HALF = "0x8000000000000000"
TOP = "0x10000000000000000"
ZERO = "0x0000000000000000"


def term(start: str, end: str, field: str = "uid") -> str:
    return f"shardRange(object.metadata.{field}, '{start}', '{end}')"


def hexbound(value: int) -> str:
    return TOP if value == 1 << 64 else f"0x{value:016x}"


@pytest.fixture(scope="module", params=["dev", "real"])
def sharded(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubernetes.client.ApiClient]:
    """A client for a server with the gate on."""
    configuration = kubernetes.client.Configuration()
    with (DevServer(feature_gates=GATE) if request.param == "dev"
          else real_control_plane(tmp_path_factory.mktemp("sharded-plane"), feature_gates=GATE)) as srv:
        path = srv.write_kubeconfig(tmp_path_factory.mktemp("sharded") / "kubeconfig")
        kubernetes.config.load_kube_config(config_file=str(path), client_configuration=configuration)
        client = kubernetes.client.ApiClient(configuration)
        yield client
        client.close()


def namespace(api_client: kubernetes.client.ApiClient) -> str:
    name = "s-" + uuid.uuid4().hex[:10]
    code, body = call(api_client, "POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert code == 201, body
    return name


def create(api_client: kubernetes.client.ApiClient, ns: str, count: int) -> dict[str, str]:
    """``count`` ConfigMaps; name -> uid."""
    made = {}
    for index in range(count):
        code, body = call(api_client, "POST", CONFIGMAPS.format(ns=ns), {"metadata": {"name": f"cm-{index:03d}"}})
        assert code == 201, body
        made[body["metadata"]["name"]] = body["metadata"]["uid"]
    return made


def in_ranges(value: str, ranges: list[tuple[int, int]]) -> bool:
    hashed = fnv1a_64(value.encode())
    return any(start <= hashed < end for start, end in ranges)


def listed(api_client: kubernetes.client.ApiClient, path: str, selector: str,
           **query: str) -> tuple[int, dict[str, Any]]:
    return call(api_client, "GET", path, query=[("shardSelector", selector), *query.items()])


def test_selection_matches_fnv1a_of_uid(sharded: kubernetes.client.ApiClient) -> None:
    """50 objects, random ranges (1 term, 2 terms, the full range): the server returns exactly the
    objects whose FNV-1a-64(uid) is in a range, and echoes the selector in canonical form."""
    seed = int(os.environ.get("SHARDLEASE_TEST_SEED") or random.randrange(1 << 31))
    print(f"range seed {seed} (repeat with SHARDLEASE_TEST_SEED={seed}; the uids are the server's)")
    rng = random.Random(seed)
    ns = namespace(sharded)
    uids = create(sharded, ns, 50)
    cuts = sorted(rng.randrange(1, 1 << 64) for _ in range(3))
    cases = [[(0, 1 << 63)], [(cuts[0], cuts[1]), (cuts[2], 1 << 64)], [(0, 1 << 64)]]
    for ranges in cases:
        canonical = " || ".join(term(hexbound(a), hexbound(b)) for a, b in ranges)
        sloppy = "||".join(f" ( shardRange(object.metadata.uid,\"{hexbound(a)}\" , '{hexbound(b)}') ) "
                           for a, b in ranges)
        for selector in (canonical, sloppy):
            code, body = listed(sharded, CONFIGMAPS.format(ns=ns), selector)
            assert code == 200, body
            expected = sorted(name for name, uid in uids.items() if in_ranges(uid, ranges))
            assert [i["metadata"]["name"] for i in body["items"]] == expected, (seed, selector)
            assert body["metadata"]["shardInfo"] == {"selector": canonical}
    code, body = call(sharded, "GET", CONFIGMAPS.format(ns=ns))
    assert "shardInfo" not in body["metadata"]  # only when a selector was applied


def test_namespace_field(sharded: kubernetes.client.ApiClient) -> None:
    """``object.metadata.namespace``: a one-value range around a namespace's hash selects exactly its
    objects across all namespaces; a cluster-scoped object hashes the empty namespace."""
    first, second = namespace(sharded), namespace(sharded)
    create(sharded, first, 3)
    create(sharded, second, 2)
    hashed = fnv1a_64(first.encode())
    selector = term(hexbound(hashed), hexbound(hashed + 1), "namespace")
    code, body = listed(sharded, "/api/v1/configmaps", selector)
    assert code == 200, body
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]] == [
        (first, "cm-000"), (first, "cm-001"), (first, "cm-002")]
    assert body["metadata"]["shardInfo"] == {"selector": selector}
    empty = fnv1a_64(b"")
    code, body = listed(sharded, "/api/v1/namespaces", term(hexbound(empty), hexbound(empty + 1), "namespace"))
    assert {first, second} <= {i["metadata"]["name"] for i in body["items"]}
    code, body = listed(sharded, "/api/v1/namespaces", term(hexbound(empty + 1), TOP, "namespace"))
    assert (code, body["items"]) == (200, [])


MALFORMED = {
    "  ": "empty shard selector is not allowed; omit the parameter for unfiltered lists",
    term("0x0", HALF): 'hexStart must be a 0x-prefixed 16-digit hex value, got "0x0" (did you mean '
                       '"0x0000000000000000"?)',
    term(ZERO, "0xff"): 'hexEnd must be a 0x-prefixed 16-digit hex value, got "0xff" (did you mean '
                        '"0x00000000000000ff"?)',
    term(HALF, ZERO): f"shard range start {HALF} must be less than end {ZERO}",
    term(HALF, HALF): f"shard range start {HALF} must be less than end {HALF}",
    term(ZERO, HALF, "name"): 'unsupported field path "object.metadata.name"; supported: object.metadata.uid, '
                              'object.metadata.namespace',
    term(ZERO, HALF) + " || " + term(HALF, TOP, "namespace"):
        'all shard ranges must use the same field, got "object.metadata.uid" and "object.metadata.namespace"',
    term(ZERO, HALF) + " && " + term(HALF, TOP): 'unsupported function "_&&_"; only shardRange() and || are allowed',
    term("0x00000000000000000", HALF): "hexStart: 17-digit hex value must be '0x10000000000000000' (2^64), got "
                                       '"0x00000000000000000"',
    term("0xFFFFFFFFFFFFFFFF", TOP): 'hexStart: invalid hex character "F" in "0xFFFFFFFFFFFFFFFF"',
    "shardRange(object.metadata.uid, 0, 8)": "hexStart must be a string literal, got int64",
    f"shardRange(object.metadata.uid, '{ZERO}')": "shardRange() requires exactly 3 arguments, got 2",
    "object.metadata.uid": "unexpected expression kind 7; expected shardRange() call or || operator",
    f"shardRange(object.metadata.uid, '{ZERO}'": "CEL parse error: Syntax error: missing ')' at '<EOF>'",
    term(ZERO, HALF) + " || ": "CEL parse error: Syntax error: ",  # the rest is ANTLR's, see fidelity.md
}


def test_malformed_selector_is_a_500_status(sharded: kubernetes.client.ApiClient) -> None:
    """kube answers a bad selector with 500 and a Status without reason, for list and for watch."""
    ns = namespace(sharded)
    for selector, message in MALFORMED.items():
        for extra in ({}, {"watch": "true", "timeoutSeconds": "1"}):
            code, body = listed(sharded, CONFIGMAPS.format(ns=ns), selector, **extra)
            assert code == 500, (selector, extra, body)
            assert body.pop("message").startswith(f"invalid shard selector: {message}"), (selector, extra)
            assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "code": 500}


def test_gate_off_ignores_the_parameter(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    """The suite's servers run with the gate off (the default): no filtering, no shardInfo, and not
    even a malformed selector is an error."""
    create(api_client, ns, 4)
    for selector in (term(ZERO, "0x0000000000000001"), "not CEL at all ((("):
        code, body = listed(api_client, CONFIGMAPS.format(ns=ns), selector)
        assert code == 200, body
        assert len(body["items"]) == 4 and "shardInfo" not in body["metadata"]
        events = watch(api_client, CONFIGMAPS.format(ns=ns), shardSelector=selector, timeoutSeconds="1")
        assert len(events) == 4


def test_watch_delivers_only_the_shard(sharded: kubernetes.client.ApiClient) -> None:
    """Initial events, the initial-events-end bookmark and later events, all of the shard only."""
    ns = namespace(sharded)
    before = create(sharded, ns, 8)
    selector = term(ZERO, HALF)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        watching = pool.submit(watch, sharded, CONFIGMAPS.format(ns=ns), shardSelector=selector,
                               sendInitialEvents="true", allowWatchBookmarks="true",
                               resourceVersionMatch="NotOlderThan", timeoutSeconds="4")
        time.sleep(1.5)
        later = {}
        for index in range(8):
            code, body = call(sharded, "POST", CONFIGMAPS.format(ns=ns), {"metadata": {"name": f"later-{index}"}})
            later[body["metadata"]["name"]] = body["metadata"]["uid"]
        for name in later:
            call(sharded, "DELETE", CONFIGMAPS.format(ns=ns) + "/" + name)
        events = watching.result()
    half = [(0, 1 << 63)]
    objects = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
    initial = [("ADDED", n) for n, uid in sorted(before.items()) if in_ranges(uid, half)]
    mine = [n for n, uid in later.items() if in_ranges(uid, half)]
    assert objects == initial + [("ADDED", n) for n in mine] + [("DELETED", n) for n in mine]
    ends = [i for i, e in enumerate(events)
            if e["type"] == "BOOKMARK" and e["object"]["metadata"].get("annotations")]
    assert ends == [len(initial)]


def test_limit_and_continue(sharded: kubernetes.client.ApiClient) -> None:
    """Paging under a selector follows kube's watch cache: a page closes at the limit-th match, has
    a continue token when any object at all follows, and remainingItemCount is the number of objects
    from the page's start less the limit; every page carries shardInfo. Followed to the end, the
    pages hold exactly the shard."""
    ns = namespace(sharded)
    uids = create(sharded, ns, 12)
    names = sorted(uids)
    selector = term(ZERO, HALF)
    matching = [n for n in names if in_ranges(uids[n], [(0, 1 << 63)])]
    token, start, seen = "", 0, []
    for _ in range(len(names) + 1):
        extra = {"limit": "2", **({"continue": token} if token else {})}
        code, body = listed(sharded, CONFIGMAPS.format(ns=ns), selector, **extra)
        assert code == 200, body
        meta, page = body["metadata"], [i["metadata"]["name"] for i in body["items"]]
        assert meta["shardInfo"] == {"selector": selector}
        rest = names[start:]
        expected = [n for n in rest if n in matching][:2]
        assert page == expected
        more = len(expected) == 2 and names.index(expected[-1]) < len(names) - 1
        assert ("continue" in meta) == more, (page, meta)
        assert meta.get("remainingItemCount") == (len(rest) - 2 if more else None)
        seen += page
        if not more:
            break
        token, start = meta["continue"], names.index(expected[-1]) + 1
    assert seen == matching


def test_labels_with_a_selector_drop_the_count(sharded: kubernetes.client.ApiClient) -> None:
    """With a label selector too, a page still ends at the limit-th match but reports no count."""
    ns = namespace(sharded)
    create(sharded, ns, 6)
    code, body = listed(sharded, CONFIGMAPS.format(ns=ns), term(ZERO, TOP), limit="1", labelSelector="!absent")
    assert code == 200 and len(body["items"]) == 1
    assert "continue" in body["metadata"] and "remainingItemCount" not in body["metadata"]


def test_delete_collection_deletes_only_the_shard(sharded: kubernetes.client.ApiClient) -> None:
    """kube's deletecollection lists through the same path, so the selector limits what is deleted."""
    ns = namespace(sharded)
    uids = create(sharded, ns, 8)
    code, body = call(sharded, "DELETE", CONFIGMAPS.format(ns=ns), query=[("shardSelector", term(ZERO, HALF))])
    assert code == 200, body
    code, body = call(sharded, "GET", CONFIGMAPS.format(ns=ns))
    assert [i["metadata"]["name"] for i in body["items"]] == sorted(
        n for n, uid in uids.items() if not in_ranges(uid, [(0, 1 << 63)]))
