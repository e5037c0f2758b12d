"""Build a Kubernetes ``ApiClient`` from the configuration kubectl would use.

Search order (kubectl's, plus the in-cluster fallback every controller has):

1. an explicit kubeconfig path (``--kubeconfig``);
2. ``$KUBECONFIG``: a list of files separated by ``os.pathsep`` (``:``; ``;`` on Windows), merged the
   way kubectl merges them (the first file to define a name, or the current context, wins); missing
   files are skipped, but if none exists that is an error;
3. ``~/.kube/config`` if it exists;
4. the pod's service account, when ``KUBERNETES_SERVICE_HOST`` is set (running in a cluster).

Every client gets its own ``kubernetes.client.Configuration``: the library's process-wide default is
never read or changed, so several clients (replicas in one test process, an observer, the user's
own code) can point at different servers without interfering.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from shardlease.errors import ConfigError, InvalidArgument

__all__ = [
    "CLIENT_ID_HEADER",
    "DEFAULT_POOL_SIZE",
    "default_user_agent",
    "load_api_client",
    "load_configuration",
]

CLIENT_ID_HEADER = "X-Shardlease-Client"
"""Request header naming the replica; the dev-server's fault injection matches clients by it."""

DEFAULT_POOL_SIZE = 16
"""HTTP connections kept per client. urllib3 discards (and logs) connections beyond the pool when more
threads than this request at once, so it should cover the replica's concurrent writers + watch."""

_HOME_KUBECONFIG = Path("~/.kube/config")


def default_user_agent(identity: str | None = None) -> str:
    """``shardlease/<version>``, plus ``(<identity>)`` so API server audit logs name the replica."""
    from shardlease import __version__

    return f"shardlease/{__version__}" + (f" ({identity})" if identity else "")


def _from_kubeconfig(paths: str, context: str | None, configuration: k8s_client.Configuration) -> None:
    try:
        # persist_config=False: never rewrite the user's kubeconfig (the library would, on token refresh).
        k8s_config.load_kube_config(
            config_file=paths, context=context, client_configuration=configuration, persist_config=False
        )
    except ConfigException as exc:
        hint = f"; check that context {context!r} exists (kubectl config get-contexts)" if context else ""
        raise ConfigError(f"cannot use kubeconfig {paths}: {exc}{hint}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {paths}: {exc}") from exc


def _first_current_context(paths: list[Path]) -> str | None:
    """kubectl takes ``current-context`` from the first file that sets it; the Python library takes
    it from the last, so with several files we resolve it here and pass it explicitly."""
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # reported by the loader itself
        if isinstance(data, dict) and data.get("current-context"):
            return str(data["current-context"])
    return None


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.Configuration:
    """A fresh ``Configuration`` found by the search order above; ``ConfigError`` if none applies."""
    configuration = k8s_client.Configuration()
    if kubeconfig:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"kubeconfig {kubeconfig} does not exist or is not a file; pass the path of a kubeconfig "
                "(--kubeconfig / SHARDLEASE_KUBECONFIG) or leave it unset to use $KUBECONFIG, "
                "~/.kube/config or the in-cluster service account"
            )
        _from_kubeconfig(str(path), context, configuration)
        return configuration

    env_paths = os.environ.get("KUBECONFIG", "")
    if env_paths.strip(os.pathsep).strip():
        listed = [p for p in env_paths.split(os.pathsep) if p]
        existing = [Path(p).expanduser() for p in listed if Path(p).expanduser().is_file()]
        if not existing:
            raise ConfigError(
                f"$KUBECONFIG lists {', '.join(listed)} but none of these files exists; fix or unset "
                "KUBECONFIG, or pass --kubeconfig"
            )
        _from_kubeconfig(env_paths, context or _first_current_context(existing), configuration)
        return configuration

    home = _HOME_KUBECONFIG.expanduser()
    if home.is_file():
        _from_kubeconfig(str(home), context, configuration)
        return configuration

    tried = "no --kubeconfig, $KUBECONFIG unset, no ~/.kube/config"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        if context:
            raise ConfigError(
                f"context {context!r} was requested but there is no kubeconfig to take it from "
                f"({tried}); drop --context to use the in-cluster service account"
            )
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(
                f"cannot use the in-cluster service account ({tried}; KUBERNETES_SERVICE_HOST is set): "
                f"{exc}; check that the pod mounts its service account token "
                "(automountServiceAccountToken)"
            ) from exc
        return configuration

    raise ConfigError(
        f"no Kubernetes configuration found: {tried}, and not running in a cluster "
        "(KUBERNETES_SERVICE_HOST unset); pass --kubeconfig PATH (or SHARDLEASE_KUBECONFIG), set "
        "KUBECONFIG, or create ~/.kube/config (for a local try, `shardlease dev-server` writes "
        "./shardlease-dev.kubeconfig to pass as --kubeconfig)"
    )


def load_api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    user_agent: str | None = None,
    client_id: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> k8s_client.ApiClient:
    """An ``ApiClient`` configured the way kubectl finds its configuration (see the module docstring).

    ``user_agent`` replaces the whole User-Agent; by default it is ``default_user_agent(client_id)``.
    ``client_id`` is also sent as the ``X-Shardlease-Client`` header on every request. ``pool_size``
    is the number of HTTP connections kept open, for replicas that issue requests from many threads.
    Raises ``ConfigError`` when no configuration applies or the one found is unusable.
    """
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise InvalidArgument(f"pool_size must be an integer >= 1, got {pool_size!r}")
    configuration = load_configuration(kubeconfig, context)
    # Read by the REST client when the ApiClient is built, so it must be set before.
    configuration.connection_pool_maxsize = pool_size
    api = k8s_client.ApiClient(configuration)
    api.user_agent = user_agent or default_user_agent(client_id)
    if client_id:
        api.set_default_header(CLIENT_ID_HEADER, client_id)
    return api
