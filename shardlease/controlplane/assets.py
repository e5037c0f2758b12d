"""Where the control-plane binaries are, and whether they can run.

The binaries are built by ``scripts/build-kube-assets`` (pinned in ``scripts/kube-assets.env``) into a
per-version cache directory; envtest users already have a directory of the same shape named by
``$KUBEBUILDER_ASSETS``. Both are accepted, so one fixture serves our own tests and our users'.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ControlPlaneError

#: The binaries a control plane needs (toxiproxy-server is optional: only chaos tests use it).
REQUIRED_BINARIES = ("etcd", "kube-apiserver")
#: envtest's variable naming a directory of binaries.
ASSETS_ENV = "KUBEBUILDER_ASSETS"
#: The pinned versions, next to the build script in a source checkout.
_PINS = Path(__file__).resolve().parents[2] / "scripts" / "kube-assets.env"
BUILD_HINT = "scripts/build-kube-assets"


def cache_root() -> Path:
    """The directory ``scripts/build-kube-assets`` builds under by default."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shardlease" / "kube-assets"


def pinned_tag(pins: Path = _PINS) -> str | None:
    """The cache directory name for the pinned versions, or ``None`` outside a source checkout."""
    try:
        text = pins.read_text()
    except OSError:
        return None
    values = dict(line.split("=", 1) for line in text.splitlines()
                  if "=" in line and not line.lstrip().startswith("#"))
    try:
        return (f"k8s-{values['KUBERNETES_VERSION'].strip()}_etcd-{values['ETCD_VERSION'].strip()}"
                f"_toxiproxy-{values['TOXIPROXY_VERSION'].strip()}")
    except KeyError:
        return None


def _holds_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in REQUIRED_BINARIES)


def find_assets(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The assets directory to use, or ``None`` when there is none.

    An explicit directory, then ``$KUBEBUILDER_ASSETS``, are returned as given (even if wrong, so that
    starting from them fails with a message about *that* directory rather than silently using another);
    otherwise the build script's cache directory for the pinned versions, or failing that the newest
    cached build, if it holds the binaries.
    """
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(ASSETS_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    root = cache_root()
    tag = pinned_tag()
    if tag is not None and _holds_binaries(root / tag):
        return root / tag
    try:
        candidates = [d for d in root.iterdir() if d.is_dir() and _holds_binaries(d)]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda d: (d / "kube-apiserver").stat().st_mtime)


def check_assets(assets_dir: Path) -> dict[str, Path]:
    """Each required binary's path; a :class:`ControlPlaneError` naming the fix if one cannot run."""
    if not assets_dir.is_dir():
        raise ControlPlaneError(
            f"kube assets directory {assets_dir} does not exist (from --kube-assets or "
            f"${ASSETS_ENV}); build it with `{BUILD_HINT} {assets_dir}` or point {ASSETS_ENV} at a "
            f"directory holding {' and '.join(REQUIRED_BINARIES)}")
    binaries: dict[str, Path] = {}
    for name in REQUIRED_BINARIES:
        path = assets_dir / name
        if not path.exists():
            raise ControlPlaneError(
                f"{name}: binary {path} is missing from the kube assets directory; build it with "
                f"`{BUILD_HINT} {assets_dir}`")
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ControlPlaneError(
                f"{name}: {path} is not an executable file; fix it with `chmod +x {path}` or "
                f"rebuild with `{BUILD_HINT} {assets_dir}`")
        binaries[name] = path
    return binaries
