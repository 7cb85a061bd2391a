"""TLS: rediss:// URLs and ssl_* options, against a real redis-server --tls-port.

Certificates are made at test time (trustme). Both front ends are held to the same
behaviour: a verified connection works, mutual TLS works with a client certificate,
and each usual mistake fails with one TlsError that says what to change.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn._backends.address import parse_redis_url, with_tls_options
from pytest_cfn._backends.tls import TlsSettings
from pytest_cfn._errors import InvalidOptionError, ServerWithoutTlsError, TlsError
from pytest_cfn.tls_server import TlsCertificates, TlsRedisServer


def _start(require_client_cert: bool) -> TlsRedisServer:
    try:
        return TlsRedisServer(require_client_cert=require_client_cert).start()
    except ServerWithoutTlsError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsRedisServer]:
    server = _start(require_client_cert=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server() -> Iterator[TlsRedisServer]:
    server = _start(require_client_cert=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the servers present."""
    return TlsCertificates.make(tmp_path_factory.mktemp("other-ca")).ca


def _roundtrip(fe: Frontend, url: str, ns: str, **settings: Any) -> list[Any]:
    got: list[Any] = []
    sub = fe.event_bus(url, "tls", "reader", namespace=ns, **settings)
    sub.subscribe("job.*", got.append)
    pub = fe.event_bus(url, "tls", "writer", namespace=ns, **settings)
    for n in range(50):
        pub.publish("job.done", {"n": n}, priority=9 if n == 0 else 5)
    pub.flush()
    assert wait_until(lambda: len(got) == 50, timeout=10), f"got {len(got)} of 50"
    assert sub.stats()["lost"] == 0
    return got


# --- URLs and options (no server) -----------------------------------------------------


def test_rediss_url_verifies_by_default_and_reads_query_options() -> None:
    plain = parse_redis_url("rediss://h:6380/2")
    assert plain.tls == TlsSettings()
    assert plain.tls.cert_reqs == "required" and plain.tls.check_hostname is True
    full = parse_redis_url(
        "rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_cert_reqs=optional&ssl_check_hostname=false"
    )
    assert full.tls == TlsSettings("/ca.pem", "/c.pem", "/k.pem", "optional", False)
    assert (full.host, full.port, full.password) == ("h", 6380, "pw")
    assert parse_redis_url("redis://h:1/0").tls is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://h/0?ssl_ca_certs=/ca.pem", "rediss://"),
        ("rediss://h/0?ssl_ca_cert=/ca.pem", "unknown TLS option"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "none, optional, required"),
        ("rediss://h/0?ssl_check_hostname=perhaps", "true or false"),
        ("rediss://h/0?ssl_keyfile=/k.pem", "without ssl_certfile"),
        ("unix:///tmp/r.sock?ssl_ca_certs=/ca.pem", "unix socket"),
    ],
)
def test_bad_tls_url_is_a_clear_error(url: str, words: str) -> None:
    with pytest.raises(InvalidOptionError, match=words):
        parse_redis_url(url)


def test_keyword_options_override_the_query_and_need_tls() -> None:
    settings: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_NONE, "namespace": "x"}
    address = with_tls_options(parse_redis_url("rediss://h/0?ssl_ca_certs=/ca.pem"), settings)
    assert address.tls == TlsSettings(ca_certs="/ca.pem", cert_reqs="none")
    assert settings == {"namespace": "x"}, "ssl_* keys are taken out, the others left"
    with pytest.raises(InvalidOptionError, match="ssl=True"):
        with_tls_options(parse_redis_url("redis://h/0"), {"ssl_ca_certs": "/ca.pem"})
    on = with_tls_options(parse_redis_url("redis://h/0"), {"ssl": True, "ssl_ca_certs": "/c"})
    assert on.tls == TlsSettings(ca_certs="/c")


def test_an_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(InvalidOptionError, match=r"ssl_ca_certs .* cannot be loaded"):
        TlsSettings(ca_certs=str(missing)).client_context()


# --- against a real TLS server, both front ends ---------------------------------------------


def test_verified_tls_connection_delivers(
    fe: Frontend, tls_server: TlsRedisServer, ns: str
) -> None:
    got = _roundtrip(fe, tls_server.tls_url, ns)
    assert [e.data["n"] for e in got] == list(range(50))


def test_tls_options_as_keywords(fe: Frontend, tls_server: TlsRedisServer, ns: str) -> None:
    url = f"rediss://127.0.0.1:{tls_server.tls_port}/0"
    _roundtrip(fe, url, ns, ssl_ca_certs=str(tls_server.certs.ca), ssl_check_hostname=True)


def test_mutual_tls_with_a_client_certificate(
    fe: Frontend, mtls_server: TlsRedisServer, ns: str
) -> None:
    _roundtrip(fe, mtls_server.mutual_tls_url, ns)


