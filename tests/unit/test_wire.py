"""``shardlease.client.wire``: the HTTP/1.1 path every request takes, against real sockets.

The normal exchanges are covered end to end by every test that talks to the dev-server or the real
kube-apiserver (TLS with client certificates there). What those servers never do on demand is misbehave,
so here a small socket server answers with canned bytes: a keep-alive connection it closes behind the
client's back, a response that never comes, bytes that are not HTTP, a connection cut in the middle.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import resource
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.config.incluster_config import InClusterConfigLoader
from support import poll as wait_until

from shardlease.client.leases import LeaseClient
from shardlease.client.wire import Wire, wire_for
from shardlease.devserver import DevServer
from shardlease.errors import (
    ApiError,
    CredentialsError,
    Forbidden,
    InvalidArgument,
    NetworkError,
    RequestTimeout,
    Throttled,
    Unauthorized,
    UnexpectedApiError,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

#: What the canned server does with one request: bytes to send back, then keep the connection open
#: (``keep``) or close it; ``None`` sends nothing and keeps the connection open (a server that hangs);
#: a callable is given the connection and sends what it likes (a body that trickles).
Answer = tuple[bytes | None | Callable[[socket.socket], None], bool]


class CannedServer:
    """Accepts connections on 127.0.0.1 and answers each request with ``answer(connection, request)``."""

    def __init__(self, answer: Callable[[int, int], Answer]) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        #: Connections the client closed (the server read the end of them).
        self.ended = 0
        self.requests: list[bytes] = []
        self._open: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        served = 0
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    self.ended += 1
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + buffer[:length])
            buffer = buffer[length:]
            served += 1
            reply, keep = self._answer(number, served)
            if reply is None:
                continue  # hang: never answer
            try:
                if callable(reply):
                    reply(conn)
                else:
                    conn.sendall(reply)
            except OSError:
                return
            if not keep:
                conn.close()
                return

    def close(self) -> None:
        self._stop = True
        self._listener.close()
        for conn in self._open:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def canned() -> Iterator[Callable[[Callable[[int, int], Answer]], CannedServer]]:
    servers: list[CannedServer] = []

    def start(answer: Callable[[int, int], Answer]) -> CannedServer:
        server = CannedServer(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def wire(port: int) -> Wire:
    return Wire("127.0.0.1", port, pool_size=4)


def test_a_keep_alive_connection_carries_every_request(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, n: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-N: %d\r\n\r\n%d" % (
        len(str(n)), n, n), True))
    w = wire(server.port)
    for n in range(1, 21):
        reply = w.request("PUT", "/x", "Content-Type: application/json\r\n", b'{"a":1}', 5.0)
        assert (reply.status, reply.headers["x-n"], reply.body) == (200, str(n), str(n).encode())
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"PUT /x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port)
    assert b"Content-Length: 7\r\n" in first and first.endswith(b'{"a":1}')


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error(
        canned: Callable[..., CannedServer]) -> None:
    # The server closes after every response without saying so, as an API server does with a
    # keep-alive connection idle past its timeout: the next request finds it dead before any answer.
    server = canned(lambda _c, _n: (OK, False))
    w = wire(server.port)
    for _ in range(3):
        assert w.request("GET", "/x", "", None, 5.0).status == 200
        time.sleep(0.05)  # let the close arrive before the connection is reused
    assert server.connections == 3
    assert len(server.requests) == 3  # each request reached the server exactly once


def test_connection_close_is_honoured(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False))
    w = wire(server.port)
    for _ in range(2):
        assert w.request("GET", "/x", "", None, 5.0).body == b"{}"
    assert server.connections == 2 and len(server.requests) == 2


def test_a_server_that_never_answers_times_out(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (None, True))
    w = wire(server.port)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        w.request("PUT", "/x", "", b"{}", 0.3)
    assert time.monotonic() - started < 3.0  # generous: the bound is the point, not its precision
    assert len(server.requests) == 1  # a timeout is never retried: the server may have acted on it


def test_bytes_that_are_not_http_are_a_network_error(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", True))
    with pytest.raises(NetworkError, match="malformed HTTP"):
        wire(server.port).request("GET", "/x", "", None, 2.0)


def test_a_response_cut_in_the_middle_is_a_network_error_not_a_retry(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial", False))
    with pytest.raises(NetworkError, match="before the response ended"):
        wire(server.port).request("PUT", "/x", "", b"{}", 2.0)
    assert len(server.requests) == 1


def test_nothing_listening_is_a_network_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(NetworkError, match="connect to 127.0.0.1"):
        wire(port).request("GET", "/x", "", None, 2.0)


def test_a_stream_yields_chunks_and_abort_cuts_it_from_another_thread(canned: Callable[..., CannedServer]) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"6\r\nline1\n\r\n6\r\nline2\n\r\n")  # two chunks, then the stream stays open
    server = canned(lambda _c, _n: (chunked, True))
    stream = wire(server.port).stream("GET", "/watch", "", connect_timeout=2.0, read_timeout=30.0)
    assert stream.status == 200
    pieces = stream.pieces()
    assert next(pieces) + next(pieces) == b"line1\nline2\n"
    threading.Timer(0.2, stream.abort).start()
    started = time.monotonic()
    with pytest.raises(NetworkError, match="closed by the client"):
        next(pieces)
    assert time.monotonic() - started < 5.0


def test_a_silent_stream_times_out(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True))
    stream = wire(server.port).stream("GET", "/watch", "", connect_timeout=2.0, read_timeout=0.3)
    with pytest.raises(RequestTimeout):
        next(stream.pieces())


def test_a_stream_ends_when_the_server_ends_the_body(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab\n\r\n0\r\n\r\n", True))
    stream = wire(server.port).stream("GET", "/watch", "", connect_timeout=2.0, read_timeout=5.0)
    assert list(stream.pieces()) == [b"ab\n"]


def configuration(host: str, **settings: object) -> Configuration:
    config = Configuration()
    config.host = host
    for name, value in settings.items():
        setattr(config, name, value)
    return config


def test_wire_for_keeps_urllib3_for_a_proxy_and_a_foreign_assert_hostname() -> None:
    assert wire_for(configuration("https://10.0.0.1:6443", proxy="http://proxy:3128"), pool_size=2) is None
    assert wire_for(configuration("https://10.0.0.1:6443", proxy="http://proxy:3128", no_proxy="10.0.0.1"),
                    pool_size=2) is not None
    assert wire_for(configuration("https://10.0.0.1:6443", assert_hostname="kubernetes.default"),
                    pool_size=2) is None


def test_wire_for_takes_tls_and_the_path_prefix_from_the_configuration(canned: Callable[..., CannedServer]) -> None:
    insecure = wire_for(configuration("https://10.0.0.1:6443", verify_ssl=False), pool_size=2)
    assert insecure is not None and insecure._ssl is not None
    assert insecure._ssl.verify_mode == ssl.CERT_NONE and not insecure._ssl.check_hostname
    strict = wire_for(configuration("https://10.0.0.1:6443"), pool_size=2)
    assert strict is not None and strict._ssl is not None
    assert strict._ssl.verify_mode == ssl.CERT_REQUIRED and strict._ssl.check_hostname
    server = canned(lambda _c, _n: (OK, True))
    prefixed = wire_for(configuration(f"http://127.0.0.1:{server.port}/k8s/clusters/c-1/"), pool_size=2)
    assert prefixed is not None and prefixed._ssl is None
    prefixed.request("GET", "/api/v1/namespaces", "", None, 2.0)
    assert server.requests[0].startswith(b"GET /k8s/clusters/c-1/api/v1/namespaces HTTP/1.1\r\n")


def test_a_429_with_only_a_retry_after_header_carries_its_wait(canned: Callable[..., CannedServer]) -> None:
    # API Priority and Fairness may answer 429 with the header alone; header names arrive lower-cased.
    server = canned(lambda _c, _n: (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n"
                                    b"Content-Length: 9\r\n\r\nslow down", True))
    client = LeaseClient(ApiClient(configuration(f"http://127.0.0.1:{server.port}")), "default")
    assert client.http_path == "wire"
    with pytest.raises(Throttled) as throttled:
        client.get("x", timeout=2.0)
    assert throttled.value.retry_after == 3.0


# ---- a write goes out once: sent again only if provably never sent, or a read --------------------------

#: Close the connection without answering (a server, or a balancer in front of it, that lost the answer).
CLOSE: Answer = (b"", False)


def first_then(later: Answer) -> Callable[[int, int], Answer]:
    """Answer the first request of every connection with 200 and keep it open; then ``later``."""
    return lambda _c, n: (OK, True) if n == 1 else later


def request_lines(server: CannedServer) -> list[bytes]:
    return [r.split(b"\r\n", 1)[0] for r in server.requests]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_write_whose_connection_ends_before_an_answer_is_not_sent_again(
        canned: Callable[..., CannedServer], method: str) -> None:
    server = canned(first_then(CLOSE))
    w = wire(server.port)
    assert w.request("GET", "/x", "", None, 2.0).status == 200
    with pytest.raises(NetworkError, match="whether the server applied it is unknown") as failed:
        w.request(method, "/y", "", b"{}", 2.0)
    assert failed.value.outcome_unknown
    assert request_lines(server) == [b"GET /x HTTP/1.1", f"{method} /y HTTP/1.1".encode()]   # the write once


def test_a_server_that_drops_every_write_gets_it_once_however_many_connections_are_pooled(
        canned: Callable[..., CannedServer]) -> None:
    server: CannedServer = canned(lambda _c, _n: CLOSE if server.requests[-1].startswith(b"POST") else (OK, True))
    w = wire(server.port)
    for connection in [w._checkout(time.monotonic() + 2.0) for _ in range(4)]:
        w._checkin(connection)                                    # a full pool (pool_size=4) of live connections
    with pytest.raises(NetworkError) as failed:
        w.request("POST", "/x", "", b"{}", 2.0)
    assert failed.value.outcome_unknown and request_lines(server) == [b"POST /x HTTP/1.1"]


def test_a_read_on_a_connection_that_ends_before_an_answer_is_sent_once_more_on_a_new_one(
        canned: Callable[..., CannedServer]) -> None:
    server = canned(first_then(CLOSE))
    w = wire(server.port)
    assert w.request("GET", "/a", "", None, 2.0).status == 200
    assert w.request("GET", "/b", "", None, 2.0).status == 200  # connection 1 dropped it; connection 2 answered
    assert request_lines(server) == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /b HTTP/1.1"]
    assert server.connections == 2


def test_a_read_is_sent_again_at_most_once(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda c, n: (OK, True) if (c, n) == (1, 1) else CLOSE)
    w = wire(server.port)
    w.request("GET", "/a", "", None, 2.0)
    with pytest.raises(NetworkError, match="also on a new connection") as failed:
        w.request("GET", "/b", "", None, 2.0)
    assert not failed.value.outcome_unknown                        # a read: nothing to be unsure about
    assert request_lines(server).count(b"GET /b HTTP/1.1") == 2


def test_a_write_the_kernel_never_took_is_sent_on_a_new_connection(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (OK, True))
    w = wire(server.port)
    w.request("GET", "/x", "", None, 2.0)
    (pooled,) = w._idle
    pooled.sock.shutdown(socket.SHUT_WR)      # looks open to the liveness check, but its first send fails
    assert w.request("POST", "/y", "", b"{}", 2.0).status == 200
    assert request_lines(server) == [b"GET /x HTTP/1.1", b"POST /y HTTP/1.1"] and server.connections == 2


def test_the_send_again_after_a_dropped_connection_connects_within_the_time_left() -> None:
    """The re-send's connect gets what is left of the timeout, so the whole call stays within it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)                         # one queued connection fills it; the next connect then hangs
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()            # accepts once, then never again
        conn.recv(65536)
        conn.sendall(OK)
        conn.recv(65536)
        time.sleep(1.0)
        conn.close()                           # the second request: dropped after 1 s, no answer

    threading.Thread(target=serve, daemon=True).start()
    w = wire(port)
    filler: socket.socket | None = None
    try:
        w.request("GET", "/a", "", None, 2.0)
        filler = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            w.request("GET", "/b", "", None, 2.0)
        assert time.monotonic() - started < 2.6   # a full 2 s for the connect would make it 3 s
    finally:
        if filler is not None:
            filler.close()
        listener.close()


