"""The manifests in deploy/ as kubectl would apply them: wired together, consistent with the CLI, and
with a Role that grants exactly the Lease verbs shardlease sends.

Rendering uses the real ``kubectl kustomize`` so that what is checked is what ``kubectl apply -k``
would send (namespace and name-prefix transformers, label selectors, patches), not the raw files.
The RBAC check runs real replicas against the embedded dev-server and compares the verbs it served
with the Role, so adding a call to the code without updating the Role (or leaving a stale verb in the
Role) fails here rather than with a 403 in a cluster. Only the tests that render need kubectl; they
skip without it, the RBAC, probe and Dockerfile checks read the files as written and always run.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import free_port
from support import wait_until as wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
EXAMPLE = DEPLOY / "overlays" / "example"
KUSTOMIZATIONS = {"base": BASE, "example": EXAMPLE}

KUBECTL = shutil.which("kubectl")
NO_KUBECTL = (
    "kubectl (with its built-in kustomize) is needed to render deploy/; without it nothing proves "
    "that `kubectl apply -k` produces wired-up RBAC, probes on the metrics port and CLI-valid args"
)

#: Lease verbs the Role must grant although a short, well-behaved run may not send them, each with the
#: code path that needs it. Anything in the Role that is neither observed nor listed here is unused.
#: Each entry: verb -> (module under shardlease/, regex that must still match the call, why it is rare).
RARE_LEASE_VERBS: dict[str, tuple[str, str, str]] = {
    "get": (
        "runtime/manager.py",
        r"store\.get\(",
        "after a 409 Conflict the manager re-reads that one Lease if the watch has not yet delivered "
        "the newer version (REFRESH); an uncontended run may never conflict",
    ),
}

#: Defaults of `shardlease run` (docs of the CLI), used when the Deployment does not pass a value.
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_RENEW_DEADLINE = 10.0


# --------------------------------------------------------------------------------------------------
# Rendering and lookup helpers


def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize path`` parsed into a list of objects (skips the test without kubectl)."""
    if KUBECTL is None:
        pytest.skip(NO_KUBECTL)
    proc = subprocess.run(
        [KUBECTL or "kubectl", "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        # kubectl needs no cluster for kustomize; keep any user kubeconfig out of the way.
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def raw(path: Path) -> dict[str, Any]:
    """One manifest file as written (for the checks that need no kustomize)."""
    return yaml.safe_load(path.read_text())


@pytest.fixture(
    scope="module", params=[pytest.param(name, marks=pytest.mark.kubectl) for name in sorted(KUSTOMIZATIONS)]
)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[request.param])


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def ns(obj: Mapping[str, Any]) -> str | None:
    return obj.get("metadata", {}).get("namespace")


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the shardlease pod runs one container"
    return containers[0]


def lease_role(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Role that grants shardlease its Lease access (overlays may add other Roles)."""
    roles = [
        r
        for r in of_kind(objs, "Role")
        if any("leases" in rule.get("resources", []) for rule in r.get("rules", []))
    ]
    assert len(roles) == 1, "exactly one Role should grant access to leases"
    return roles[0]


def lease_verbs(role: Mapping[str, Any]) -> set[str]:
    verbs: set[str] = set()
    for rule in role["rules"]:
        if "leases" in rule.get("resources", []):
            assert rule.get("apiGroups") == ["coordination.k8s.io"], rule
            assert "resourceNames" not in rule, "create cannot be narrowed by resourceNames"
            verbs.update(rule["verbs"])
    return verbs


def env_of(c: Mapping[str, Any]) -> dict[str, str | None]:
    """Literal env values of a container (downward-API entries map to ``None``)."""
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def run_args(deployment: Mapping[str, Any]) -> Any:
    """The container args parsed by the real CLI parser (fails the test on a parse error)."""
    from shardlease.cli import build_parser

    args = container(deployment).get("args", [])
    command = container(deployment).get("command")
    assert command is None, "the image's ENTRYPOINT is `shardlease`; the Deployment passes only args"
    assert args[:1] == ["run"], f"the Deployment should run `shardlease run`, got {args}"
    parser = build_parser()
    try:
        return parser.parse_args(args)
    except SystemExit as exc:  # argparse reports on stderr and exits
        pytest.fail(f"`shardlease {' '.join(args)}` does not parse (exit {exc.code})")


def effective(deployment: Mapping[str, Any], dest: str, env_name: str, default: float) -> float:
    """A numeric option as the replica would see it: the argument, else the env var, else the default."""
    parsed = run_args(deployment)
    from_args = getattr(parsed, dest, None)
    if from_args is not None:
        return float(from_args)
    env = env_of(container(deployment))
    if env.get(env_name) is not None:
        return float(env[env_name])
    return default


def port_number(c: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    assert port in named, f"probe port {port!r} is not a declared container port"
    return named[port]


# --------------------------------------------------------------------------------------------------
# Wiring


def test_expected_kinds_and_namespaces(rendered: list[dict[str, Any]]) -> None:
    for kind in ("ServiceAccount", "RoleBinding", "Deployment", "PodDisruptionBudget"):
        assert of_kind(rendered, kind), f"{kind} missing"
    lease_role(rendered)
    namespaced = [o for o in rendered if o["kind"] != "Namespace"]
    assert len({ns(o) for o in namespaced}) == 1, "all objects must land in one namespace"
    assert not of_kind(rendered, "ClusterRole") and not of_kind(rendered, "ClusterRoleBinding"), (
        "shardlease needs no cluster-wide permissions"
    )


def test_rbac_is_wired_to_the_deployments_service_account(rendered: list[dict[str, Any]]) -> None:
    sa = one(rendered, "ServiceAccount")
    deployment = one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod.get("automountServiceAccountToken", True), "the replicas need their token"

    roles = {r["metadata"]["name"] for r in of_kind(rendered, "Role")}
    bound: set[str] = set()
    for binding in of_kind(rendered, "RoleBinding"):
        ref = binding["roleRef"]
        assert ref["kind"] == "Role" and ref["apiGroup"] == "rbac.authorization.k8s.io"
        assert ref["name"] in roles, f"{binding['metadata']['name']} refers to a missing Role"
        assert [(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]] == [
            ("ServiceAccount", sa["metadata"]["name"], ns(sa))
        ], "each RoleBinding binds exactly the Deployment's ServiceAccount in its namespace"
        bound.add(ref["name"])
    assert lease_role(rendered)["metadata"]["name"] in bound
    assert bound == roles, "every Role is bound"
    # Overlays must not drift from the verbs checked against real replicas below.
    assert lease_verbs(lease_role(rendered)) == lease_verbs(raw(BASE / "role.yaml"))


def test_selectors_match_the_pod_labels(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    pdb = one(rendered, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for owner, selector in (("Deployment", deployment["spec"]["selector"]), ("PDB", pdb["spec"]["selector"])):
        match = selector.get("matchLabels") or {}
        assert match, f"{owner} selector must not be empty (an empty PDB selector matches every pod)"
        assert set(selector) <= {"matchLabels"}, f"{owner}: only matchLabels is checked here"
        assert match.items() <= labels.items(), f"{owner} selector {match} misses pod labels {labels}"
    assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]
    assert ns(pdb) == ns(deployment)


def test_probes_and_scrape_annotations_use_the_metrics_port(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    c = container(deployment)
    metrics_port = getattr(run_args(deployment), "metrics_port", None)
    if metrics_port is None:
        metrics_port = env_of(c).get("SHARDLEASE_METRICS_PORT")
    assert metrics_port is not None, "the Deployment must set the metrics port (probes need the server)"
    metrics_port = int(metrics_port)
    assert metrics_port in [p["containerPort"] for p in c["ports"]], "metrics port must be declared"

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = c[probe]["httpGet"]
        assert http["path"] == path, f"{probe} must GET {path}"
        assert port_number(c, http["port"]) == metrics_port, f"{probe} must hit the metrics port"

    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/path") == "/metrics"
    assert int(annotations["prometheus.io/port"]) == metrics_port


def test_grace_period_covers_drain_and_release(rendered: list[dict[str, Any]]) -> None:
    """The kubelet must not SIGKILL a replica while it drains or releases its shards.

    Handlers get up to the drain timeout to return, and the release written after the last of them is
    bounded by the renew deadline (the manager gives up on shutdown after their sum), so the grace
    period must exceed drain timeout + renew deadline, not just the drain timeout.
    """
    deployment = one(rendered, "Deployment")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = effective(deployment, "drain_timeout", "SHARDLEASE_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT)
    renew = effective(deployment, "renew_deadline", "SHARDLEASE_RENEW_DEADLINE", DEFAULT_RENEW_DEADLINE)
    assert grace > drain, f"terminationGracePeriodSeconds {grace} <= drain timeout {drain}"
    assert grace > drain + renew, f"terminationGracePeriodSeconds {grace} <= drain {drain} + release {renew}"


def test_args_parse_and_name_an_importable_handler(rendered: list[dict[str, Any]]) -> None:
    parsed = run_args(one(rendered, "Deployment"))
    target = getattr(parsed, "target", "")
    assert re.fullmatch(r"[\w.]+:\w+", target), f"no MODULE:FUNC handler in the arguments {vars(parsed)}"
    module_name, func_name = target.split(":")
    # The image puts /app (holding examples/) on PYTHONPATH; here the repository root plays that role.
    module = importlib.import_module(module_name)
    assert callable(getattr(module, func_name)), f"{target} is not callable"


def test_env_vars_name_real_config_fields_and_validate(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardlease import ShardConfig

    deployment = one(rendered, "Deployment")
    c = container(deployment)
    env = env_of(c)
    prefix = str(ShardConfig.model_config.get("env_prefix") or "SHARDLEASE_")
    fields = set(ShardConfig.model_fields)
    ours = {k: v for k, v in env.items() if k.startswith(prefix)}
    assert ours, "the Deployment configures the group through SHARDLEASE_* env vars"
    for name in ours:
        assert name[len(prefix) :].lower() in fields, f"{name} names no ShardConfig field ({sorted(fields)})"

    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert downward.get("POD_NAME") == "metadata.name", "identity must be the pod name (unique per pod)"
    assert downward.get("POD_NAMESPACE") == "metadata.namespace"

    # The values must also be valid together: build the config the way `shardlease run` does (flags
    # given as keyword arguments, the rest from this environment alone).
    for key in [k for k in os.environ if k.startswith(prefix)]:
        monkeypatch.delenv(key)
    for key, value in ours.items():
        assert value is not None, f"{key} should be a literal value"
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POD_NAME", "example-shardlease-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "shardlease-example")
    flags = {k: v for k, v in vars(run_args(deployment)).items() if k in fields}
    config = ShardConfig(**flags)
    assert config.identity == "example-shardlease-7d9f-abcde", "identity must default to POD_NAME"
    assert config.namespace == "shardlease-example", "namespace must default to POD_NAMESPACE"
    assert config.group == ours[f"{prefix}GROUP"]
    assert config.shards == int(ours[f"{prefix}SHARDS"])


def test_pod_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"resources.{kind} needs cpu and memory"


def test_dockerfile_matches_the_deployment() -> None:
    """The image's user and entrypoint are what the Deployment assumes."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["shardlease"\]\s*$', dockerfile, re.M)
    user = re.findall(r"^USER (\d+)(?::\d+)?\s*$", dockerfile, re.M)
    deployment = raw(BASE / "deployment.yaml")
    pod = container(deployment)
    run_as = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert user and int(user[-1]) == run_as != 0, "numeric non-root USER equal to runAsUser"
    assert "examples" in dockerfile and "PYTHONPATH=/app" in dockerfile, "handlers import from /app"
    assert pod["args"][1].startswith("examples.")


# --------------------------------------------------------------------------------------------------
# RBAC verbs against what real replicas send


def settled(managers: list[Any], shards: int) -> bool:
    """Every manager sees the same members and holds exactly what the assignment gives it."""
    identities = {m.identity for m in managers}
    owned = [m.owned_shards() for m in managers]
    return (
        all(m.members() == identities for m in managers)
        and all(o == m.desired_shards() for o, m in zip(owned, managers))
        and sum(len(o) for o in owned) == shards
        and frozenset().union(*owned) == frozenset(range(shards))
    )


def test_role_grants_exactly_the_lease_verbs_replicas_send(tmp_path: Path) -> None:
    """Start two replicas, add a third (rebalance), stop all gracefully; compare verbs with the Role.

    In-process managers rather than processes, so that nothing but the replicas talks to the
    dev-server while it counts (progress is read from the managers, not from the API).
    """
    from shardlease import ShardConfig, ShardManager
    from shardlease.devserver import DevServer

    granted = lease_verbs(raw(BASE / "role.yaml"))
    for verb, (module, pattern, _reason) in RARE_LEASE_VERBS.items():
        assert verb in granted, f"{verb} is listed as a rare verb but the Role does not grant it"
        source = (REPO / "shardlease" / module).read_text()
        assert re.search(pattern, source), f"the rare path for {verb!r} ({pattern}) is gone from {module}"

    shards = 12
    with DevServer(host="127.0.0.1", port=0, faults=True) as srv:
        kubeconfig = tmp_path / "kubeconfig"
        srv.write_kubeconfig(kubeconfig)

        def replica(identity: str) -> Any:
            config = ShardConfig(
                group="rbac", shards=shards, namespace="default", identity=identity,
                kubeconfig=str(kubeconfig), lease_duration=2.0, renew_deadline=1.2, retry_period=0.3,
            )
            return ShardManager(config, lambda shard: shard.stopped.wait()).start()

        managers = [replica("rbac-a"), replica("rbac-b")]
        try:
            wait_for(lambda: settled(managers, shards), 45, "two replicas to split the shards")
            managers.append(replica("rbac-c"))
            wait_for(lambda: settled(managers, shards), 45, "the rebalance onto a third replica")
        finally:
            for manager in managers:
                manager.stop()
            stopped = [manager.wait(30) for manager in managers]
        assert all(stopped), "a replica did not finish its graceful stop"
        observed = {verb for (verb, resource) in srv.request_counts() if resource == "leases"}

    assert observed, "the replicas sent no Lease requests at all"
    assert observed <= granted, f"the code sends {sorted(observed - granted)} on leases; the Role lacks it"
    unused = granted - observed - set(RARE_LEASE_VERBS)
    assert not unused, f"the Role grants {sorted(unused)} on leases, which the code never sent"


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body; status 0 while nothing listens yet (the server is still starting)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def test_probe_and_scrape_paths_answer_on_a_running_replica(tmp_path: Path) -> None:
    """The Deployment's probe and scrape paths are real endpoints of a replica's metrics server.

    Uses the base Deployment as written (no kustomize needed): the kubelet would GET exactly these
    paths on the metrics port, so each must answer 200 once the replica holds its member Lease.
    """
    from shardlease import ShardConfig, ShardManager
    from shardlease.devserver import DevServer

    deployment = raw(BASE / "deployment.yaml")
    c = container(deployment)
    paths = [c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"],
             deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]]
    port = free_port()
    with DevServer(host="127.0.0.1", port=0) as srv:
        kubeconfig = tmp_path / "kubeconfig"
        srv.write_kubeconfig(kubeconfig)
        config = ShardConfig(group="probes", shards=4, namespace="default", identity="probe-a",
                             kubeconfig=str(kubeconfig), metrics_port=port, lease_duration=2.0,
                             renew_deadline=1.2, retry_period=0.3)
        manager = ShardManager(config, lambda shard: shard.stopped.wait()).start()
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: all(http_get(base + p)[0] == 200 for p in paths), 30,
                     f"{paths} to answer 200 on the metrics port")
            status, body = http_get(base + paths[2])
            assert status == 200 and b"shardlease" in body, "the scrape path serves shardlease metrics"
        finally:
            manager.stop()
            assert manager.wait(30)