def test_mutual_tls_without_a_client_certificate_says_so(
    fe: Frontend, mtls_server: TlsRedisServer, ns: str
) -> None:
    bus = fe.event_bus(mtls_server.tls_url, "tls", "anon", namespace=ns, retries=0)
    with pytest.raises(TlsError, match=r"client certificate.*ssl_certfile"):
        bus.publish("job.x", 1)
        bus.flush()


def test_wrong_ca_fails_with_one_clear_error(
    fe: Frontend, tls_server: TlsRedisServer, other_ca: Path, ns: str
) -> None:
    url = f"rediss://127.0.0.1:{tls_server.tls_port}/0"
    started = time.monotonic()
    with pytest.raises(TlsError, match=r"not trusted.*ssl_ca_certs"):
        bus = fe.event_bus(url, "tls", "w", namespace=ns, ssl_ca_certs=str(other_ca))
        bus.publish("job.x", 1)
        bus.flush()
    assert time.monotonic() - started < 3, "a certificate failure is not retried"
    sub = fe.event_bus(url, "tls", "r", namespace=ns, ssl_ca_certs=str(other_ca))
    with pytest.raises(TlsError, match="not trusted"):
        sub.subscribe("job.*", lambda event: None)


def test_wrong_host_name_fails_and_names_the_fix(fe: Frontend, ns: str) -> None:
    try:
        server = TlsRedisServer(hosts=("redis.example.invalid",)).start()
    except ServerWithoutTlsError as exc:
        pytest.skip(str(exc))
    try:
        bus = fe.event_bus(server.tls_url, "tls", "w", namespace=ns)
        with pytest.raises(TlsError, match=r"does not name that host.*ssl_check_hostname=false"):
            bus.publish("job.x", 1)
            bus.flush()
        bus.close()
        unchecked = fe.event_bus(server.tls_url, "tls", "w", namespace=ns,
                                 ssl_check_hostname=False)
        unchecked.publish("job.x", 1)
        unchecked.flush()
        unchecked.close()
    finally:
        server.stop()


def test_plain_text_to_a_tls_port_fails_with_one_clear_error(
    fe: Frontend, tls_server: TlsRedisServer, ns: str
) -> None:
    bus = fe.event_bus(f"redis://127.0.0.1:{tls_server.tls_port}/0", "tls", "w", namespace=ns)
    with pytest.raises(TlsError, match="rediss://"):
        bus.publish("job.x", 1)
        bus.flush()


def test_tls_to_a_plain_port_fails_with_one_clear_error(
    fe: Frontend, tls_server: TlsRedisServer, ns: str
) -> None:
    url = f"rediss://127.0.0.1:{tls_server.server.port}/0"
    bus = fe.event_bus(
        url, "tls", "w", namespace=ns, connect_timeout=0.5, ssl_ca_certs=str(tls_server.certs.ca)
    )
    with pytest.raises(TlsError, match=r"plain text.*redis://"):
        bus.publish("job.x", 1)
        bus.flush()


def test_swarm_state_over_tls(fe: Frontend, mtls_server: TlsRedisServer, ns: str) -> None:
    state = fe.make("SwarmState", mtls_server.mutual_tls_url, namespace=ns)
    state.save("sw1", loop=2, phase="auth")
    assert state.load("sw1").phase == "auth"
    state.close()
    bad = fe.make("SwarmState", mtls_server.tls_url, namespace=ns, timeout=1.0)
    with pytest.raises(TlsError, match="client certificate"):
        bad.save("sw1", loop=2, phase="auth")
    bad.close()


def test_messenger_request_over_tls(fe: Frontend, tls_server: TlsRedisServer, ns: str) -> None:
    lead = fe.make("Messenger", tls_server.tls_url, "review", "lead", namespace=ns)
    lead.on_request(lambda msg: {"ok": msg.data["pr"]})
    coder = fe.make("Messenger", tls_server.tls_url, "build", "coder", namespace=ns)
    assert coder.request("review", {"pr": 7}, timeout=5).data == {"ok": 7}


def test_subscriber_reconnects_over_tls(
    fe: Frontend, tls_server: TlsRedisServer, ns: str
) -> None:
    """A killed TLS connection is re-established and counted, as a plain one is."""
    got: list[Any] = []
    sub = fe.event_bus(tls_server.tls_url, "tls", "reader", namespace=ns)
    sub.subscribe("job.*", got.append)
    client = redis.Redis.from_url(tls_server.url, protocol=2)
    try:
        assert client.client_kill_filter(_type="pubsub") >= 1
    finally:
        client.close()
    assert wait_until(lambda: sub.stats()["reconnects"] >= 1, timeout=10)
    pub = fe.event_bus(tls_server.tls_url, "tls", "writer", namespace=ns)
    pub.publish("job.after", 1)
    pub.flush()
    assert wait_until(lambda: len(got) == 1, timeout=10)


def test_redis_py_reads_the_same_url(tls_server: TlsRedisServer) -> None:
    """One URL serves this library and redis-py (the plugin's and the bench's clients)."""
    client = redis.Redis.from_url(tls_server.tls_url, protocol=2)
    try:
        assert client.ping() is True
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(
            tls_server.certs.ca
        )
    finally:
        client.close()
