"""Property test: random sequences of writes behave like a simple model of kube-apiserver, and the
watch history replays to exactly the listed state."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiException, CoordinationV1Api

from .helpers import lease_body
from .test_watch import raw_lines

NAMES = ("a", "b", "c")
END = "zz-end"  # written last, so the watch reader knows when it has seen everything
operations = st.lists(
    st.tuples(st.sampled_from(["create", "update", "stale-update", "patch", "delete"]),
              st.sampled_from(NAMES), st.text(alphabet="xyz", min_size=1, max_size=3)),
    min_size=1, max_size=12)


def apply(coord: CoordinationV1Api, ns: str, op: str, name: str, holder: str,
          model: dict[str, str]) -> None:
    """Run one operation and check its outcome against ``model``, which it then updates."""
    exists = name in model
    try:
        if op == "create":
            coord.create_namespaced_lease(ns, lease_body(name, holder=holder))
        elif op == "update":
            current = coord.read_namespaced_lease(name, ns)
            current.spec.holder_identity = holder
            coord.replace_namespaced_lease(name, ns, current)
        elif op == "stale-update":
            old = coord.read_namespaced_lease(name, ns)
            changed = old.spec.holder_identity + "+"  # must differ: a no-op write keeps the RV
            coord.patch_namespaced_lease(name, ns, {"spec": {"holderIdentity": changed}})
            model[name] = changed
            old.spec.holder_identity = holder
            coord.replace_namespaced_lease(name, ns, old)
            raise AssertionError("an update with a stale resourceVersion succeeded")
        elif op == "patch":
            coord.patch_namespaced_lease(name, ns, {"spec": {"holderIdentity": holder}})
        else:
            coord.delete_namespaced_lease(name, ns)
    except ApiException as exc:
        if op == "create":
            assert exists and exc.status == 409
        elif op == "stale-update" and exists:
            assert exc.status == 409
        else:
            assert not exists and exc.status == 404, (op, exc.status)
        return
    assert exists != (op == "create"), (op, name)
    if op == "delete":
        del model[name]
    else:
        model[name] = holder


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_writes_follow_the_model_and_watch_replays_them(coord: CoordinationV1Api,
                                                        ops: list[tuple[str, str, str]]) -> None:
    ns = "m-" + uuid.uuid4().hex[:10]
    start_rv = coord.list_namespaced_lease(ns).metadata.resource_version
    model: dict[str, str] = {}
    for op, name, holder in ops:
        apply(coord, ns, op, name, holder, model)
    listed = {l.metadata.name: l.spec.holder_identity for l in coord.list_namespaced_lease(ns).items}
    assert listed == model
    coord.create_namespaced_lease(ns, lease_body(END))
    response = coord.list_namespaced_lease(ns, watch=True, resource_version=start_rv, timeout_seconds=5,
                                           _preload_content=False)
    replayed: dict[str, str] = {}
    last_rv = int(start_rv)
    for event in raw_lines(response):
        obj = event["object"]
        name = obj["metadata"]["name"]
        if name == END:
            break
        rv = int(obj["metadata"]["resourceVersion"])
        assert rv > last_rv
        last_rv = rv
        if event["type"] == "DELETED":
            del replayed[name]
        else:
            assert (event["type"] == "ADDED") == (name not in replayed)
            replayed[name] = obj["spec"]["holderIdentity"]
    response.close()
    assert replayed == model