# ---- responses llhttp frames differently than a plain reading suggests --------------------------------


@pytest.mark.parametrize("apart", [False, True], ids=["one-segment", "separate-segments"])
def test_interim_1xx_responses_are_skipped_and_each_request_gets_its_own_answer(
        canned: Callable[..., CannedServer], apart: bool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"

    def answer(_c: int, n: int) -> Answer:
        final = b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"n":%d}' % n

        def send(conn: socket.socket) -> None:
            conn.sendall(interim)
            time.sleep(0.05)
            conn.sendall(final)

        return (send, True) if apart else (interim + final, True)

    server = canned(answer)
    w = wire(server.port)
    for n in (1, 2, 3):
        reply = w.request("GET", f"/lease-{n}", "", None, 2.0)
        assert (reply.status, json.loads(reply.body), "link" in reply.headers) == (200, {"n": n}, False)
    assert server.connections == 1


@pytest.mark.parametrize("head", [b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200 OK\r\nConnection: close\r\n"],
                         ids=["http-1.0", "connection-close"])
def test_a_body_that_runs_to_the_end_of_the_connection_is_read_whole(
        canned: Callable[..., CannedServer], head: bytes) -> None:
    server = canned(lambda _c, _n: (head + b'Content-Type: application/json\r\n\r\n{"a": 1}', False))
    w = wire(server.port)
    for _ in range(2):
        assert w.request("GET", "/x", "", None, 2.0).body == b'{"a": 1}'
    assert server.connections == 2                                 # such a connection is never reused


# ---- connections: liveness check, close ----------------------------------------------------------------


def test_a_pooled_connection_on_a_descriptor_above_1023_is_checked_and_reused(
        canned: Callable[..., CannedServer]) -> None:
    """``select`` cannot take descriptors >= 1024; a process with many open files has them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files, the hard limit is {hard} (raise it with ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    server = canned(lambda _c, _n: (OK, True))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.open(os.devnull, os.O_RDONLY))     # every lower descriptor is taken
        w = wire(server.port)
        for n in range(3):
            if n:
                time.sleep(1.1)                                    # idle long enough to be checked
            w.request("GET", "/x", "", None, 2.0)
        assert w._idle[0].sock.fileno() >= 1024 and server.connections == 1
    finally:
        for fd in fillers:
            os.close(fd)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_close_closes_a_connection_in_use_once_its_request_ends(canned: Callable[..., CannedServer]) -> None:
    def slow(conn: socket.socket) -> None:
        time.sleep(0.4)
        conn.sendall(OK)

    server = canned(lambda _c, _n: (slow, True))
    w = wire(server.port)
    replies: list[int] = []
    worker = threading.Thread(target=lambda: replies.append(w.request("GET", "/x", "", None, 5.0).status))
    worker.start()
    time.sleep(0.1)
    w.close()                                                      # while the request is in flight
    worker.join(5.0)
    assert replies == [200] and w._idle == []
    assert wait_until(lambda: server.ended == 1)                   # the server saw it closed
    assert w.request("GET", "/x", "", None, 2.0).status == 200     # later requests still work


# ---- request heads --------------------------------------------------------------------------------------


def test_a_target_with_a_line_break_is_refused_before_anything_is_sent(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (OK, True))
    w = wire(server.port)
    for target in ("/x\r\nX-Injected: 1", "/x HTTP/1.1\r\n\r\nGET /y", "x", "/caf\u00e9"):
        with pytest.raises(InvalidArgument, match="percent-encode"):
            w.request("GET", target, "", None, 2.0)
    assert server.requests == [] and server.connections == 0


def test_header_values_go_out_as_latin_1(canned: Callable[..., CannedServer]) -> None:
    server = canned(lambda _c, _n: (OK, True))
    wire(server.port).request("GET", "/x", "X-Team: caf\u00e9\r\n", None, 2.0)
    assert b"\r\nX-Team: caf\xe9\r\n" in server.requests[0]        # as http.client sends it, not UTF-8


# ---- through the transport: watches, credentials ---------------------------------------------------------


def lease_client(port: int, path: str = "wire", api: ApiClient | None = None) -> LeaseClient:
    """A ``LeaseClient`` on ``http://127.0.0.1:port`` over the given HTTP path (``wire`` or ``urllib3``)."""
    client = LeaseClient(api or ApiClient(configuration(f"http://127.0.0.1:{port}")), "default",
                         urllib3_only=path == "urllib3")
    assert client.http_path == path
    return client


def trickle(conn: socket.socket) -> None:
    """A 500 whose chunked body comes one byte every 0.2 s, for 20 s."""
    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(100):
        time.sleep(0.2)
        conn.sendall(b"1\r\nx\r\n")


@pytest.mark.parametrize("path", ["wire", "urllib3"])
def test_the_body_of_a_failed_watch_is_read_within_the_read_timeout(
        canned: Callable[..., CannedServer], path: str) -> None:
    server = canned(lambda _c, _n: (trickle, True))
    client = lease_client(server.port, path)
    started = time.monotonic()
    with pytest.raises(ApiError) as failed:
        client.watch("a=b", "1", timeout_seconds=60, read_timeout=1.0)
    assert failed.value.status == 500 and time.monotonic() - started < 5.0
    assert client.current_watch is None


@pytest.mark.parametrize("path", ["wire", "urllib3"])
def test_close_watch_cuts_the_body_of_a_failed_watch(canned: Callable[..., CannedServer], path: str) -> None:
    server = canned(lambda _c, _n: (trickle, True))
    client = lease_client(server.port, path)
    threading.Timer(0.5, client.close_watch).start()
    started = time.monotonic()
    with pytest.raises(ApiError) as failed:
        client.watch("a=b", "1", timeout_seconds=60, read_timeout=30.0)
    assert failed.value.status == 500 and time.monotonic() - started < 5.0


@pytest.mark.parametrize("path", ["wire", "urllib3"])
def test_a_watch_that_is_never_read_releases_its_connection_when_dropped(
        canned: Callable[..., CannedServer], path: str) -> None:
    server = canned(lambda _c, _n: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True))
    client = lease_client(server.port, path)
    gc.collect()                                                   # earlier tests' garbage is not ours
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = client.watch("a=b", "1", timeout_seconds=60, read_timeout=30.0)
        del events                                                 # e.g. a watcher re-targeted before reading
        gc.collect()
        assert wait_until(lambda: server.ended == 1)
    assert client.current_watch is None
    ours = f"raddr=('127.0.0.1', {server.port})"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning) and ours in str(w.message)]


