"""Real listeners on loopback that are not a usable Redis, for the one-line error tests.

``NOT_REDIS`` names each case; ``not_redis_url(kind, stack, tmp_path)`` opens its listener
(closed by ``stack``) and returns the URL to hand to the command under test, with the words
its one-line error must contain.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from pytest_cfn.server import RedisServer

NOT_REDIS = ("http", "refused", "silent", "tls", "wrong-password", "no-password")
EXPECTED = {
    "http": "is not a Redis server: it answered PING with",
    "refused": "connection refused",
    "silent": "answered nothing to PING",
    "tls": "is a TLS port",
    "wrong-password": "refused the login (WRONGPASS",
    "no-password": "needs a password (NOAUTH",
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve_forever(server: http.server.ThreadingHTTPServer, stack: ExitStack) -> int:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return int(server.server_address[1])


def _tls_port(stack: ExitStack, tmp_path: Path) -> int:
    """A TLS server (Python's ssl, a fresh self-signed certificate) on a loopback port."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the TLS listener's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stack.callback(listener.close)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def not_redis_url(kind: str, stack: ExitStack, tmp_path: Path) -> str:
    """Open the listener of ``kind`` (one of ``NOT_REDIS``) and return its URL."""
    if kind == "http":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        return f"redis://127.0.0.1:{_serve_forever(server, stack)}/0"
    if kind == "refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"
    if kind == "silent":
        listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        stack.callback(listener.close)
        return f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    if kind == "tls":
        return f"redis://127.0.0.1:{_tls_port(stack, tmp_path)}/0"
    if kind in ("wrong-password", "no-password"):
        server = stack.enter_context(RedisServer())
        admin = redis.Redis(port=server.port, protocol=2)
        admin.config_set("requirepass", "right-one")
        admin.close()
        password = ":wrong-one@" if kind == "wrong-password" else ""
        return f"redis://{password}127.0.0.1:{server.port}/0"
    raise ValueError(f"unknown listener kind {kind!r}; kinds are {', '.join(NOT_REDIS)}")