def test_container_command_runs_and_stops_within_the_grace_period(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The container as the Deployment defines it (args, env, downward-API values) joins a group,
    answers its readiness probe, and on SIGTERM releases everything and exits 0 well before the
    kubelet's SIGKILL. Only the metrics port is moved to a free one, and the kubeconfig replaces the
    in-cluster service account.
    """
    from shardlease.harness.localcluster import LocalCluster

    deployment = one(rendered, "Deployment")
    c = container(deployment)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    namespace = ns(deployment) or "default"
    port = free_port()
    args = [a for a in c["args"] if not a.startswith("--metrics-port")] + [f"--metrics-port={port}"]
    pod_name = "shardlease-5f7c9d-x2x4q"
    env = {k: v for k, v in env_of(c).items() if v is not None}
    env.update({"POD_NAME": pod_name, "POD_NAMESPACE": namespace})
    readyz = f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}"

    with LocalCluster(group=env["SHARDLEASE_GROUP"], shards=int(env["SHARDLEASE_SHARDS"]),
                      namespace=namespace, cwd=str(REPO), work_dir=tmp_path) as cluster:
        cluster.start()
        pod = cluster.add_replica(pod_name, argv=args, env=env)
        try:
            wait_for(lambda: http_get(readyz)[0] == 200, 45, "the readiness probe to pass")
            wait_for(lambda: cluster.snapshot().all_held([pod_name]), 45, "the pod to hold every shard")
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            for path in (c["livenessProbe"]["httpGet"]["path"], annotations["prometheus.io/path"]):
                assert http_get(f"http://127.0.0.1:{port}{path}")[0] == 200, path
        except BaseException:
            print(cluster.diagnostics())
            raise
        sent = pod.terminate()
        code = pod.wait(grace)
        took = time.monotonic() - sent
        assert code == 0, f"exit code {code} after SIGTERM\n{cluster.diagnostics()}"
        # Idle handlers return at once, so this is mostly the release; a drain can add up to its timeout.
        assert took < grace / 2, f"graceful stop took {took:.1f}s of the {grace}s grace period"
        after = cluster.snapshot()
        assert not after.members() and not any(after.holders().values()), after.render()
