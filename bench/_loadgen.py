"""Lean Lease-update load generator, run as a worker process by ``bench/devserver.py``.

Why not the ``kubernetes`` client: its per-request overhead (model (de)serialisation, urllib3 pool,
logging) is several times the cost of the request itself on the server, so with two cores it would
measure the client, not the dev-server. This worker speaks raw HTTP/1.1 over asyncio streams, one
keep-alive connection per simulated client, and does the minimum per request: format a small JSON
body, write it, read the status line, headers and body, and pull out the new ``resourceVersion``.

Protocol with the parent (one JSON document per line):

* stdin, first line: the job, e.g. ``{"host": ..., "port": ..., "mode": "own"|"shared",
  "clients": [0, 2, 4], "lease_prefix": ..., "namespace": ...}``.
* stdout: ``{"ready": true}`` once every client has its Lease and its connection.
* stdin, second line: ``{"start": t0, "measure_start": t1, "measure_end": t2}`` as
  ``time.monotonic()`` values. On Linux that clock is system-wide (CLOCK_MONOTONIC), so the
  parent and all workers agree on the window without exchanging wall-clock times.
* stdout, last line: the worker's counters and latencies for requests completed inside the window.

Only requests that *complete* inside ``[measure_start, measure_end)`` are counted; warm-up traffic
(connection set-up, the server's first-touch costs) falls before ``measure_start``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

API_PREFIX = "/apis/coordination.k8s.io/v1/namespaces"

#: How often one logical read-modify-write may hit 409 before the client gives up on it. A
#: bound keeps a pathological server (everything conflicts) from spinning a client forever.
MAX_RMW_ATTEMPTS = 50


class HttpError(Exception):
    """The connection broke or the server sent something that is not HTTP/1.x."""


def microtime(now: float | None = None) -> str:
    """A MicroTime string with exactly six fractional digits, as kube-apiserver requires."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects transparently if the server closes it."""

    def __init__(self, host: str, port: int, client_name: str) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0
        # Pre-encoded constant part of every request head: formatting it once saves real CPU.
        self._fixed_headers = (
            f"Host: {host}:{port}\r\n"
            f"User-Agent: shardlease-bench/1\r\n"
            f"X-Shardlease-Client: {client_name}\r\n"
            f"Accept: application/json\r\n"
        ).encode()

    async def _connect(self) -> None:
        # asyncio enables TCP_NODELAY on TCP sockets by default, so small writes go out at once.
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.connects += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and return ``(status, body)``; raises :class:`HttpError` on I/O failure."""
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._fixed_headers
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            self.writer.write(head + b"\r\n" + (body or b""))
            await self.writer.drain()
            raw_head = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw_head.split(b"\r\n")
            version, status_text = lines[0].split(b" ", 2)[:2]
            status = int(status_text)
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
            if b"content-length" in headers:
                payload = await self.reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                payload = await self._read_chunked()
            else:
                payload = await self.reader.read()  # body delimited by connection close
                headers[b"connection"] = b"close"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        connection = headers.get(b"connection", b"").lower()
        if connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive"):
            self.close()
        return status, payload

    async def _read_chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readline()
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:size])


@dataclass
class Stats:
    """Counters of one worker process, counting only what completed inside the window."""

    ok: int = 0  # successful PUTs (own mode) or successful read-modify-write cycles (shared mode)
    puts: int = 0  # PUT attempts
    gets: int = 0
    conflicts: int = 0  # 409 answers to PUT
    errors: int = 0  # anything that is neither 2xx nor 409 (incl. broken connections)
    gave_up: int = 0  # read-modify-write cycles abandoned after MAX_RMW_ATTEMPTS
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # PUT latency / whole-cycle latency
    put_latencies_ms: list[float] = field(default_factory=list)  # shared mode: every PUT attempt

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def lease_body(name: str, namespace: str, holder: str, rv: str | None, transitions: int = 0) -> bytes:
    """A whole Lease with every spec field set, as client-go's LeaseLock sends it.

    Metadata is kept to name, namespace and the resourceVersion of the last read or write: that RV
    is what makes the PUT conditional, and the server must answer a stale one with 409.
    """
    now = microtime()
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if rv is not None:
        metadata["resourceVersion"] = rv
    obj = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        },
    }
    return json.dumps(obj, separators=(",", ":")).encode()


def resource_version(payload: bytes) -> str:
    return str(json.loads(payload)["metadata"]["resourceVersion"])


async def ensure_lease(conn: Connection, namespace: str, name: str, holder: str) -> str:
    """Create the Lease (or adopt it if a previous run left it) and return its resourceVersion."""
    status, payload = await conn.request(
        "POST", f"{API_PREFIX}/{namespace}/leases", lease_body(name, namespace, holder, None)
    )
    if status == 201 or status == 200:
        return resource_version(payload)
    if status == 409:
        status, payload = await conn.request("GET", f"{API_PREFIX}/{namespace}/leases/{name}")
        if status == 200:
            return resource_version(payload)
    raise RuntimeError(f"cannot create Lease {namespace}/{name}: HTTP {status}: {payload[:300]!r}")


class Window:
    """The shared time window, filled in when the parent says go."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.start = self.measure_start = self.measure_end = 0.0

    def counts(self, done: float) -> bool:
        return self.measure_start <= done < self.measure_end


