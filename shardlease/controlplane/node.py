"""A one-node Kubernetes on this machine: the real control plane plus a kubelet that runs pods.

:class:`LocalNode` starts, on top of :class:`~shardlease.controlplane.RealControlPlane` (etcd +
kube-apiserver), the rest of what a cluster runs: kube-controller-manager (Deployments, ReplicaSets,
service accounts and their tokens), kube-scheduler, containerd 2.x with runc, the kubelet, a CNI
bridge and kube-proxy (iptables mode) for Services. Binaries come from ``scripts/build-kube-assets``
and ``scripts/build-node-assets``; images from ``scripts/build-images`` are imported into containerd's
``k8s.io`` namespace, so nothing is pulled. ``scripts/local-cluster up|down`` drives it from a shell;
``tests/e2e`` has a pytest fixture.

Choices, and why:

* **Networking.** A bridge ``shl0`` owns ``10.88.0.1/24``; pods get addresses from it (CNI ``bridge`` +
  ``host-local``) in network namespaces containerd creates. kube-apiserver binds ``10.88.0.1`` only,
  and the ``kubernetes`` Service's endpoint is that address, so pods reach it through the Service's
  cluster IP (``10.96.0.1:443``, DNAT by kube-proxy) with the token the kubelet projects. Traffic
  stays on that bridge (no uplink, no masquerade) and on loopback; the host's own interfaces carry
  nothing. The kubelet, controller-manager and scheduler bind loopback or ``10.88.0.1``.
* **cgroups.** This machine is hybrid: every controller is bound to the v1 hierarchies and the
  cgroup2 mount at ``/sys/fs/cgroup/unified`` has none, so only v1 can limit a pod's CPU and memory.
  The kubelet therefore runs on cgroup v1 (``failCgroupV1: false``, which 1.35+ requires for that)
  with the ``cgroupfs`` driver (no systemd manages this machine's cgroups), and runc the same
  (``SystemdCgroup = false``). Everything goes under one ``/shardlease`` cgroup, removed on stop.
* **Identities.** Each component authenticates as the user Kubernetes' built-in roles are bound to
  (``system:node:<node>`` in ``system:nodes`` under the Node authorizer, ``system:kube-proxy``,
  ``system:kube-controller-manager``, ``system:kube-scheduler``); kube-apiserver reaches the kubelet
  (``kubectl logs``/``exec``) with a client certificate the kubelet checks against the cluster CA.
* **Leaving nothing behind.** :meth:`LocalNode.stop` (also from :func:`cleanup`, for a node whose
  launcher died) kills the containers through their cgroups and the runc shims by their socket
  address, unmounts everything under the work directory (overlay roots, tokens, pod network
  namespaces), deletes the bridge and the iptables chains kube-proxy and the kubelet made, removes
  the cgroups and puts back the kernel settings the kubelet and the bridge plugin change.

Root is required (cgroups, mounts, network namespaces), as for any kubelet.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import ControlPlaneError
from .plane import RealControlPlane, _free_port
from .process import Child

NODE_NAME = "shardlease-node"
BRIDGE = "shl0"
NODE_IP = "10.88.0.1"
POD_CIDR = "10.88.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
CGROUP_ROOT = "shardlease"
CNI_BIN_DIR = Path("/usr/lib/cni")
#: Written by :meth:`LocalNode.start` so that :func:`cleanup` can find a node whose launcher died.
STATE_FILE = Path("/run/shardlease-node.json")
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler", "containerd",
                 "containerd-shim-runc-v2", "ctr")
#: Kernel settings the kubelet (its defaults for a node) and the CNI bridge plugin (forwarding)
#: change; saved before start and written back on stop.
SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
           "net/ipv4/conf/all/route_localnet")
USERS = {
    f"system:node:{NODE_NAME}": ("system:nodes",),
    "system:kube-proxy": (),
    "system:kube-controller-manager": (),
    "system:kube-scheduler": (),
}
_MNT_DETACH = 2


def node_assets_hint(directory: Path | None) -> str:
    return f"scripts/build-node-assets {directory}" if directory else "scripts/build-node-assets"


def find_node_assets(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The node binaries' directory: ``explicit``, ``$SHARDLEASE_NODE_ASSETS``, or the build
    script's cache for the pinned versions."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("SHARDLEASE_NODE_ASSETS", "").strip()
    if from_env:
        return Path(from_env).expanduser()
    pins = Path(__file__).resolve().parents[2] / "scripts" / "kube-assets.env"
    try:
        values = dict(line.split("=", 1) for line in pins.read_text().splitlines()
                      if "=" in line and not line.lstrip().startswith("#"))
        tag = f"k8s-{values['KUBERNETES_VERSION'].strip()}_containerd-{values['CONTAINERD_VERSION'].strip()}"
    except (OSError, KeyError):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidate = Path(base) / "shardlease" / "node-assets" / tag
    return candidate if candidate.is_dir() else None


def _check_node_assets(directory: Path) -> None:
    missing = [n for n in (*NODE_BINARIES, "pause") if not os.access(directory / n, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"node assets {directory}: missing {', '.join(missing)}; build them with "
                                f"`{node_assets_hint(directory)}`")
    for tool in ("runc", "iptables", "ip"):
        if shutil.which(tool) is None:
            raise ControlPlaneError(f"{tool} is not installed; apt-get install runc iptables iproute2 "
                                    f"containernetworking-plugins conntrack")
    for plugin in ("bridge", "host-local", "loopback"):
        if not os.access(CNI_BIN_DIR / plugin, os.X_OK):
            raise ControlPlaneError(f"CNI plugin {CNI_BIN_DIR / plugin} is missing; apt-get install "
                                    f"containernetworking-plugins")


def _run(argv: Sequence[str], check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise ControlPlaneError(f"`{' '.join(argv)}` exited with {result.returncode}: "
                                f"{(result.stderr or result.stdout).strip()[-600:]}")
    return result


def _cgroup_mounts() -> list[Path]:
    """Every cgroup (v1 and v2) mount point: runc creates a container's cgroup in each."""
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append(Path(fields[4]))
    return mounts


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == str(root):
                found.append(point)
    return found


