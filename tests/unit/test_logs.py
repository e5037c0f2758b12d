"""Log lines carry identity, group and shard; JSON mode emits one object per line."""

from __future__ import annotations

import io
import json
import logging

from shardlease.logs import configure, get_logger


def _capture(fmt: str) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = configure(fmt, "DEBUG", stream=stream)
    return stream, handler


def test_text_lines_name_identity_group_and_shard() -> None:
    stream, handler = _capture("text")
    try:
        log = get_logger("pod-a", "orders")
        log.info("acquired (token %d)", 3, extra={"shard": 7})
        log.info("members changed")
        logging.getLogger("elsewhere").warning("foreign line")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert "identity=pod-a group=orders shard=7 acquired (token 3)" in lines[0]
    assert "identity=pod-a group=orders members changed" in lines[1] and "shard=" not in lines[1]
    assert "identity=- group=-" in lines[2]


def test_json_lines_are_single_objects_with_context_and_traceback() -> None:
    stream, handler = _capture("json")
    try:
        log = get_logger("pod-b", "billing")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("handler raised", extra={"shard": 2})
        log.warning("plain")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["identity"] == "pod-b" and first["group"] == "billing" and first["shard"] == 2
    assert first["level"] == "error" and "ValueError: boom" in first["exc"]
    assert second["msg"] == "plain" and "shard" not in second


def test_configure_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    h1 = configure("text", "INFO", stream=io.StringIO())
    h2 = configure("json", "INFO", stream=io.StringIO())
    try:
        assert h1 not in root.handlers and h2 in root.handlers
        assert len(root.handlers) == before + 1
    finally:
        root.removeHandler(h2)