async def own_lease_client(
    conn: Connection, namespace: str, name: str, holder: str, window: Window, stats: Stats,
    ready: asyncio.Event,
) -> None:
    """Uncontended renewals: conditional PUT with the RV our previous write returned."""
    path = f"{API_PREFIX}/{namespace}/leases/{name}"
    rv = await ensure_lease(conn, namespace, name, holder)
    ready.set()
    await window.go.wait()
    await asyncio.sleep(max(0.0, window.start - time.monotonic()))
    while True:
        began = time.monotonic()
        if began >= window.measure_end:
            return
        body = lease_body(name, namespace, holder, rv)
        try:
            status, payload = await conn.request("PUT", path, body)
        except HttpError as exc:
            if window.counts(time.monotonic()):
                stats.error(str(exc).split(":")[0])
            await asyncio.sleep(0.01)
            try:
                rv = await refresh(conn, path)
            except (HttpError, KeyError, ValueError):
                pass
            continue
        done = time.monotonic()
        counted = window.counts(done)
        if counted:
            stats.puts += 1
        if status == 200:
            rv = resource_version(payload)
            if counted:
                stats.ok += 1
                stats.latencies_ms.append((done - began) * 1000.0)
        else:
            if status == 409:  # cannot happen unless someone else writes our Lease: resync
                if counted:
                    stats.conflicts += 1
            else:
                if counted:
                    stats.error(f"HTTP {status}")
                if status == 429 or status >= 500:
                    await asyncio.sleep(0.01)
            try:
                rv = await refresh(conn, path)
            except (HttpError, KeyError, ValueError):
                pass


async def refresh(conn: Connection, path: str) -> str:
    status, payload = await conn.request("GET", path)
    if status != 200:
        raise HttpError(f"GET {path}: HTTP {status}")
    return resource_version(payload)