def test_a_failed_credential_refresh_is_a_typed_api_error(tmp_path: Path) -> None:
    """An in-cluster token file found empty when the token is re-read (the kubelet mid-rotation, or an
    unmounted volume) fails the request with ``CredentialsError``, as every other failure is typed."""
    token = tmp_path / "token"
    token.write_text("abc")
    loader = InClusterConfigLoader(token_filename=str(token), cert_filename=certifi.where(),
                                   environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"})
    config = Configuration()
    loader.load_and_set(config)
    client = LeaseClient(ApiClient(config), "default")
    token.write_text("")
    loader.token_expires_at = datetime.datetime.now()             # the periodic re-read of the token is due
    with pytest.raises(CredentialsError, match="Token file exists but empty") as failed:
        client.get("x", timeout=2.0)
    assert isinstance(failed.value, Unauthorized) and not isinstance(failed.value, Forbidden)
    assert failed.value.status is None


# ---- the same misbehaviour through both HTTP paths: the same outcome, the same requests -----------------

LEASE: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "x", "resourceVersion": "7"}, "spec": {"holderIdentity": "a"}}


def json_reply(n: int) -> bytes:
    body = b'{"n":%d}' % n
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def apart(*pieces: bytes) -> Callable[[socket.socket], None]:
    """Send each piece in a segment of its own."""
    def send(conn: socket.socket) -> None:
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.05)
    return send


