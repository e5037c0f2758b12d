"""ShardConfig: defaults, where values come from, and errors a user can act on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

import shardlease.config as config_module
from shardlease.config import CONFIG_SOURCES, GROUP_MAX_LENGTH, ShardConfig, format_config_error


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see neither the developer's environment nor a real service account mount."""
    for name in list(os.environ):
        if name.startswith("SHARDLEASE_") or name in ("POD_NAME", "POD_NAMESPACE"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "absent")
    monkeypatch.setenv("POD_NAME", "replica-0")


def errors_of(**kwargs: object) -> str:
    with pytest.raises(ValidationError) as info:
        ShardConfig(**kwargs)  # type: ignore[arg-type]
    return format_config_error(info.value)


def test_defaults() -> None:
    cfg = ShardConfig(group="orders", shards=16)
    assert (cfg.namespace, cfg.identity) == ("default", "replica-0")
    assert (cfg.lease_duration, cfg.renew_deadline, cfg.retry_period) == (15.0, 10.0, 2.0)
    assert cfg.lease_duration_seconds == 15
    assert cfg.load_factor == 1.0
    assert cfg.handoff_grace is None and cfg.effective_handoff_grace == 4.0
    assert cfg.drain_timeout == 30.0
    assert cfg.kubeconfig is None and cfg.context is None and cfg.metrics_port is None
    assert (cfg.log_format, cfg.log_level, cfg.log_level_number) == ("text", "INFO", 20)


def test_config_is_immutable() -> None:
    cfg = ShardConfig(group="orders", shards=16)
    with pytest.raises(ValidationError):
        cfg.shards = 8  # type: ignore[misc]


def test_fractional_durations_round_up_on_the_wire() -> None:
    cfg = ShardConfig(group="g", shards=1, lease_duration=1.5, renew_deadline=1.0, retry_period=0.2)
    assert cfg.lease_duration_seconds == 2
    assert cfg.effective_handoff_grace == pytest.approx(0.4)
    assert ShardConfig(group="g", shards=1, handoff_grace=0).effective_handoff_grace == 0


def test_environment_fills_in_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDLEASE_GROUP", "from-env")
    monkeypatch.setenv("SHARDLEASE_SHARDS", "64")
    monkeypatch.setenv("SHARDLEASE_LEASE_DURATION", "20")
    monkeypatch.setenv("SHARDLEASE_METRICS_PORT", "9090")
    monkeypatch.setenv("SHARDLEASE_LOG_LEVEL", "debug")
    cfg = ShardConfig()  # type: ignore[call-arg]
    assert (cfg.group, cfg.shards, cfg.lease_duration, cfg.metrics_port) == ("from-env", 64, 20.0, 9090)
    assert cfg.log_level == "DEBUG"
    cfg = ShardConfig(group="flag", shards=8)
    assert (cfg.group, cfg.shards, cfg.lease_duration) == ("flag", 8, 20.0)


