"""``ShardConfig``: everything a replica needs to know, checked once at start-up.

Values come, in order of precedence, from explicit keyword arguments (the CLI passes its flags this
way), then ``SHARDLEASE_*`` environment variables, then the defaults below. Each field's flag and
environment variable are listed in ``CONFIG_SOURCES``; ``format_config_error`` turns a pydantic
``ValidationError`` into one actionable line per problem, naming them.

Validation is strict on purpose: a bad group name or an inconsistent timing would otherwise surface
much later as an API error on the first Lease write, or worse, as two replicas holding one shard.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shardlease.core.records import member_lease_name

__all__ = [
    "CONFIG_SOURCES",
    "ENV_PREFIX",
    "GROUP_MAX_LENGTH",
    "MAX_SHARDS",
    "SERVICE_ACCOUNT_NAMESPACE_FILE",
    "NamespaceChoice",
    "ShardConfig",
    "checked_namespace",
    "default_identity",
    "default_namespace",
    "find_namespace",
    "format_config_error",
    "namespace_problem",
]

ENV_PREFIX = "SHARDLEASE_"
MAX_SHARDS = 16384
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# 50 = 63 - len("-shard-") - len("16383") - 1: with it every shard Lease name is itself a valid
# 63-character DNS label (so it can be used as a label value or a Service/ConfigMap name by tools
# built on top), the group fits the 63-character limit of the ``shardlease.io/group`` label value,
# and ``{group}-member-{identity}`` leaves at least 195 of the 253 characters for the identity.
GROUP_MAX_LENGTH = 50
_NAME_MAX_LENGTH = 253  # DNS-1123 subdomain: the limit for Lease object names

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _is_dns_label(value: str, max_length: int = 63) -> bool:
    return len(value) <= max_length and _DNS_LABEL.fullmatch(value) is not None


def _is_dns_subdomain(value: str) -> bool:
    return len(value) <= _NAME_MAX_LENGTH and _DNS_SUBDOMAIN.fullmatch(value) is not None


@dataclass(frozen=True)
class NamespaceChoice:
    """A namespace and where it came from, so that a message about an empty group can say why this
    namespace was looked at (and how to look at another)."""

    name: str
    #: ``--namespace``, ``SHARDLEASE_NAMESPACE``, ``POD_NAMESPACE``, the file's path, or ``default``.
    source: str

    def why(self) -> str:
        """Why this namespace: ``namespace from SHARDLEASE_NAMESPACE``, or that it is the fallback."""
        if self.source == "default":
            return ("the fallback namespace: no --namespace, SHARDLEASE_NAMESPACE, POD_NAMESPACE or in-cluster "
                    "namespace file")
        return f"namespace from {self.source}"


def find_namespace(flag: str | None = None) -> NamespaceChoice:
    """The one rule every command uses to pick the namespace of a group's Leases.

    ``flag`` (``--namespace`` or an explicit argument), else ``SHARDLEASE_NAMESPACE``, else
    ``POD_NAMESPACE`` (set from the downward API), else the service account's namespace file that
    Kubernetes mounts into every pod, else ``"default"`` as kubectl does. ``run``, ``status``, ``reshard``
    and ``demo`` all call this, so a replica and the commands that inspect or change its group never look
    in different namespaces. ``SHARDLEASE_NAMESPACE`` counts once set, even empty (the name is then
    checked and refused, as any other ``SHARDLEASE_*`` setting would be); an empty ``POD_NAMESPACE`` or
    file counts as absent, since the downward API or a mount leaves them so.
    """
    if flag is not None:
        return NamespaceChoice(flag, "--namespace")
    if f"{ENV_PREFIX}NAMESPACE" in os.environ:
        return NamespaceChoice(os.environ[f"{ENV_PREFIX}NAMESPACE"], f"{ENV_PREFIX}NAMESPACE")
    from_env = os.environ.get("POD_NAMESPACE", "").strip()
    if from_env:
        return NamespaceChoice(from_env, "POD_NAMESPACE")
    try:
        from_file = SERVICE_ACCOUNT_NAMESPACE_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        from_file = ""
    if from_file:
        return NamespaceChoice(from_file, str(SERVICE_ACCOUNT_NAMESPACE_FILE))
    return NamespaceChoice("default", "default")


def namespace_problem(value: str) -> str | None:
    """Why ``value`` cannot be a namespace name, or ``None`` if it can."""
    if _is_dns_label(value):
        return None
    return (f"must be a valid namespace name (lowercase RFC 1123 label, at most 63 characters), "
            f"got {value!r}")


def checked_namespace(flag: str | None = None) -> NamespaceChoice:
    """:func:`find_namespace`, refusing a name that is not one with a message naming its source and
    the fix; raises :class:`shardlease.errors.ConfigError`."""
    from shardlease.errors import ConfigError

    choice = find_namespace(flag)
    problem = namespace_problem(choice.name)
    if problem is not None:
        raise ConfigError(f"namespace: {problem} (from {choice.source}); set --namespace or "
                          f"{ENV_PREFIX}NAMESPACE to {_FIX_HINTS['namespace']}")
    return choice


def default_namespace() -> str:
    """The namespace when none is given explicitly: :func:`find_namespace` without a flag."""
    return find_namespace().name


def default_identity() -> str:
    """This replica's member name: ``POD_NAME`` (downward API), else the hostname.

    A pod's hostname is its name, so both agree inside Kubernetes; outside it the hostname is
    lowercased, because Lease names must be lowercase and ``My-Laptop`` is otherwise a fine name.
    """
    from_env = os.environ.get("POD_NAME", "").strip()
    if from_env:
        return from_env
    hostname = socket.gethostname().strip()
    lowered = hostname.lower()
    return lowered if _is_dns_subdomain(lowered) else hostname


def _seconds(default: float, description: str) -> Any:
    """A duration field: a finite number of seconds > 0 (fractions allowed, so tests can be fast)."""
    return Field(default=default, gt=0, allow_inf_nan=False, description=description)


class ShardConfig(BaseSettings):
    """Configuration of one replica of a shardlease group. Immutable once built."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    group: str = Field(
        description=(
            "Name of the group of replicas sharing the shards. All replicas of one Deployment use the "
            "same group; Leases are named `{group}-shard-{i}` and `{group}-member-{identity}` and "
            "labelled `shardlease.io/group={group}`, so two groups in one namespace never interfere. "
            "A lowercase RFC 1123 label of 1-50 characters."
        ),
    )
    shards: int = Field(
        description=(
            "Number of shards, 1-16384: this replica's vote on the group's count. Every replica runs the "
            "count on the group's Lease (handlers see it as shard.count); when most live replicas are "
            "configured with another count, the group switches to it (docs/resharding.md)."
        ),
    )
    namespace: str = Field(
        default_factory=default_namespace,
        description=(
            "Namespace holding the group's Leases. Defaults to SHARDLEASE_NAMESPACE, then POD_NAMESPACE, "
            "then the pod's service account namespace, then `default` (find_namespace: the rule every "
            "command uses)."
        ),
    )
    identity: str = Field(
        default_factory=default_identity,
        description=(
            "This replica's unique name within the group: it is written as `holderIdentity` on the "
            "shards it owns and names its member Lease. Defaults to POD_NAME, then the hostname. Two "
            "live replicas with the same identity would both believe they own the same shards."
        ),
    )
    lease_duration: float = _seconds(
        15.0,
        "Seconds after the last observed renewal before other replicas may take a shard or treat "
        "a member as gone. Written to the Lease rounded up to whole seconds. Bounds how long a "
        "crashed replica's shards stay unowned.",
    )
    renew_deadline: float = _seconds(
        10.0,
        "Seconds an owner keeps trying to renew before it stops its handlers and gives the shard "
        "up. Shorter than lease_duration, so an owner that cannot reach the API server stops "
        "working before anyone else may start.",
    )
    retry_period: float = _seconds(
        2.0,
        "Seconds between renewals and between attempts to acquire. Smaller values react faster "
        "and cost more API requests (about shards / retry_period writes per second per group).",
    )
    renew_interval: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Seconds between renewals of a Lease this replica holds, when all is well; failed renewals "
            "are retried every retry_period. The group writes about (shards + replicas) / renew_interval "
            "Leases per second, so a longer interval costs the API server less. Defaults to "
            "retry_period (client-go renews every retry period). Must leave time for one retry before "
            "the renew deadline: renew_interval + retry_period <= renew_deadline."
        ),
    )
    max_write_rate: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Lease writes per second this replica may make (shard renewals + its member Lease). Renewals "
            "of held shards are spaced out to stay under it, but never later than renew_deadline - "
            "retry_period after the last successful renewal; when that is not enough for the shards held, "
            "the replica says so in its log, metrics (shardlease_write_budget_exceeded) and `shardlease "
            "status`. Must leave room for the member Lease (more than 1 / renew_interval). Default: no "
            "budget, every held Lease renewed every renew interval."
        ),
    )
    load_factor: float = Field(
        default=1.0,
        ge=1.0,
        allow_inf_nan=False,
        description=(
            "Balance bound: no replica is assigned more than ceil(load_factor * shards / replicas) "
            "shards. 1.0 gives the tightest balance; larger values move fewer shards on changes."
        ),
    )
    capacity: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "This replica's size relative to the others, > 0 (default 1): with loads reported, a replica "
            "with capacity 2 is given about twice the load of one with capacity 1. Published on its member "
            "Lease (shardlease.io/capacity); see docs/load.md."
        ),
    )
    weights: dict[int, float] | Callable[[int], float] | None = Field(
        default=None,
        description=(
            "Static load of each shard, known in advance: a mapping shard -> load (as JSON in "
            "SHARDLEASE_WEIGHTS) or, in Python, a callable shard -> load. A shard's reported load "
            "(shard.report_load) takes precedence; a shard with neither counts as the mean (docs/load.md)."
        ),
    )
    load_half_life: float = _seconds(
        30.0,
        "Half-life in seconds of the smoothing of reported shard loads (an exponentially weighted moving "
        "average over time): a report this old counts half as much as one made now.",
    )
    rebalance_period: float = _seconds(
        60.0,
        "Seconds between load snapshots at most: the oldest member publishes a new one (and so the group "
        "moves shards for load) at most once per period (docs/load.md).",
    )
    rebalance_threshold: float = Field(
        default=0.15,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Publish a new load snapshot only when the busiest replica carries more than (1 + threshold) x "
            "its fair share of the load (a shard too hot for any bound set aside with its replica). At least "
            "rebalance_epsilon, so that a balanced group stays put."
        ),
    )
    rebalance_epsilon: float = Field(
        default=0.1,
        ge=0,
        allow_inf_nan=False,
        description=(
            "The load bound a rebalance aims for: no replica above (1 + epsilon) x its fair share of the "
            "load (its capacity's part of the total)."
        ),
    )
    rebalance_max_moves: int = Field(
        default=32,
        ge=2,
        description=(
            "Most shards moved for load per snapshot, so at most this many handoffs per rebalance period "
            "(shards of replicas that left move regardless). At least 2: a swap is two moves."
        ),
    )
    handoff_grace: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Seconds a free shard is reserved for the replica the assignment prefers before any live "
            "replica may take it, so handovers go where the ring says rather than to the fastest "
            "replica. Defaults to 2 x retry_period."
        ),
    )
    drain_timeout: float = _seconds(
        30.0,
        "Seconds a handler may take to return after its shard is revoked. The shard is released "
        "only after the handler returned (or this timeout passed and its lease lapsed).",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="Path of a kubeconfig file; default as kubectl: $KUBECONFIG, ~/.kube/config, in-cluster.",
    )
    context: str | None = Field(
        default=None, description="kubeconfig context to use; default: the file's current-context."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of the HTTP server for /metrics, /healthz and /readyz (0 = any free port). "
            "None (default) starts no server."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`text` for people, `json` (one object per line) for log pipelines."
    )
    log_level: str = Field(
        default="INFO", description="Python logging level name: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )

    @field_validator("weights", mode="before")
    @classmethod
    def _check_weights(cls, value: Any) -> Any:
        if value is None or callable(value):
            return value
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"must be a JSON object of shard -> load, e.g. '{{\"0\": 5, \"3\": 20}}': {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of shard -> load or a callable, got {type(value).__name__}")
        checked: dict[int, float] = {}
        for key, load in value.items():
            shard = int(key) if isinstance(key, str) and key.isdigit() else key
            if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
                raise ValueError(f"keys must be shard numbers >= 0, got {key!r}")
            if isinstance(load, bool) or not isinstance(load, (int, float)) or not (load >= 0 and math.isfinite(load)):
                raise ValueError(f"the load of shard {shard} must be a finite number >= 0, got {load!r}")
            checked[shard] = float(load)
        return checked

    @field_validator("shards", "metrics_port", "rebalance_max_moves", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1; a boolean here is always a mistake.
        if isinstance(value, bool):
            raise ValueError("must be a whole number, not a boolean")
        return value

    @field_validator("shards")
    @classmethod
    def _check_shards(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1 (got {value})")
        if value > MAX_SHARDS:
            raise ValueError(
                f"must be at most {MAX_SHARDS} (got {value}): each shard is a Lease renewed every "
                "retry period"
            )
        return value

    @field_validator("group")
    @classmethod
    def _check_group(cls, value: str) -> str:
        if not _is_dns_label(value, GROUP_MAX_LENGTH):
            raise ValueError(
                f"must be a lowercase RFC 1123 label of 1-{GROUP_MAX_LENGTH} characters (a-z, 0-9 and "
                f"'-', starting and ending with a letter or digit), got {value!r}"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        problem = namespace_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("identity")
    @classmethod
    def _check_identity(cls, value: str, info: ValidationInfo) -> str:
        if not _is_dns_subdomain(value):
            raise ValueError(
                f"must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.'), got {value!r}"
            )
        group = info.data.get("group")
        if group is not None and len(member_lease_name(group, value)) > _NAME_MAX_LENGTH:
            limit = _NAME_MAX_LENGTH - len(member_lease_name(group, ""))
            pattern = member_lease_name(group, "…")
            raise ValueError(
                f"is {len(value)} characters (got {value[:40]!r}...), but the member Lease name "
                f"{pattern!r} allows at most {limit} with this group"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_log_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        if name not in logging.getLevelNamesMapping() or name == "NOTSET":
            raise ValueError(f"must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got {value!r})")
        return name

    @model_validator(mode="after")
    def _check_timing(self) -> ShardConfig:
        # client-go's rule: an owner gives up (renew_deadline) before others may take over
        # (lease_duration), and has time for at least one more retry before its deadline.
        if not (self.lease_duration > self.renew_deadline > 1.2 * self.retry_period):
            raise ValueError(
                "lease_duration, renew_deadline, retry_period: must satisfy "
                "lease_duration > renew_deadline > 1.2 x retry_period, got "
                f"lease_duration={self.lease_duration:g}, renew_deadline={self.renew_deadline:g}, "
                f"retry_period={self.retry_period:g} (1.2 x retry_period = {1.2 * self.retry_period:g}); "
                "keep the defaults 15/10/2 or scale all three together, e.g. --lease-duration 6 "
                "--renew-deadline 4 --retry-period 1"
            )
        if self.renew_interval is not None and self.renew_interval + self.retry_period > self.renew_deadline:
            longest = self.renew_deadline - self.retry_period
            raise ValueError(
                f"renew_interval: must leave time for one retry before the renew deadline "
                f"(renew_interval + retry_period <= renew_deadline), got renew_interval={self.renew_interval:g} "
                f"with retry_period={self.retry_period:g} and renew_deadline={self.renew_deadline:g}; "
                f"set --renew-interval / SHARDLEASE_RENEW_INTERVAL to at most {longest:g}, or raise "
                f"--renew-deadline (and --lease-duration above it)"
            )
        member_rate = 1.0 / self.effective_renew_interval
        if self.max_write_rate is not None and self.max_write_rate <= member_rate:
            raise ValueError(
                f"max_write_rate: must leave room for shard renewals beyond the member Lease's own "
                f"{member_rate:g} writes/s (1 / renew_interval {self.effective_renew_interval:g}s), got "
                f"max_write_rate={self.max_write_rate:g}; set --max-write-rate / SHARDLEASE_MAX_WRITE_RATE "
                f"above {member_rate:g}, or leave it unset"
            )
        if self.rebalance_threshold < self.rebalance_epsilon:
            raise ValueError(
                f"rebalance_threshold: must be at least rebalance_epsilon, got rebalance_threshold="
                f"{self.rebalance_threshold:g} < rebalance_epsilon={self.rebalance_epsilon:g}: a group balanced "
                f"to the bound would count as unbalanced and be moved again; set --rebalance-threshold / "
                f"SHARDLEASE_REBALANCE_THRESHOLD to at least {self.rebalance_epsilon:g}"
            )
        return self

    def weight_of(self, shard: int) -> float | None:
        """The static load of ``shard`` (``weights``), ``None`` when not given. A callable that raises or
        returns something other than a number >= 0 is a configuration error, reported as such."""
        weights = self.weights
        if weights is None:
            return None
        if isinstance(weights, dict):
            return weights.get(shard)
        from shardlease.errors import ConfigError

        try:
            value = weights(shard)
        except Exception as exc:
            raise ConfigError(f"weights: the callable raised {type(exc).__name__}: {exc} for shard {shard}; "
                              "it must return the static load of any shard (a number >= 0)") from exc
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"weights: the callable returned {value!r} for shard {shard}; it must return a "
                              "finite number >= 0")
        return float(value)

    @property
    def effective_renew_interval(self) -> float:
        """``renew_interval`` if set, else ``retry_period`` (client-go's behaviour)."""
        return self.renew_interval if self.renew_interval is not None else self.retry_period

    @property
    def lease_duration_seconds(self) -> int:
        """What goes into the Lease's ``leaseDurationSeconds`` (a positive int32): the duration
        rounded up, so other readers never expire a lease sooner than its holder expects."""
        return max(1, math.ceil(self.lease_duration))

    @property
    def effective_handoff_grace(self) -> float:
        """``handoff_grace`` if set, else ``2 * retry_period``: long enough for the preferred owner to
        notice the free shard on its next poll, with one retry to spare."""
        return self.handoff_grace if self.handoff_grace is not None else 2 * self.retry_period

    @property
    def log_level_number(self) -> int:
        """``log_level`` as the ``logging`` module's number."""
        return logging.getLevelNamesMapping()[self.log_level]


CONFIG_SOURCES: dict[str, tuple[str, str]] = {
    name: (f"--{name.replace('_', '-')}", f"{ENV_PREFIX}{name.upper()}") for name in ShardConfig.model_fields
}
"""Field name -> (CLI flag, environment variable), as shown in error messages."""

# What to set a field to, appended to "set --flag or ENV to ..." in error messages.
_FIX_HINTS: dict[str, str] = {
    "group": f"a lowercase name of 1-{GROUP_MAX_LENGTH} characters, e.g. 'orders'",
    "shards": f"a whole number between 1 and {MAX_SHARDS}",
    "namespace": "the namespace of the Leases, e.g. 'default' (or set POD_NAMESPACE)",
    "identity": "a unique lowercase name per replica (in a pod, set POD_NAME from metadata.name)",
    "lease_duration": "a positive number of seconds",
    "renew_deadline": "a positive number of seconds",
    "retry_period": "a positive number of seconds",
    "renew_interval": "a positive number of seconds, or leave it unset",
    "max_write_rate": "a positive number of writes per second, or leave it unset",
    "load_factor": "a number >= 1.0",
    "handoff_grace": "a number of seconds >= 0, or leave it unset",
    "capacity": "a number > 0, e.g. 2 for a replica twice the size of the others",
    "weights": "a JSON object of shard -> load, e.g. '{\"0\": 5}', or leave it unset",
    "load_half_life": "a positive number of seconds",
    "rebalance_period": "a positive number of seconds",
    "rebalance_threshold": "a number >= rebalance_epsilon, e.g. 0.15",
    "rebalance_epsilon": "a number >= 0, e.g. 0.1",
    "rebalance_max_moves": "a whole number >= 2",
    "drain_timeout": "a positive number of seconds",
    "kubeconfig": "the path of a kubeconfig file",
    "context": "a context name from the kubeconfig",
    "metrics_port": "a port number 0-65535, or leave it unset",
    "log_format": "'text' or 'json'",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL",
}


def _reason(error: Any) -> str:
    """A short lowercase reason for one pydantic error dict."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(ctx.get("error", error.get("msg", "")))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": ("must be at least", "ge"),
            "greater_than": ("must be greater than", "gt"),
            "less_than_equal": ("must be at most", "le"),
            "less_than": ("must be less than", "lt"),
        }[kind]
        return f"{words[0]} {ctx.get(words[1])}"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "extra_forbidden":
        return f"is not a setting (known: {', '.join(ShardConfig.model_fields)})"
    message = str(error.get("msg", "is invalid"))
    return message[:1].lower() + message[1:]


def format_config_error(exc: ValidationError) -> str:
    """One line per problem, naming the setting, the bad value, and where to fix it, e.g.

    ``shards: must be at least 1 (got 0); set --shards or SHARDLEASE_SHARDS to a whole number ...``
    """
    lines: list[str] = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        reason = _reason(error)
        if field not in CONFIG_SOURCES:
            # Whole-model checks (the timing rule) name their fields in the message itself.
            lines.append(f"{field}: {reason}" if field else reason)
            continue
        got = ""
        if error.get("type") != "missing" and "got " not in reason:
            shown = repr(error.get("input"))
            got = f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        flag, env = CONFIG_SOURCES[field]
        lines.append(f"{field}: {reason}{got}; set {flag} or {env} to {_FIX_HINTS[field]}")
    return "\n".join(lines)