def paced_get(client: LeaseClient) -> Any:
    time.sleep(0.05)                                               # lets a close by the server arrive first
    return client.get("x", timeout=2.0)


#: name: (how the server answers (``None``: nothing listens), the calls, the outcome of each, requests seen)
SCENARIOS: dict[str, tuple[Callable[[int, int], Answer] | None, list[Callable[[LeaseClient], Any]],
                           list[Any], int]] = {
    "write dropped on a kept-alive connection": (
        first_then(CLOSE), [lambda c: c.get("x", timeout=2.0), lambda c: c.replace("x", LEASE, timeout=2.0)],
        [{}, ("NetworkError", True)], 2),
    "write dropped on a new connection": (
        lambda _c, _n: CLOSE, [lambda c: c.create(LEASE, timeout=2.0)], [("NetworkError", True)], 1),
    "read dropped on a new connection": (
        lambda _c, _n: CLOSE, [lambda c: c.get("x", timeout=2.0)], [("NetworkError", False)], 1),
    "write answer cut in the middle": (
        lambda _c, _n: (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial', False),
        [lambda c: c.replace("x", LEASE, timeout=2.0)], [("NetworkError", True)], 1),
    "write never answered": (
        lambda _c, _n: (None, True), [lambda c: c.replace("x", LEASE, timeout=0.5)], [("RequestTimeout", True)], 1),
    "not HTTP": (
        lambda _c, _n: (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", True), [lambda c: c.get("x", timeout=2.0)],
        [("NetworkError", False)], 1),
    "nothing listening": (None, [lambda c: c.create(LEASE, timeout=2.0)], [("NetworkError", False)], 0),
    "100 Continue before each answer": (
        lambda _c, n: (apart(b"HTTP/1.1 100 Continue\r\n\r\n", json_reply(n)), True),
        [lambda c: c.get("x", timeout=2.0)] * 3, [{"n": 1}, {"n": 2}, {"n": 3}], 3),
    "HTTP/1.0 body up to the end of the connection": (
        lambda _c, _n: (b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":1}', False),
        [lambda c: c.get("x", timeout=2.0)] * 2, [{"a": 1}, {"a": 1}], 2),
    "Connection: close, no length": (
        lambda _c, _n: (b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a":1}', False),
        [lambda c: c.get("x", timeout=2.0)] * 2, [{"a": 1}, {"a": 1}], 2),
    "idle connections closed by the server": (
        lambda _c, n: (json_reply(n), False), [paced_get] * 3, [{"n": 1}] * 3, 3),
    "failed watch whose body trickles": (
        lambda _c, _n: (trickle, True),
        [lambda c: c.watch("a=b", "1", timeout_seconds=60, read_timeout=1.0)], [("ServerError", False)], 1),
}


def outcome(call: Callable[[LeaseClient], Any], client: LeaseClient) -> Any:
    """What a call came to: its answer, or its error's class and ``outcome_unknown``."""
    try:
        return call(client)
    except ApiError as err:
        return (type(err).__name__, err.outcome_unknown)


@pytest.mark.parametrize("path", ["wire", "urllib3"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_both_http_paths_come_to_the_same_outcome_with_the_same_requests(
        canned: Callable[..., CannedServer], scenario: str, path: str) -> None:
    answer, calls, expected, requests = SCENARIOS[scenario]
    if answer is None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = None
    else:
        server = canned(answer)
        port = server.port
    client = lease_client(port, path)
    started = time.monotonic()
    assert [outcome(call, client) for call in calls] == expected
    assert time.monotonic() - started < 5.0
    assert (len(server.requests) if server is not None else 0) == requests
    client.close()


@pytest.mark.parametrize("path", ["wire", "urllib3"])
def test_both_http_paths_refuse_a_bad_target_or_header_before_sending(
        canned: Callable[..., CannedServer], path: str) -> None:
    server = canned(lambda _c, _n: (OK, True))
    client = lease_client(server.port, path)
    with pytest.raises(InvalidArgument, match="CR/LF"):
        client._send("GET", "/api/v1/x\r\nX-Injected: 1", None, 2.0)
    api = ApiClient(configuration(f"http://127.0.0.1:{server.port}"))
    api.set_default_header("X-Team", "caf\u00e9")
    lease_client(server.port, path, api).get("x", timeout=2.0)
    assert b"\r\nX-Team: caf\xe9\r\n" in server.requests[0]     # latin-1 on both paths
    api.set_default_header("X-Team", "\u20ac")
    with pytest.raises(UnexpectedApiError, match="latin-1"):
        lease_client(server.port, path, api).get("x", timeout=2.0)
    assert len(server.requests) == 1


# ---- end to end: a write whose answer is lost, against the dev-server ---------------------------------


class LoseSecondAnswer:
    """A relay in front of a server: it forwards each request of a client connection and passes the
    answer back, except for the second request on a connection, which it forwards, waits until the
    server has answered, and then closes the client's connection without passing the answer on (a
    load balancer that lost the answer to a write the server applied)."""

    def __init__(self, upstream: int) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    @staticmethod
    def _message(sock: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
        """One HTTP message framed by Content-Length (both sides here use it), and what follows it."""
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                return None, b""
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += sock.recv(65536)
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self._upstream))
        pending = b""
        try:
            for number in (1, 2):
                request, pending = self._message(client, pending)
                if request is None:
                    return
                upstream.sendall(request)
                answer, _ = self._message(upstream, b"")
                if number == 1 and answer is not None:
                    client.sendall(answer)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._listener.close()


def lease(holder: str, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "lost-answer", "labels": {"shardlease.io/group": "e2e"}}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


@pytest.mark.parametrize("path", ["wire", "urllib3"])
@pytest.mark.parametrize("call", ["create", "replace"])
def test_a_write_whose_answer_is_lost_is_an_unknown_outcome_and_reaches_the_server_once(call: str, path: str) -> None:
    with DevServer() as srv:
        direct = LeaseClient(ApiClient(configuration(srv.url)), "default")
        relay = LoseSecondAnswer(srv.port)
        try:
            client = lease_client(relay.port, path)
            before = direct.create(lease("one")) if call == "replace" else None
            client.get("lost-answer", timeout=5.0)                 # the first request of the connection
            srv.reset_request_counts()
            with pytest.raises(NetworkError, match="unknown") as failed:
                if before is None:
                    client.create(lease("two"), timeout=5.0)
                else:
                    client.replace("lost-answer", lease("two", before["metadata"]["resourceVersion"]), timeout=5.0)
            assert failed.value.outcome_unknown
            verb = "create" if call == "create" else "update"
            assert srv.request_counts() == {(verb, "leases"): 1}
            after = direct.get("lost-answer", timeout=5.0)
            assert after is not None and after["spec"]["holderIdentity"] == "two"   # it was applied
            client.close()
            direct.close()
        finally:
            relay.close()
