"""Container images for the local node, built without Docker or a registry.

Two images, each written as an OCI image-layout tarball that ``ctr images import`` reads:

* ``shardlease-examples:0.1.0`` -- what ``deploy/Dockerfile`` describes: Python 3.11, the project's
  wheel and its dependencies installed under ``/usr/local``, the ``shardlease`` entrypoint, ``examples/``
  in ``/app``, user ``10001:10001``. The Dockerfile starts from ``python:3.11-slim``, which cannot be
  pulled here; Debian bookworm's own ``python3`` (3.11) is the same minor version, so the base layer is
  a ``debootstrap --variant=minbase`` root with ``python3`` in it. The second layer holds what the
  Dockerfile's ``pip install`` and ``useradd`` add. ``tests/e2e/test_image.py`` compares the result with
  the Dockerfile (entrypoint, user, Python version, installed version), so the two cannot drift apart.
* the pause (sandbox) image: the ``pause`` binary that ``scripts/build-node-assets`` compiles from
  Kubernetes' own ``build/pause/linux/pause.c``, alone in one layer, run as 65535 like upstream's.

Everything is cached under ``~/.cache/shardlease/images``: the base root (rebuilt only when its
package list changes), the dependency wheels, and each image tarball under a name that carries a
digest of its inputs (sources, examples, base), so a second run with unchanged sources costs a hash.

Run as ``python -m shardlease.controlplane.images [--node-assets DIR]`` (``scripts/build-images`` does);
it prints the tarballs' paths. Needs root (debootstrap, chroot-free ownership of the base files).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ControlPlaneError

#: The image deploy/overlays/example runs (its ``images:`` entry), fully qualified as containerd stores it.
EXAMPLES_IMAGE = "docker.io/library/shardlease-examples:0.1.0"
#: The sandbox image containerd is told to use (never pulled: imported, and pinned in its config).
PAUSE_IMAGE = "localhost/shardlease/pause:1.36"
#: Debian release whose python3 matches the Dockerfile's ``python:3.11-slim``.
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "ca-certificates")
#: Where the project's wheel and its dependencies are installed, as the Dockerfile's pip does.
PREFIX = "/usr/local"
SITE = f"{PREFIX}/lib/python3.11/dist-packages"
USER = "10001:10001"
#: Same environment as the Dockerfile's ENV (PATH and LANG as the python image sets them).
ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
    "PYTHONPATH=/app",
)
#: A fixed time for the metadata files of an archive (oci-layout, index, config, manifest).
EPOCH = 1700000000
#: Bumped when the way layers are written changes, so cached base layers are written again.
LAYER_FORMAT = 2
REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shardlease" / "images"


def log(message: str) -> None:
    print(f"build-images: {message}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str], what: str, **kwargs: object) -> None:
    try:
        subprocess.run(list(argv), check=True, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise ControlPlaneError(f"{what}: {argv[0]} is not installed ({exc}); on Debian: "
                                f"apt-get install {argv[0]}") from None
    except subprocess.CalledProcessError as exc:
        raise ControlPlaneError(f"{what}: `{' '.join(argv)}` exited with {exc.returncode}; see its "
                                f"output above") from None


# ---------------------------------------------------------------------------- layers and layouts

def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # Modification times are kept: a .pyc records its source's mtime, and Python recompiles (in
    # memory, on every start, since the root is read-only) any module whose source mtime differs.
    info.uname = info.gname = ""
    return info


def write_layer(root: Path, target: Path, skip: Iterable[str] = ()) -> str:
    """Tar ``root``'s contents (paths relative to it, sorted, fixed mtimes, numeric owners) into
    ``target``; returns the sha256 of the uncompressed tar (the layer's diff id)."""
    skipped = {s.strip("/") for s in skip}
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            kept = []
            for name in dirnames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel in skipped:
                    # The directory itself stays (as the runtime mounts over it), empty.
                    info = tar.gettarinfo(os.path.join(dirpath, name), arcname=rel)
                    filtered = _tar_filter(info)
                    if filtered is not None:
                        tar.addfile(filtered)
                    continue
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, arcname=rel)
                filtered = _tar_filter(info)
                if filtered is None:
                    continue
                tar.addfile(filtered)
                if not os.path.islink(full):
                    kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, arcname=rel)
                filtered = _tar_filter(info)
                if filtered is None:
                    continue
                if filtered.isreg():
                    with open(full, "rb") as handle:
                        tar.addfile(filtered, handle)
                else:
                    tar.addfile(filtered)
    digest = hashlib.sha256()
    with open(tmp, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    os.replace(tmp, target)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config this project sets (and its test compares)."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    env: tuple[str, ...]
    working_dir: str
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


def write_oci_archive(target: Path, name: str, layers: Sequence[tuple[Path, str]],
                      config: ImageConfig) -> Path:
    """Write an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) as one tar.

    Layers are stored uncompressed (the media type says so), so a layer's digest is its diff id."""
    blobs: list[tuple[str, Path | bytes]] = []

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs.append((digest, data))
        return digest

    layer_descs = []
    for path, diff_id in layers:
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": diff_id, "size": path.stat().st_size})
        blobs.append((diff_id, path))
    image_config = {
        "architecture": "amd64", "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Entrypoint": list(config.entrypoint), "Cmd": list(config.cmd), "User": config.user,
            "Env": list(config.env), "WorkingDir": config.working_dir,
            "ExposedPorts": {port: {} for port in config.exposed_ports},
            "Labels": dict(config.labels),
        },
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "shardlease build-images"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_digest = blob(config_bytes)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": layer_descs,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = blob(manifest_bytes)
    index = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            # containerd names the imported image after this annotation.
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }],
    }
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add_bytes(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
        seen: set[str] = set()
        for digest, content in blobs:
            if digest in seen:
                continue
            seen.add(digest)
            arcname = "blobs/sha256/" + digest.split(":", 1)[1]
            if isinstance(content, bytes):
                add_bytes(arcname, content)
            else:
                info = tar.gettarinfo(str(content), arcname=arcname)
                info.mtime, info.uname, info.gname, info.uid, info.gid = EPOCH, "", "", 0, 0
                with open(content, "rb") as handle:
                    tar.addfile(info, handle)
    os.replace(tmp, target)
    return target


def read_oci_archive(path: Path) -> tuple[dict[str, object], list[bytes]]:
    """The image config and the layer tars of an archive written by :func:`write_oci_archive`
    (for tests: what the kubelet will run, read back from the file containerd imports)."""
    with tarfile.open(path) as tar:
        def member(name: str) -> bytes:
            handle = tar.extractfile(name)
            if handle is None:
                raise ControlPlaneError(f"{path}: {name} is not a file")
            return handle.read()

        index = json.loads(member("index.json"))
        manifest = json.loads(member("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        config = json.loads(member("blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
        layers = [member("blobs/sha256/" + layer["digest"].split(":")[1]) for layer in manifest["layers"]]
    return config, layers


# ---------------------------------------------------------------------------- the examples image

def _digest_paths(paths: Iterable[Path], base: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _sources(repo: Path) -> list[Path]:
    """What the Dockerfile's build context sends (deploy/Dockerfile.dockerignore)."""
    found = [repo / "pyproject.toml", repo / "README.md"]
    for top in ("shardlease", "examples"):
        found += [p for p in (repo / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix != ".pyc"]
    return found


def build_base(cache: Path) -> tuple[Path, Path, str]:
    """The debootstrapped root (cached): its directory, its layer tar and the layer's diff id."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(BASE_PACKAGES)} v1".encode()).hexdigest()[:12]
    base = cache / f"base-{SUITE}-{key}"
    rootfs = base / "rootfs"
    layer, diff_file = base / f"layer-{LAYER_FORMAT}.tar", base / f"layer-{LAYER_FORMAT}.diffid"
    if layer.is_file() and diff_file.is_file():
        return rootfs, layer, diff_file.read_text().strip()
    if (base / "debootstrapped").is_file():
        for stale in base.glob("layer*"):
            stale.unlink()
        diff_id = write_layer(rootfs, layer, skip=("dev", "proc", "sys", "run", "tmp"))
        diff_file.write_text(diff_id + "\n")
        return rootfs, layer, diff_id
    if os.geteuid() != 0:
        raise ControlPlaneError("build-images: debootstrap needs root to build the base image; run as root")
    if shutil.which("debootstrap") is None:
        raise ControlPlaneError("build-images: debootstrap is not installed; apt-get install debootstrap")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    log(f"debootstrap {SUITE} with {', '.join(BASE_PACKAGES)} (cold: 2-5 min)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
          str(rootfs), MIRROR], "debootstrap", stdout=sys.stderr)
    # What the slim images leave out too: package caches and lists, logs, docs.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                 "usr/share/info", "var/log"):
        target = rootfs / junk
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()
    (base / "debootstrapped").touch()
    diff_id = write_layer(rootfs, layer, skip=("dev", "proc", "sys", "run", "tmp"))
    diff_file.write_text(diff_id + "\n")
    return rootfs, layer, diff_id


def build_examples_image(repo: Path = REPO, cache: Path | None = None) -> Path:
    """``shardlease-examples:0.1.0`` as an OCI archive (cached by a digest of its inputs)."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    rootfs, base_layer, base_diff = build_base(cache)
    key = _digest_paths(_sources(repo), repo) + "-" + base_diff.split(":")[1][:8]
    target = cache / f"shardlease-examples-0.1.0-{key}.oci.tar"
    if target.is_file():
        log(f"{EXAMPLES_IMAGE} cached: {target}")
        return target
    log(f"building {EXAMPLES_IMAGE} from the wheel of {repo}")
    python = Path("/usr/bin/python3.11")
    if not (rootfs / "usr/bin/python3.11").exists():
        raise ControlPlaneError(f"build-images: {rootfs} has no /usr/bin/python3.11; delete "
                                f"{rootfs.parent} to rebuild the base")
    if not python.exists():
        raise ControlPlaneError("build-images: /usr/bin/python3.11 is needed to install the wheel with "
                                "the image's interpreter path in its scripts; apt-get install python3 python3-pip")
    with tempfile.TemporaryDirectory(prefix="shardlease-image-") as tmp_name:
        tmp = Path(tmp_name)
        wheels = tmp / "wheel"
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(repo)],
             "pip wheel", stdout=sys.stderr)
        wheel = next(wheels.glob("shardlease-*.whl"))
        deps = cache / "wheels"
        # The dependencies as the image's interpreter (3.11, manylinux) needs them; pip skips what
        # the directory already holds.
        _run([str(python), "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", str(deps),
              "--find-links", str(deps), str(wheel)], "pip download", stdout=sys.stderr)
        stage = tmp / "layer"
        # /usr/bin/python3.11 installs, so the `shardlease` script's #! names the image's python.
        _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(deps),
              # Debian's python maps prefix /usr to /usr/local (its posix_local scheme).
              "--root", str(stage), "--prefix", "/usr", "--ignore-installed", "--no-compile",
              "--no-warn-script-location", "--break-system-packages", str(wheel)],
             "pip install", stdout=sys.stderr)
        site = stage / SITE.lstrip("/")
        if not site.is_dir():
            raise ControlPlaneError(f"build-images: pip did not install into {SITE} (layout of this "
                                    f"Python's install scheme changed?); found: {sorted(stage.rglob('*-packages'))}")
        # Byte-code compiled once here (the root is read-only in the pod, and PYTHONDONTWRITEBYTECODE
        # stops Python writing it anyway), with the paths the image will have.
        _run([str(python), "-m", "compileall", "-q", "-j", "0", "-d", SITE, str(site)],
             "compileall", stdout=sys.stderr)
        # The Dockerfile's groupadd/useradd, as lines in copies of the base's files.
        etc = stage / "etc"
        etc.mkdir(parents=True)
        for name, line in (("passwd", "shardlease:x:10001:10001::/home/shardlease:/usr/sbin/nologin"),
                           ("group", "shardlease:x:10001:"),
                           ("shadow", "shardlease:!:19675::::::"),
                           ("gshadow", "shardlease:!::")):
            original = (rootfs / "etc" / name).read_text()
            (etc / name).write_text(original.rstrip("\n") + "\n" + line + "\n")
            shutil.copymode(rootfs / "etc" / name, etc / name)
            stat = (rootfs / "etc" / name).stat()
            os.chown(etc / name, stat.st_uid, stat.st_gid)
        shutil.copytree(repo / "examples", stage / "app" / "examples",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for path in [stage, *stage.rglob("*")]:
            if not path.is_symlink() and not (path.parent == etc and path.name in ("shadow", "gshadow")):
                os.chown(path, 0, 0)
        app_layer = tmp / "app.tar"
        app_diff = write_layer(stage, app_layer)
        config = ImageConfig(entrypoint=("shardlease",), cmd=("--help",), user=USER, env=ENV,
                             working_dir="/app", exposed_ports=("8080/tcp",),
                             labels=(("org.opencontainers.image.source", "deploy/Dockerfile"),))
        write_oci_archive(target, EXAMPLES_IMAGE, [(base_layer, base_diff), (app_layer, app_diff)], config)
    for stale in cache.glob("shardlease-examples-0.1.0-*.oci.tar"):
        if stale != target:
            stale.unlink()
    log(f"wrote {target}")
    return target


def build_pause_image(node_assets: Path, cache: Path | None = None) -> Path:
    """The sandbox image from the ``pause`` binary ``scripts/build-node-assets`` compiled."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    binary = node_assets / "pause"
    if not os.access(binary, os.X_OK):
        raise ControlPlaneError(f"pause: {binary} is missing; build it with `scripts/build-node-assets "
                                f"{node_assets}`")
    key = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    target = cache / f"pause-{key}.oci.tar"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="shardlease-pause-") as tmp_name:
        stage = Path(tmp_name) / "root"
        stage.mkdir()
        shutil.copy2(binary, stage / "pause")
        os.chmod(stage / "pause", 0o755)
        layer = Path(tmp_name) / "layer.tar"
        diff = write_layer(stage, layer)
        write_oci_archive(target, PAUSE_IMAGE, [(layer, diff)],
                          ImageConfig(entrypoint=("/pause",), cmd=(), user="65535:65535",
                                      env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
                                      working_dir="/"))
    log(f"wrote {target}")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-assets", type=Path, help="directory of scripts/build-node-assets (for pause)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the source checkout to build the wheel of")
    args = parser.parse_args(argv)
    try:
        print(build_examples_image(args.repo))
        if args.node_assets:
            print(build_pause_image(args.node_assets))
    except ControlPlaneError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