def _umount(point: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(point.encode(), _MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        if errno not in (2, 22):  # gone already, or not a mount point any more
            raise ControlPlaneError(f"umount {point}: {os.strerror(errno)}")


class LocalNode:
    """The control plane plus one node; see the module docstring.

    After :meth:`start`: ``plane`` (the :class:`RealControlPlane`), ``kubeconfig`` (admin, for
    kubectl), ``work_dir`` (every log: ``<component>.log``), ``ready_seconds``."""

    def __init__(self, kube_assets: str | os.PathLike[str], node_assets: str | os.PathLike[str],
                 images: Sequence[str | os.PathLike[str]] = (), *,
                 work_dir: str | os.PathLike[str] | None = None) -> None:
        if os.geteuid() != 0:
            raise ControlPlaneError("LocalNode: the kubelet and containerd need root (cgroups, mounts, "
                                    "network namespaces); run as root")
        self.kube_assets = Path(kube_assets).expanduser()
        self.node_assets = Path(node_assets).expanduser()
        _check_node_assets(self.node_assets)
        self.images = [Path(i) for i in images]
        for image in self.images:
            if not image.is_file():
                raise ControlPlaneError(f"images: {image} is not a file; build it with scripts/build-images")
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="shardlease-node-"))
        self.plane: RealControlPlane | None = None
        self.kubeconfig = str(self.work_dir / "admin.kubeconfig")
        self.ready_seconds: float | None = None
        self.children: dict[str, Child] = {}
        self._argv: dict[str, list[str]] = {}
        self._saved_sysctls: dict[str, str] = {}
        self.stop_phases: list[str] = []
        self._lock = threading.Lock()
        self._stopped = False
        self.containerd_socket = self.work_dir / "containerd" / "containerd.sock"

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 240.0) -> LocalNode:
        """Bring everything up; return once the node is Ready and the ``default`` service account
        exists (pods can be created). On failure everything started is stopped again."""
        began = time.monotonic()
        deadline = began + timeout
        if STATE_FILE.exists():
            cleanup()  # a previous node whose launcher died: clear its leftovers first
        try:
            self._save_sysctls()
            STATE_FILE.write_text(json.dumps({"work_dir": str(self.work_dir), "pid": os.getpid(),
                                              "sysctls": self._saved_sysctls}))
            self._make_bridge()
            self._make_cgroups()
            self.plane = RealControlPlane(self.kube_assets, work_dir=self.work_dir / "controlplane",
                                          host=NODE_IP, serve_pods=True, users=USERS,
                                          service_cidr=SERVICE_CIDR)
            self.plane.start(timeout=max(30.0, deadline - time.monotonic()))
            self.plane.write_kubeconfig(self.kubeconfig)
            self._start_controllers()
            self._start_containerd(deadline)
            self._import_images()
            self._start_kubelet()
            self._start_kube_proxy()
            self._await("node Ready and pods admissible", self._ready, deadline)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def _save_sysctls(self) -> None:
        for name in SYSCTLS:
            try:
                self._saved_sysctls[name] = Path("/proc/sys", name).read_text().strip()
            except OSError:
                pass

    def _make_bridge(self) -> None:
        if Path("/sys/class/net", BRIDGE).exists():
            raise ControlPlaneError(f"network interface {BRIDGE} already exists: another local node is "
                                    f"running (stop it with `scripts/local-cluster down`), or delete it with "
                                    f"`ip link del {BRIDGE}`")
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])

    def _make_cgroups(self) -> None:
        for mount in _cgroup_mounts():
            (mount / CGROUP_ROOT).mkdir(exist_ok=True)
        cpuset = Path("/sys/fs/cgroup/cpuset")
        if (cpuset / CGROUP_ROOT).is_dir():
            # v1 cpuset cgroups start empty and refuse tasks until given CPUs and memory nodes.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (cpuset / CGROUP_ROOT / knob).write_text((cpuset / knob).read_text())

    def _kubeconfig(self, user: str, name: str) -> str:
        assert self.plane is not None
        return self.plane.write_kubeconfig(self.work_dir / "kubeconfigs" / f"{name}.kubeconfig", user=user)

    def _child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, self.work_dir / f"{name}.log", env=env)
        self.children[name] = child
        self._argv[name] = argv
        return child

    def _start_controllers(self) -> None:
        assert self.plane is not None
        pki = self.plane.work_dir / "pki"
        kcm = self._kubeconfig("system:kube-controller-manager", "controller-manager")
        self._child("kube-controller-manager", [
            str(self.node_assets / "kube-controller-manager"),
            f"--kubeconfig={kcm}", f"--authentication-kubeconfig={kcm}", f"--authorization-kubeconfig={kcm}",
            "--bind-address=127.0.0.1", f"--secure-port={_free_port('127.0.0.1')}",
            "--leader-elect=false",
            # Each controller under its own service account, as in a real cluster; the tokens they
            # use are signed with the key kube-apiserver verifies.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            # Published as the kube-root-ca.crt ConfigMap, which the projected token volume carries.
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-name={NODE_NAME}",
        ])
        sched = self._kubeconfig("system:kube-scheduler", "scheduler")
        self._child("kube-scheduler", [
            str(self.node_assets / "kube-scheduler"),
            f"--kubeconfig={sched}", f"--authentication-kubeconfig={sched}", f"--authorization-kubeconfig={sched}",
            "--bind-address=127.0.0.1", f"--secure-port={_free_port('127.0.0.1')}", "--leader-elect=false",
        ])

    def _start_containerd(self, deadline: float) -> None:
        from .images import PAUSE_IMAGE

        base = self.work_dir / "containerd"
        cni_conf = self.work_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-shardlease.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "shardlease",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                         "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": str(self.work_dir / "cni" / "ipam")},
            }],
        }, indent=2))
        base.mkdir(parents=True, exist_ok=True)
        config = f"""\
version = 3
root = '{base / "root"}'
state = '{base / "state"}'
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = '{self.containerd_socket}'

[ttrpc]
  address = '{self.containerd_socket}.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '{base / "opt"}'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  # Pod network namespaces under the state directory (inside the work dir), not /var/run/netns.
  netns_mounts_under_state_dir = true
  # This machine withholds CAP_SYS_RESOURCE, so no process may lower its OOM score: without this the
  # sandbox's -998 fails every pod ("failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN_DIR}']
    conf_dir = '{cni_conf}'
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{os.environ.get("SHARDLEASE_RUNC") or shutil.which("runc")}'
        Root = '{base / "runc"}'
        SystemdCgroup = false
"""
        (base / "config.toml").write_text(config)
        env = dict(os.environ)
        env["PATH"] = f"{self.node_assets}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        child = self._child("containerd", [str(self.node_assets / "containerd"), "--config",
                                           str(base / "config.toml")], env=env)

        def up() -> tuple[bool, str]:
            if not child.running:
                raise ControlPlaneError(f"containerd exited with {child.process.poll()}; log "
                                        f"{child.log_path}\n{child.log_tail()}")
            result = self._ctr("version", check=False)
            return result.returncode == 0, (result.stderr or result.stdout).strip()[-300:]

        self._await("containerd", up, deadline)

    def _ctr(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return _run([str(self.node_assets / "ctr"), "--address", str(self.containerd_socket),
                     "--namespace", "k8s.io", *args], check=check, timeout=timeout)

    def _import_images(self) -> None:
        from .images import build_pause_image

        for image in [build_pause_image(self.node_assets), *self.images]:
            self._ctr("images", "import", "--snapshotter", "overlayfs", str(image), timeout=300.0)

    def _start_kubelet(self) -> None:
        assert self.plane is not None
        root = self.work_dir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        kubeconfig = self._kubeconfig(f"system:node:{NODE_NAME}", "kubelet")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # cgroup v1 on purpose (see the module docstring); 1.35+ refuses it without this.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP, "port": _free_port(NODE_IP), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": _free_port("127.0.0.1"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.plane.ca_file)}},
            "authorization": {"mode": "Webhook"},
            "podCIDR": POD_CIDR, "failSwapOn": False, "registerNode": True,
            "rotateCertificates": False, "serverTLSBootstrap": False,
            "resolvConf": "/etc/resolv.conf",
            # This machine's disk is shared; evict only when it is really short.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "fileCheckFrequency": "5s", "nodeStatusReportFrequency": "10s",
            # Container logs inside the work dir (the kubelet still links them from /var/log/containers,
            # a fixed path; stop() removes those links).
            "podLogsDir": str(self.work_dir / "pod-logs"),
        }
        (root / "config.json").write_text(json.dumps(config, indent=2))
        self._child("kubelet", [
            str(self.node_assets / "kubelet"), f"--config={root / 'config.json'}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={root}", f"--cert-dir={root / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
        ])

    def _start_kube_proxy(self) -> None:
        kubeconfig = self._kubeconfig("system:kube-proxy", "kube-proxy")
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "iptables", "clientConnection": {"kubeconfig": kubeconfig},
            "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{_free_port('127.0.0.1')}",
            "metricsBindAddress": f"127.0.0.1:{_free_port('127.0.0.1')}",
            # NodePorts only on the bridge (loopback NodePorts would flip route_localnet).
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Leave the machine's conntrack table sizes and timeouts as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.work_dir / "kube-proxy.json"
        path.write_text(json.dumps(config, indent=2))
        self._argv["kube-proxy-config"] = [str(path)]
        self._child("kube-proxy", [str(self.node_assets / "kube-proxy"), f"--config={path}"])

    def _ready(self) -> tuple[bool, str]:
        assert self.plane is not None
        for name, child in self.children.items():
            if not child.running:
                raise ControlPlaneError(f"{name} exited with {child.process.poll()}; log {child.log_path}\n"
                                        f"--- last lines ---\n{child.log_tail(30)}")
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        if node is None:
            return False, "node not registered yet"
        ready = [c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            return False, f"node not Ready: {ready[0].get('message') if ready else 'no condition'}"
        if self._get("/api/v1/namespaces/default/serviceaccounts/default") is None:
            return False, "no default service account yet"
        if self._get("/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt") is None:
            return False, "no kube-root-ca.crt yet"
        return True, "ready"

    def _get(self, path: str) -> dict[str, Any] | None:
        assert self.plane is not None
        try:
            return self.plane.get_json(path)
        except ControlPlaneError:
            return None

    def _await(self, what: str, probe: Callable[[], tuple[bool, str]], deadline: float) -> None:
        last = "no answer"
        while True:
            try:
                ok, last = probe()
                if ok:
                    return
            except OSError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                logs = "\n".join(f"  {c.log_path}" for c in self.children.values())
                raise ControlPlaneError(f"{what}: not within the start timeout (last: {last}); logs:\n{logs}")
            time.sleep(0.25)

    # ------------------------------------------------------------------ operations

    def kubelet_stop(self) -> None:
        """Stop the kubelet only (SIGTERM): its containers keep running, as when a kubelet restarts."""
        self.children["kubelet"].stop(grace=10.0)

    def kubelet_start(self) -> None:
        """Start the kubelet again with the same configuration."""
        if self.children["kubelet"].running:
            raise ControlPlaneError("kubelet_start: the kubelet is running")
        self._child("kubelet", self._argv["kubelet"])

    def container_pids(self) -> list[int]:
        """PIDs of every process in a pod on this node (from the pods' cgroups)."""
        return sorted(_cgroup_pids(Path("/sys/fs/cgroup/pids") / CGROUP_ROOT))

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop everything and remove what it made (see the module docstring). Safe to call again."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        errors: list[str] = []
        phases: list[str] = []
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            phases.append(f"{name} {now - mark:.1f}s")
            mark = now

        # SIGTERM to the four at once: each exits within a second or two, one after another adds up.
        stoppers = [threading.Thread(target=self.children[name].stop, args=(5.0,))
                    for name in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
                    if name in self.children]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        phase("node components")
        try:
            if "kube-proxy-config" in self._argv:
                _run([str(self.node_assets / "kube-proxy"), "--cleanup",
                      f"--config={self._argv['kube-proxy-config'][0]}"], check=False, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"kube-proxy --cleanup: {exc}")
        phase("kube-proxy --cleanup")
        _teardown(self.work_dir, errors, stop_containerd=self.children.get("containerd"), phase=phase)
        if self.plane is not None:
            self.plane.stop(grace=5.0)
        phase("control plane")
        _restore_sysctls(self._saved_sysctls, errors)
        try:
            STATE_FILE.unlink()
        except FileNotFoundError:
            pass
        self.stop_phases = phases  # how long each part took; printed to the launcher's log too
        print("local node stopped: " + ", ".join(phases), file=sys.stderr, flush=True)
        # The container store (image layers) is large; logs and configuration stay for inspection.
        for bulky in ("containerd", "kubelet"):
            shutil.rmtree(self.work_dir / bulky, ignore_errors=True)
        if errors:
            raise ControlPlaneError("local node: stopped, but some cleanup failed:\n  " + "\n  ".join(errors))


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    if not root.is_dir():
        return pids
    for procs in root.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            pass
    return pids


def _command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, argv)`` of every process whose command line can be read now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0]:
            yield int(entry.name), argv