def test_namespace_fallback_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ShardConfig(group="g", shards=1).namespace == "default"
    mounted = tmp_path / "namespace"
    mounted.write_text("from-file\n")
    monkeypatch.setattr(config_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", mounted)
    assert ShardConfig(group="g", shards=1).namespace == "from-file"
    monkeypatch.setenv("POD_NAMESPACE", "from-pod")
    assert ShardConfig(group="g", shards=1).namespace == "from-pod"
    monkeypatch.setenv("SHARDLEASE_NAMESPACE", "from-shardlease")
    assert ShardConfig(group="g", shards=1).namespace == "from-shardlease"
    assert ShardConfig(group="g", shards=1, namespace="explicit").namespace == "explicit"


def test_identity_fallback_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ShardConfig(group="g", shards=1).identity == "replica-0"
    monkeypatch.setenv("SHARDLEASE_IDENTITY", "from-shardlease")
    assert ShardConfig(group="g", shards=1).identity == "from-shardlease"
    monkeypatch.delenv("SHARDLEASE_IDENTITY")
    monkeypatch.delenv("POD_NAME")
    # Outside a pod the hostname is used, lowercased when that is what makes it a valid name.
    monkeypatch.setattr(socket, "gethostname", lambda: "Dev-Laptop.Local")
    assert ShardConfig(group="g", shards=1).identity == "dev-laptop.local"
    monkeypatch.setattr(socket, "gethostname", lambda: "my_laptop")
    message = errors_of(group="g", shards=1)
    assert message.startswith("identity: ")
    assert "'my_laptop'" in message and "--identity" in message and "POD_NAME" in message


def test_identity_must_leave_room_in_the_member_lease_name() -> None:
    group = "g" * GROUP_MAX_LENGTH
    ShardConfig(group=group, shards=1, identity="a" * (253 - GROUP_MAX_LENGTH - len("-member-")))
    message = errors_of(group=group, shards=1, identity="a" * 200)
    assert message.startswith("identity: is 200 characters") and "at most 195" in message


def test_longest_names_are_valid_kubernetes_names() -> None:
    """Why 50: shard Lease names stay valid 63-character labels, the group a valid label value."""
    cfg = ShardConfig(group="g" * GROUP_MAX_LENGTH, shards=16384)
    assert len(f"{cfg.group}-shard-{cfg.shards - 1}") <= 63
    assert "group: " in errors_of(group="g" * (GROUP_MAX_LENGTH + 1), shards=1)


def test_shards_message_matches_the_documented_form() -> None:
    assert errors_of(group="g", shards=0) == (
        "shards: must be at least 1 (got 0); set --shards or SHARDLEASE_SHARDS to a whole number "
        "between 1 and 16384"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("group", "Orders"),
        ("group", "-orders"),
        ("group", ""),
        ("shards", 0),
        ("shards", 16385),
        ("shards", True),
        ("shards", "many"),
        ("namespace", "Kube_System"),
        ("namespace", "a.b"),
        ("identity", "Replica_0"),
        ("identity", ""),
        ("lease_duration", 0),
        ("lease_duration", float("inf")),
        ("renew_deadline", -1),
        ("retry_period", "soon"),
        ("renew_interval", 0),
        ("renew_interval", 9),
        ("max_write_rate", 0),
        ("max_write_rate", "fast"),
        ("max_write_rate", 0.4),
        ("load_factor", 0.9),
        ("handoff_grace", -0.5),
        ("drain_timeout", 0),
        ("metrics_port", 65536),
        ("metrics_port", -1),
        ("log_format", "xml"),
        ("log_level", "chatty"),
        ("capacity", 0),
        ("capacity", float("nan")),
        ("capacity", "big"),
        ("weights", "{not json"),
        ("weights", '{"x": 1}'),
        ("weights", {"1": -1}),
        ("weights", [1, 2]),
        ("load_half_life", 0),
        ("rebalance_period", 0),
        ("rebalance_threshold", -1),
        ("rebalance_epsilon", -0.1),
        ("rebalance_max_moves", 1),
        ("rebalance_max_moves", True),
    ],
)
def test_every_invalid_field_is_named_with_its_fix(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"group": "g", "shards": 4, field: value}
    message = errors_of(**kwargs)
    flag, env = CONFIG_SOURCES[field]
    assert message.startswith(f"{field}: ")
    assert flag in message and env in message


def test_renew_interval_defaults_to_the_retry_period_and_must_leave_room_for_a_retry() -> None:
    assert ShardConfig(group="g", shards=4).effective_renew_interval == 2.0
    assert ShardConfig(group="g", shards=4, renew_interval=8).effective_renew_interval == 8.0
    message = errors_of(group="g", shards=4, renew_interval=8.5)
    assert message.startswith("renew_interval: must leave time for one retry before the renew deadline")
    assert "--renew-interval" in message and "SHARDLEASE_RENEW_INTERVAL" in message and "at most 8" in message


