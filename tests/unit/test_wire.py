"""``shardlease.client.wire``: the HTTP/1.1 path every request takes, against real sockets.

The normal exchanges are covered end to end by every test that talks to the dev-server or the real
kube-apiserver (TLS with client certificates there). What those servers never do on demand is misbehave,
so here a small socket server answers with canned bytes: a keep-alive connection it closes behind the
client's back, a response that never comes, bytes that are not HTTP, a connection cut in the middle.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes.client import ApiClient, Configuration

from shardlease.client.leases import LeaseClient
from shardlease.client.wire import Wire, wire_for
from shardlease.errors import NetworkError, RequestTimeout, Throttled

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

#: What the canned server does with one request: bytes to send back, then keep the connection open
#: (``keep``) or close it; ``None`` sends nothing and keeps the connection open (a server that hangs).
Answer = tuple[bytes | None, bool]


class CannedServer:
    """Accepts connections on 127.0.0.1 and answers each request with ``answer(connection, request)``."""

    def __init__(self, answer: Callable[[int, int], Answer]) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
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
