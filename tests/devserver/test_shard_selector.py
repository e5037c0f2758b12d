"""The dev-server's KEP-5866 ``shardSelector``: the hash, the parser's accept/refuse set (the
messages measured on kube-apiserver 1.36.3), the feature gate on DevServer and on the CLI.
The same behaviour against the real server is in tests/conformance/test_shard_selector.py."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from shardlease.devserver import DevServer
from shardlease.devserver.shardselector import ShardSelectorError, fnv1a_64, parse

ZERO, HALF, TOP = "0x0000000000000000", "0x8000000000000000", "0x10000000000000000"
CANONICAL = f"shardRange(object.metadata.uid, '{ZERO}', '{HALF}')"


def test_fnv1a_64_reference_vectors() -> None:
    """Go's hash/fnv New64a values (also in the FNV reference's test suite)."""
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


@pytest.mark.parametrize("text", [
    CANONICAL,
    f"({CANONICAL})",
    f'shardRange(object.metadata.uid, "{ZERO}", "{HALF}")',
    f"shardRange( object.metadata.uid ,r'{ZERO}',  '''{HALF}''' ) // a comment",
    f"shardRange(object.metadata.uid, '\\x30x0000000000000000', '{HALF}')",
    f"object.shardRange(object.metadata.uid, '{ZERO}', '{HALF}')",  # CEL's receiver form: target dropped
])
def test_accepted_spellings_have_one_canonical_form(text: str) -> None:
    """Measured on kube-apiserver 1.36.3: parentheses, double-quoted, raw and triple-quoted strings,
    escapes and comments are all CEL, so all accepted, and echoed in one canonical form."""
    assert str(parse(text)) == CANONICAL


def test_several_terms_keep_their_order_and_field() -> None:
    text = (f"shardRange(object.metadata.namespace,'{HALF}','{TOP}')||"
            f"shardRange(object.metadata.namespace,'{ZERO}','0x0000000000000001')")
    assert str(parse(text)) == (f"shardRange(object.metadata.namespace, '{HALF}', '{TOP}') || "
                                f"shardRange(object.metadata.namespace, '{ZERO}', '0x0000000000000001')")


@pytest.mark.parametrize(("text", "message"), [
    (f"shardRange(object.metadata.uid, b'{ZERO}', '{HALF}')", "hexStart must be a string literal, got []uint8"),
    (f"shardRange(object.metadata.uid, '{ZERO}', 1.5)", "hexEnd must be a string literal, got float64"),
    (f"shardRange(object['metadata'].uid, '{ZERO}', '{HALF}')",
     "shardRange() first argument: expected field path (e.g. object.metadata.uid), got expression kind 1"),
    (f"shardRange(.object.metadata.uid, '{ZERO}', '{HALF}')",
     'unsupported field path ".object.metadata.uid"; supported: object.metadata.uid, object.metadata.namespace'),
    (f"!{CANONICAL}", 'unsupported function "!_"; only shardRange() and || are allowed'),
    ("[1]", "unexpected expression kind 4; expected shardRange() call or || operator"),
    (f"shardRange(object.metadata.uid, '0x', '{HALF}')", "hexStart: hex value is required after '0x'"),
    (f"shardRange(object.metadata.uid, 'x0000000000000000', '{HALF}')",
     "hexStart must have '0x' prefix, got \"x0000000000000000\""),
    (f"{CANONICAL} | {CANONICAL}", "CEL parse error: Syntax error: token recognition error at: '| '"),
    (f"shardRange(object.metadata.in, '{ZERO}', '{HALF}')",
     "CEL parse error: Syntax error: no viable alternative at input '.in'"),
])
def test_refused_with_kubes_message(text: str, message: str) -> None:
    with pytest.raises(ShardSelectorError) as caught:
        parse(text)
    assert str(caught.value) == message


@pytest.fixture(scope="module")
def gated() -> Iterator[DevServer]:
    with DevServer(feature_gates={"ShardedListAndWatch": True}) as server:
        yield server


def get(server: DevServer, path: str, **query: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}?{urlencode(query)}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_every_resource_takes_the_selector(gated: DevServer) -> None:
    """Leases, ConfigMaps and Namespaces alike (the parameter is generic on kube-apiserver)."""
    for path in ("/apis/coordination.k8s.io/v1/leases", "/api/v1/namespaces/default/configmaps",
                 "/api/v1/namespaces"):
        code, body = get(gated, path, shardSelector=CANONICAL)
        assert code == 200 and body["metadata"] == {
            "resourceVersion": body["metadata"]["resourceVersion"],  # type: ignore[index]
            "shardInfo": {"selector": CANONICAL}}, (path, body)


def test_feature_gates_are_checked() -> None:
    assert DevServer().feature_gates == {"ShardedListAndWatch": False}
    with pytest.raises(ValueError, match="unknown feature gate 'ShardedListAndWatc'.*ShardedListAndWatch"):
        DevServer(feature_gates={"ShardedListAndWatc": True})
    with pytest.raises(ValueError, match=r"feature_gates\['ShardedListAndWatch'\]: expected True or False"):
        DevServer(feature_gates={"ShardedListAndWatch": "yes"})  # type: ignore[dict-item]


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shardlease", "dev-server", *args], capture_output=True,
                          text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})


def test_cli_refuses_a_gate_the_embedded_server_does_not_know(tmp_path: object) -> None:
    done = run_cli("--feature-gates", "APIServerTracing=true", "--kubeconfig", f"{tmp_path}/k")
    assert done.returncode == 2
    assert "--feature-gates: the embedded server does not know APIServerTracing" in done.stderr
    assert "--kube-assets" in done.stderr  # the fix


def test_cli_turns_the_gate_on(tmp_path: object) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "dev-server", "--feature-gates", "ShardedListAndWatch=true",
         "--kubeconfig", f"{tmp_path}/k"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "/usr/bin:/bin"})
    try:
        assert process.stdout is not None
        url = ""
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                url = line.split("listening on ")[1].strip()
            if line.startswith("try:"):
                break
        assert url and "feature gates on: ShardedListAndWatch\n" in lines, lines
        with urllib.request.urlopen(f"{url}/api/v1/namespaces?{urlencode({'shardSelector': CANONICAL})}",
                                    timeout=10) as response:
            assert json.loads(response.read())["metadata"]["shardInfo"] == {"selector": CANONICAL}
    finally:
        process.terminate()
        process.wait(10)
