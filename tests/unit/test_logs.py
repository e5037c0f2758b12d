"""Log lines carry identity, group and shard -- also those handler code logs through its own loggers;
JSON mode emits one object per line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from shardlease.runtime.handlers import HandlerRunner, Shard
from shardlease.runtime.logs import configure, get_logger, log_context


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


# ---- lines logged by handler code, through the user's own loggers ----------------------------------

def _run_handler(handler: Callable[[Shard], Any], fmt: str, shard_id: int) -> list[str]:
    """Run ``handler`` for one shard through the real runner (its own thread, or a task on the
    runner's loop) with shardlease's logging configured; return the lines written."""
    stream = io.StringIO()
    log_handler = configure(fmt, "INFO", stream=stream)
    done = threading.Event()
    runner = HandlerRunner(handler, on_exit=lambda run: done.set(), logger=logging.getLogger("shardlease"))
    try:
        run = runner.start(Shard(shard_id, 8, 1, identity="pod-7", group="orders"))
        assert done.wait(10.0), "the handler did not return"
        assert run.done.is_set()
    finally:
        runner.close()
        logging.getLogger().removeHandler(log_handler)
    return stream.getvalue().splitlines()


def sync_handler(shard: Shard) -> None:
    logging.getLogger("myapp").info("working on %d", shard.id)


async def async_handler(shard: Shard) -> None:
    logging.getLogger("myapp.worker").info("working on %d", shard.id)
    # A task the handler starts inherits its context; so does asyncio.to_thread.
    await asyncio.create_task(_child())
    await asyncio.to_thread(logging.getLogger("myapp").info, "in a worker thread")


async def _child() -> None:
    logging.getLogger("myapp").info("in a child task")


@pytest.mark.parametrize("handler", [sync_handler, async_handler], ids=["sync", "async"])
def test_handler_lines_carry_identity_group_and_shard_in_text(handler: Callable[[Shard], Any]) -> None:
    lines = [line for line in _run_handler(handler, "text", 5) if " myapp" in line]
    assert lines, "the handler's line was not logged"
    assert all("identity=pod-7 group=orders shard=5 " in line for line in lines), lines
    assert any(line.endswith("working on 5") for line in lines), lines
    if handler is async_handler:
        assert any(line.endswith("in a child task") for line in lines), lines
        assert any(line.endswith("in a worker thread") for line in lines), lines


@pytest.mark.parametrize("handler", [sync_handler, async_handler], ids=["sync", "async"])
def test_handler_lines_carry_identity_group_and_shard_in_json(handler: Callable[[Shard], Any]) -> None:
    docs = [json.loads(line) for line in _run_handler(handler, "json", 3)]
    mine = [doc for doc in docs if doc["logger"].startswith("myapp")]
    assert mine, docs
    for doc in mine:
        assert (doc["identity"], doc["group"], doc["shard"]) == ("pod-7", "orders", 3), doc


def test_concurrent_handlers_keep_their_own_shard() -> None:
    """Eight threads log at once: each line names the shard of the thread that wrote it."""
    stream = io.StringIO()
    log_handler = configure("json", "INFO", stream=stream)
    barrier = threading.Barrier(8, timeout=10)
    exits = threading.Semaphore(0)

    def handler(shard: Shard) -> None:
        barrier.wait()
        for _ in range(20):
            logging.getLogger("myapp").info("mine is %d", shard.id)

    runner = HandlerRunner(handler, on_exit=lambda run: exits.release(), logger=logging.getLogger("shardlease"))
    try:
        for i in range(8):
            runner.start(Shard(i, 8, 1, identity="pod-1", group="g"))
        for _ in range(8):
            assert exits.acquire(timeout=10)
    finally:
        logging.getLogger().removeHandler(log_handler)
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [doc for doc in docs if doc["logger"] == "myapp"]
    assert len(mine) == 160
    assert all(doc["msg"] == f"mine is {doc['shard']}" for doc in mine)


def test_context_ends_with_the_block_and_explicit_fields_win() -> None:
    stream, handler = _capture("text")
    try:
        with log_context(identity="pod-c", group="g", shard=1):
            logging.getLogger("myapp").info("inside")
            get_logger("pod-c", "g").info("explicit", extra={"shard": 9})
        logging.getLogger("myapp").info("outside")
    finally:
        logging.getLogger().removeHandler(handler)
    inside, explicit, outside = stream.getvalue().splitlines()
    assert "identity=pod-c group=g shard=1 inside" in inside
    assert "shard=9 explicit" in explicit
    assert "identity=- group=- outside" in outside and "shard=" not in outside
