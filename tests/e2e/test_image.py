"""The image scripts/build-images makes is the one deploy/Dockerfile describes.

Users with Docker build deploy/Dockerfile; the local node runs an image assembled from Debian packages
and the project's wheel (no registry here). What a pod's behaviour depends on must agree between the
two: entrypoint and default command, the numeric user (runAsNonRoot checks it), the environment
(unbuffered logs, no .pyc writes on the read-only root, /app on the path), the working directory,
the Python minor version and the shardlease version installed. This reads both and compares.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from shardlease.controlplane.images import read_oci_archive

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def dockerfile_final_stage() -> dict[str, Any]:
    """FROM, ENTRYPOINT, CMD, USER, ENV, WORKDIR, EXPOSE of the Dockerfile's last stage."""
    text = (REPO / "deploy" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    stage: dict[str, Any] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = {"FROM": rest.split()[0], "ENV": {}}
        elif word in ("ENTRYPOINT", "CMD"):
            stage[word] = json.loads(rest)
        elif word == "ENV":
            stage["ENV"].update(dict(part.split("=", 1) for part in shlex.split(rest)))
        elif word in ("USER", "WORKDIR", "EXPOSE"):
            stage[word] = rest.strip()
    return stage


def layer_files(layers: list[bytes]) -> dict[str, tarfile.TarInfo]:
    files: dict[str, tarfile.TarInfo] = {}
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            for member in tar.getmembers():
                files[member.name.lstrip("./")] = member
    return files


def test_image_matches_the_dockerfile(image_archive: Path) -> None:
    docker = dockerfile_final_stage()
    config, layers = read_oci_archive(image_archive)
    run = config["config"]  # type: ignore[index]
    assert run["Entrypoint"] == docker["ENTRYPOINT"] == ["shardlease"]
    assert run["Cmd"] == docker["CMD"]
    assert run["User"] == docker["USER"] == "10001:10001"
    assert run["WorkingDir"] == docker["WORKDIR"]
    assert set(run["ExposedPorts"]) == {f"{docker['EXPOSE']}/tcp"}
    env = dict(e.split("=", 1) for e in run["Env"])
    for name, value in docker["ENV"].items():
        assert env.get(name) == value, f"ENV {name}: Dockerfile {value!r}, image {env.get(name)!r}"

    files = layer_files(layers)
    # python:3.11-slim -> the image's interpreter is 3.11 too.
    want = re.match(r"python:(\d+\.\d+)", docker["FROM"])
    assert want, f"unexpected base {docker['FROM']}"
    assert f"usr/bin/python{want.group(1)}" in files, f"no python{want.group(1)} in the image"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    dist = [n for n in files if re.fullmatch(rf"usr/local/lib/python{want.group(1)}/dist-packages/"
                                             rf"shardlease-{re.escape(version)}\.dist-info/METADATA", n)]
    assert dist, f"shardlease {version} is not installed in the image"
    script = files["usr/local/bin/shardlease"]
    assert script.mode & 0o111, "the shardlease entrypoint is not executable"
    # The user the Dockerfile's useradd makes, so names resolve (ps, logs) as in the Docker image.
    passwd = [m for m in files if m == "etc/passwd"]
    assert passwd
    with tarfile.open(fileobj=io.BytesIO(layers[-1])) as tar:
        handle = tar.extractfile("etc/passwd")
        assert handle is not None
        assert any(line.startswith("shardlease:x:10001:10001:") for line in handle.read().decode().splitlines())
    assert "app/examples/configmap_controller.py" in files