def test_max_write_rate_must_leave_room_beyond_the_member_lease_and_is_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ShardConfig(group="g", shards=4).max_write_rate is None
    message = errors_of(group="g", shards=4, max_write_rate=0.5)   # the member Lease alone writes 0.5/s
    assert message.startswith("max_write_rate: must leave room for shard renewals beyond the member Lease's own "
                              "0.5 writes/s")
    assert "--max-write-rate" in message and "SHARDLEASE_MAX_WRITE_RATE" in message and "above 0.5" in message
    assert ShardConfig(group="g", shards=4, renew_interval=8, max_write_rate=0.2).max_write_rate == 0.2
    monkeypatch.setenv("SHARDLEASE_MAX_WRITE_RATE", "12.5")
    assert ShardConfig(group="g", shards=4).max_write_rate == 12.5


def test_missing_required_fields_are_named() -> None:
    message = errors_of()
    assert "group: is required; set --group or SHARDLEASE_GROUP" in message
    assert "shards: is required; set --shards or SHARDLEASE_SHARDS" in message


def test_unknown_setting_is_rejected() -> None:
    assert "shard_count: is not a setting" in errors_of(group="g", shards=1, shard_count=3)


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10, 10, 2), (15, 20, 2), (15, 10, 9), (3, 2, 2)],
)
def test_timing_rule_names_fields_values_and_fix(lease: float, renew: float, retry: float) -> None:
    message = errors_of(group="g", shards=1, lease_duration=lease, renew_deadline=renew, retry_period=retry)
    assert "lease_duration > renew_deadline > 1.2 x retry_period" in message
    assert f"lease_duration={lease:g}, renew_deadline={renew:g}, retry_period={retry:g}" in message
    assert "--lease-duration" in message


def test_timing_rule_accepts_client_go_defaults_and_short_test_leases() -> None:
    ShardConfig(group="g", shards=1, lease_duration=1.0, renew_deadline=0.7, retry_period=0.25)


def test_every_field_has_a_source_a_hint_and_a_docstring() -> None:
    for name, field in ShardConfig.model_fields.items():
        assert CONFIG_SOURCES[name] == (f"--{name.replace('_', '-')}", f"SHARDLEASE_{name.upper()}")
        assert name in config_module._FIX_HINTS
        assert field.description


def test_load_settings_defaults_sources_and_the_hysteresis_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ShardConfig(group="g", shards=4)
    assert (cfg.capacity, cfg.weights, cfg.load_half_life) == (1.0, None, 30.0)
    assert (cfg.rebalance_period, cfg.rebalance_threshold, cfg.rebalance_epsilon, cfg.rebalance_max_moves) == \
        (60.0, 0.15, 0.1, 32)
    monkeypatch.setenv("SHARDLEASE_CAPACITY", "2.5")
    monkeypatch.setenv("SHARDLEASE_WEIGHTS", '{"0": 5, "3": 0.5}')
    cfg = ShardConfig(group="g", shards=4)
    assert cfg.capacity == 2.5 and cfg.weights == {0: 5.0, 3: 0.5}
    assert (cfg.weight_of(0), cfg.weight_of(1)) == (5.0, None)
    message = errors_of(group="g", shards=4, rebalance_threshold=0.05, rebalance_epsilon=0.1)
    assert message.startswith("rebalance_threshold: must be at least rebalance_epsilon")
    assert "--rebalance-threshold" in message and "0.1" in message


def test_a_weights_callable_that_fails_is_a_configuration_error() -> None:
    from shardlease.errors import ConfigError

    cfg = ShardConfig(group="g", shards=4, weights=lambda shard: 10.0 / shard)
    assert cfg.weight_of(2) == 5.0
    with pytest.raises(ConfigError, match="weights: the callable raised ZeroDivisionError"):
        cfg.weight_of(0)
    with pytest.raises(ConfigError, match="weights: the callable returned -1"):
        ShardConfig(group="g", shards=4, weights=lambda shard: -1).weight_of(0)