def _shim_pids(socket: Path) -> list[int]:
    """The runc shims containerd started for this node (matched by the containerd address they
    were given, so no other containerd's shims are touched)."""
    address = str(socket).encode()
    return [pid for pid, argv in _command_lines()
            if argv[0].endswith(b"containerd-shim-runc-v2") and address in argv]


def _kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _teardown(work_dir: Path, errors: list[str], stop_containerd: Child | None = None,
              phase: Callable[[str], None] = lambda name: None) -> None:
    """Containers, shims, containerd, mounts, cgroups, bridge and iptables chains of a node whose
    work directory is ``work_dir`` (the control plane is stopped by its owner)."""
    pids_root = Path("/sys/fs/cgroup/pids") / CGROUP_ROOT
    for _ in range(50):
        pids = _cgroup_pids(pids_root)
        if not pids:
            break
        _kill_all(sorted(pids))
        time.sleep(0.1)
    else:
        errors.append(f"processes still in {pids_root}: {sorted(_cgroup_pids(pids_root))}")
    address = work_dir / "containerd" / "containerd.sock"
    _kill_all(_shim_pids(address))
    phase("containers")
    if stop_containerd is not None:
        stop_containerd.stop(grace=5.0)
    phase("containerd")
    deadline = time.monotonic() + 10
    while _shim_pids(address) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Deepest first, so a mount inside another comes off before it.
    for point in sorted(_mounts_under(work_dir), key=lambda p: p.count("/"), reverse=True):
        try:
            _umount(point)
        except ControlPlaneError as exc:
            errors.append(str(exc))
    left = _mounts_under(work_dir)
    if left:
        errors.append(f"still mounted: {left}")
    phase("mounts")
    for mount in _cgroup_mounts():
        top = mount / CGROUP_ROOT
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True) + [top]:
            try:
                directory.rmdir()
            except OSError as exc:
                errors.append(f"rmdir {directory}: {exc}")
    _remove_fixed_path_leftovers(work_dir)
    if Path("/sys/class/net", BRIDGE).exists():
        result = _run(["ip", "link", "del", BRIDGE], check=False)
        if result.returncode != 0:
            errors.append(f"ip link del {BRIDGE}: {result.stderr.strip()}")
    phase("cgroups, bridge, leftovers")
    _remove_kube_chains(errors)
    phase("iptables chains")