async def shared_lease_client(
    conn: Connection, namespace: str, name: str, holder: str, window: Window, stats: Stats
) -> None:
    """Contended read-modify-write on one Lease shared by all clients: GET, change, PUT, retry on 409."""
    path = f"{API_PREFIX}/{namespace}/leases/{name}"
    await window.go.wait()
    await asyncio.sleep(max(0.0, window.start - time.monotonic()))
    while time.monotonic() < window.measure_end:
        cycle_began = time.monotonic()
        for _attempt in range(MAX_RMW_ATTEMPTS):
            try:
                status, payload = await conn.request("GET", path)
                if window.counts(time.monotonic()):
                    stats.gets += 1
                if status != 200:
                    if window.counts(time.monotonic()):
                        stats.error(f"GET HTTP {status}")
                    await asyncio.sleep(0.01)
                    continue
                current = json.loads(payload)
                spec = current.get("spec") or {}
                transitions = int(spec.get("leaseTransitions") or 0)
                if spec.get("holderIdentity") != holder:
                    transitions += 1
                body = lease_body(name, namespace, holder, str(current["metadata"]["resourceVersion"]), transitions)
                put_began = time.monotonic()
                status, payload = await conn.request("PUT", path, body)
            except HttpError as exc:
                if window.counts(time.monotonic()):
                    stats.error(str(exc).split(":")[0])
                await asyncio.sleep(0.01)
                continue
            done = time.monotonic()
            counted = window.counts(done)
            if counted:
                stats.puts += 1
                stats.put_latencies_ms.append((done - put_began) * 1000.0)
            if status == 200:
                if counted:
                    stats.ok += 1
                    stats.latencies_ms.append((done - cycle_began) * 1000.0)
                break
            if status == 409:
                if counted:
                    stats.conflicts += 1
                continue
            if counted:
                stats.error(f"PUT HTTP {status}")
            await asyncio.sleep(0.01)
        else:
            if window.counts(time.monotonic()):
                stats.gave_up += 1


async def cpu_sampler(window: Window, marks: dict[str, float]) -> None:
    """Record this process's CPU time at the window edges (the busy loop itself keeps running)."""
    await window.go.wait()
    await asyncio.sleep(max(0.0, window.measure_start - time.monotonic()))
    marks["start"] = time.process_time()
    await asyncio.sleep(max(0.0, window.measure_end - time.monotonic()))
    marks["end"] = time.process_time()


async def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    host, port, namespace = job["host"], int(job["port"]), job.get("namespace", "default")
    stats = Stats()
    window = Window()
    conns: list[Connection] = []
    readies: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    shared_name = f"{job['lease_prefix']}-shared"
    if job["mode"] == "shared":
        # The shared Lease is created by whoever gets there first; the others adopt it.
        setup = Connection(host, port, "bench-setup")
        await ensure_lease(setup, namespace, shared_name, "bench-setup")
        setup.close()
    for index in job["clients"]:
        holder = f"bench-client-{index}"
        conn = Connection(host, port, holder)
        conns.append(conn)
        if job["mode"] == "own":
            ready = asyncio.Event()
            readies.append(ready)
            coro = own_lease_client(
                conn, namespace, f"{job['lease_prefix']}-{index}", holder, window, stats, ready
            )
        else:
            await conn.request("GET", f"{API_PREFIX}/{namespace}/leases/{shared_name}")  # open it now
            coro = shared_lease_client(conn, namespace, shared_name, holder, window, stats)
        tasks.append(asyncio.create_task(coro))
    marks: dict[str, float] = {}
    tasks.append(asyncio.create_task(cpu_sampler(window, marks)))
    # Own-mode clients create their Leases before waiting on `go`; report ready only after that.
    while not all(r.is_set() for r in readies):
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        await asyncio.sleep(0.005)
    print(json.dumps({"ready": True}), flush=True)
    go_line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    go = json.loads(go_line)
    window.start, window.measure_start, window.measure_end = go["start"], go["measure_start"], go["measure_end"]
    window.go.set()
    # The deadline bounds every loop; the extra second covers one in-flight request per client.
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=window.measure_end - time.monotonic() + 30)
    for conn in conns:
        conn.close()
    result = dict(stats.__dict__)
    result["cpu_s"] = marks.get("end", 0.0) - marks.get("start", 0.0)
    result["connects"] = sum(c.connects for c in conns)
    return result


def main() -> int:
    job = json.loads(sys.stdin.readline())
    result = asyncio.run(run_worker(job))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