def _remove_fixed_path_leftovers(work_dir: Path) -> None:
    """What the kubelet, containerd and CNI write at fixed paths outside the work dir: the kubelet's
    links in /var/log/containers (to logs under the work dir), the CNI result cache of our network,
    and containerd's empty runtime directories under /run/containerd."""
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            try:
                if link.is_symlink() and os.readlink(link).startswith(str(work_dir)):
                    link.unlink()
            except OSError:
                pass
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        # Our network's entries, and containerd's loopback ones (no other containerd runs pods here).
        for cached in [*results.glob("shardlease-*"), *results.glob("cni-loopback-*")]:
            cached.unlink(missing_ok=True)
    # Sockets of the runc shims we killed: nothing listens on them any more (a live shim's answers).
    shim_sockets = Path("/run/containerd/s")
    if shim_sockets.is_dir():
        for path in shim_sockets.iterdir():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except ConnectionRefusedError:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
    for directory in ("/run/containerd/fifo", "/run/containerd/s", "/run/containerd/runc/k8s.io",
                      "/run/containerd/runc", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni",
                      "/var/log/containers", "/var/log/pods"):
        try:
            os.rmdir(directory)  # only when empty: another containerd's files are never touched
        except OSError:
            pass


def _remove_kube_chains(errors: list[str]) -> None:
    """Delete every ``KUBE-*`` chain (kube-proxy's, and the kubelet's canaries) and the rules that
    jump to them, in IPv4 and IPv6, all tables; ``kube-proxy --cleanup`` leaves the kubelet's."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listing = _run([tool, "-w", "-t", table, "-S"], check=False)
            if listing.returncode != 0:
                continue
            chains = [line.split()[1] for line in listing.stdout.splitlines()
                      if line.startswith("-N KUBE-")]
            for line in listing.stdout.splitlines():
                if line.startswith("-A ") and re.search(r"-j KUBE-", line) and not line.split()[1].startswith("KUBE-"):
                    _run([tool, "-w", "-t", table, "-D", *line.split()[1:]], check=False)
            for chain in chains:
                _run([tool, "-w", "-t", table, "-F", chain], check=False)
            for chain in chains:
                result = _run([tool, "-w", "-t", table, "-X", chain], check=False)
                if result.returncode != 0:
                    errors.append(f"{tool} -t {table} -X {chain}: {result.stderr.strip()}")


def _restore_sysctls(saved: dict[str, str], errors: list[str]) -> None:
    for name, value in saved.items():
        path = Path("/proc/sys", name)
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as exc:
            errors.append(f"sysctl {name}={value}: {exc}")


def _read_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return state
    except (OSError, ValueError):
        return None


def cleanup() -> list[str]:
    """Remove what a node left behind when its launcher died without stopping it (SIGKILL, a
    crash): its processes, mounts, cgroups, bridge, iptables chains and kernel settings. Returns
    the problems it could not fix (empty when the machine is clean)."""
    state = _read_state()
    errors: list[str] = []
    if state is None:
        return errors
    work_dir = Path(state["work_dir"])
    # The launcher's children (apiserver, kubelet, ...) were killed with it (PR_SET_PDEATHSIG);
    # what is left runs in the pods' cgroups or as shims.
    for binary in ("kubelet", "kube-proxy", "containerd", "kube-apiserver", "etcd",
                   "kube-controller-manager", "kube-scheduler"):
        _kill_all(_pids_of_binary_under(binary, work_dir))
    _teardown(work_dir, errors)
    _restore_sysctls(dict(state.get("sysctls", {})), errors)
    try:
        STATE_FILE.unlink()
    except FileNotFoundError:
        pass
    return errors


def _pids_of_binary_under(binary: str, work_dir: Path) -> list[int]:
    """Processes named ``binary`` whose command line names ``work_dir`` (so only this node's)."""
    name, under = binary.encode(), str(work_dir).encode()
    return [pid for pid, argv in _command_lines() if argv[0].endswith(name) and any(under in a for a in argv)]


# ---------------------------------------------------------------------- command line

DEFAULT_WORK_DIR = Path("/tmp/shardlease-node")


def _serve(args: argparse.Namespace) -> int:
    """Run a node until SIGTERM/SIGINT (the process ``up`` leaves running)."""
    work_dir = Path(args.work_dir)
    ready, failed = work_dir / "ready", work_dir / "failed"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        node = LocalNode(args.kube_assets, args.node_assets, args.image, work_dir=work_dir)
        node.start(timeout=args.timeout)
    except Exception as exc:  # reported to `up` through the file, and to the log
        failed.write_text(str(exc))
        print(exc, file=sys.stderr, flush=True)
        return 1
    ready.write_text(node.kubeconfig)
    print(f"local node ready in {node.ready_seconds:.1f} s", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    try:
        node.stop()
    except ControlPlaneError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    return 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: the launcher `up` left behind is reparented, and its new parent may
    leave it a zombie for a while after it exited, so a /proc entry alone does not say it runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _up(args: argparse.Namespace) -> int:
    if STATE_FILE.exists():
        state = _read_state() or {}
        pid = int(state.get("pid", 0))
        if pid and _alive(pid):
            print(f"local-cluster: a node is already running (launcher pid {pid}, work dir "
                  f"{state.get('work_dir')}); `scripts/local-cluster down` first", file=sys.stderr)
            return 1
    work_dir = Path(args.work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "shardlease.controlplane.node", "serve", "--work-dir", str(work_dir),
            "--timeout", str(args.timeout)]
    if args.kube_assets:
        argv += ["--kube-assets", str(args.kube_assets)]
    if args.node_assets:
        argv += ["--node-assets", str(args.node_assets)]
    for image in args.image:
        argv += ["--image", str(image)]
    with open(work_dir / "launcher.log", "ab") as log:
        launcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    deadline = time.monotonic() + args.timeout + 60
    while time.monotonic() < deadline:
        if (work_dir / "ready").exists():
            print(f"local-cluster: node {NODE_NAME} Ready; export KUBECONFIG={work_dir / 'admin.kubeconfig'}",
                  file=sys.stderr)
            print(work_dir / "admin.kubeconfig")
            return 0
        if launcher.poll() is not None:
            reason = (work_dir / "failed").read_text() if (work_dir / "failed").exists() else \
                f"exited with {launcher.returncode}"
            print(f"local-cluster: the node did not start: {reason}\nlog: {work_dir / 'launcher.log'}",
                  file=sys.stderr)
            return 1
        time.sleep(0.5)
    launcher.terminate()
    print(f"local-cluster: not ready within {args.timeout:g} s; log: {work_dir / 'launcher.log'}",
          file=sys.stderr)
    return 1


def _down(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None:
        print("local-cluster: no node is running", file=sys.stderr)
        return 0
    pid = int(state.get("pid", 0))
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    problems = cleanup()  # whatever the launcher could not remove (or it was gone)
    for problem in problems:
        print(f"local-cluster: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    from .assets import find_assets

    parser = argparse.ArgumentParser(prog="local-cluster", description="A one-node Kubernetes on this machine.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "serve"):
        command = sub.add_parser(name)
        command.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR))
        command.add_argument("--kube-assets", type=Path, default=None)
        command.add_argument("--node-assets", type=Path, default=None)
        command.add_argument("--image", type=Path, action="append", default=[],
                             help="an OCI archive to import (scripts/build-images); repeatable")
        command.add_argument("--timeout", type=float, default=300.0)
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "down":
        return _down(args)
    args.kube_assets = find_assets(args.kube_assets)
    args.node_assets = find_node_assets(args.node_assets)
    if args.kube_assets is None:
        print("local-cluster: no kube assets; build them with scripts/build-kube-assets", file=sys.stderr)
        return 2
    if args.node_assets is None:
        print("local-cluster: no node assets; build them with scripts/build-node-assets", file=sys.stderr)
        return 2
    return _up(args) if args.command == "up" else _serve(args)


if __name__ == "__main__":
    sys.exit(main())
