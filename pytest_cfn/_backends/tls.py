"""TLS settings of a connection, named as redis-py names them, and what a failure means.

The options are the five of redis-py (``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``), given as keyword
arguments or as query parameters of a ``rediss://`` URL, so one URL works for
this library and for ``redis.Redis.from_url`` alike. The server's certificate is
verified, hostname included, unless the user says otherwise.

A TLS failure is turned into one :class:`TlsError` whose message says which of
the usual mistakes it looks like (untrusted CA, wrong host name, TLS to a plain
port, a client certificate missing) and which option fixes it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_cfn._errors import InvalidOptionError, TlsError, TlsHandshakeTimeoutError

TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class TlsSettings:
    """How to open TLS to one server; the defaults verify its certificate and host name."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.cert_reqs not in CERT_REQS:
            raise InvalidOptionError(
                f"ssl_cert_reqs {self.cert_reqs!r} is not known; use one of "
                f"{', '.join(CERT_REQS)} (default required)"
            )
        if self.keyfile is not None and self.certfile is None:
            raise InvalidOptionError(
                "ssl_keyfile was given without ssl_certfile; a client certificate needs both "
                "(or one PEM file holding key and certificate, as ssl_certfile)"
            )

    def client_context(self) -> ssl.SSLContext:
        """The SSL context (made once per distinct settings: loading a CA file costs ms)."""
        return _client_context(self)


def tls_settings(options: Mapping[str, Any], where: str) -> TlsSettings:
    """Settings from ``ssl_*`` keyword options or URL query values (strings); ``where``
    names their origin in error messages."""
    unknown = sorted(set(options) - set(TLS_OPTIONS))
    if unknown:
        raise InvalidOptionError(
            f"{where}: unknown TLS option(s) {', '.join(unknown)}; the TLS options are "
            f"{', '.join(TLS_OPTIONS)}"
        )
    cert_reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(cert_reqs, ssl.VerifyMode):
        cert_reqs = {mode: name for name, mode in CERT_REQS.items()}[cert_reqs]
    elif isinstance(cert_reqs, str):
        cert_reqs = cert_reqs.lower()
    check = options.get("ssl_check_hostname", True)
    if isinstance(check, str):
        if check.lower() not in _TRUE + _FALSE:
            raise InvalidOptionError(
                f"{where}: ssl_check_hostname={check!r}; use true or false"
            )
        check = check.lower() in _TRUE
    if not isinstance(check, bool):
        raise InvalidOptionError(
            f"{where}: ssl_check_hostname must be true or false, got {check!r}"
        )
    paths = {}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        value = options.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidOptionError(f"{where}: {name} must be a file path, got {value!r}")
        paths[name] = value
    return TlsSettings(
        ca_certs=paths["ssl_ca_certs"],
        certfile=paths["ssl_certfile"],
        keyfile=paths["ssl_keyfile"],
        cert_reqs=str(cert_reqs),
        check_hostname=check,
    )


@functools.lru_cache(maxsize=64)
def _client_context(settings: TlsSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=settings.ca_certs)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidOptionError(
            f"ssl_ca_certs {settings.ca_certs!r} cannot be loaded ({exc}); pass the path of a "
            "PEM file holding the CA certificate(s) that signed the server's certificate"
        ) from None
    verify = CERT_REQS[settings.cert_reqs]
    context.check_hostname = settings.check_hostname and verify != ssl.CERT_NONE
    context.verify_mode = verify
    if settings.certfile is not None:
        try:
            context.load_cert_chain(settings.certfile, settings.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidOptionError(
                f"client certificate ssl_certfile={settings.certfile!r} "
                f"ssl_keyfile={settings.keyfile!r} cannot be loaded ({exc}); pass PEM files "
                "of the certificate and of its private key"
            ) from None
    return context


def redis_py_options(address: Any, timeout: float) -> dict[str, Any]:
    """Keyword arguments giving a redis-py client the same login and TLS as ``address``."""
    options: dict[str, Any] = {
        "username": address.username, "password": address.password,
        "socket_timeout": timeout, "socket_connect_timeout": timeout, "protocol": 2,
    }
    tls: TlsSettings | None = address.tls
    if tls is not None:
        options.update(
            ssl=True, ssl_ca_certs=tls.ca_certs, ssl_certfile=tls.certfile,
            ssl_keyfile=tls.keyfile, ssl_cert_reqs=tls.cert_reqs,
            ssl_check_hostname=tls.check_hostname and tls.cert_reqs != "none",
        )
    return options


def tls_failure(exc: BaseException, where: str, timeout: float | None = None) -> TlsError:
    """One clear error for a failed TLS handshake (or a TLS alert on the first reply)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        if "mismatch" in detail.lower():
            return TlsError(
                f"the TLS certificate of Redis at {where} does not name that host ({detail}); "
                "connect with a host name the certificate was issued for, or pass "
                "ssl_check_hostname=false to skip the host name check"
            )
        return TlsError(
            f"the TLS certificate of Redis at {where} is not trusted ({detail}); pass "
            "ssl_ca_certs=/path/to/ca.pem (keyword or URL query) with the CA that signed it, "
            "or ssl_cert_reqs=none to skip verification (not for production)"
        )
    if isinstance(exc, TimeoutError):
        return TlsHandshakeTimeoutError(
            f"TLS handshake with Redis at {where} got no answer within {timeout} s: the port "
            "seems to speak plain text (use a redis:// URL, or the server's --tls-port), or "
            "the server is hung"
        )
    reason = str(getattr(exc, "reason", "") or "")
    if "CERTIFICATE_REQUIRED" in reason:
        return TlsError(
            f"Redis at {where} requires a client certificate (mutual TLS, {reason}); pass "
            "ssl_certfile= and ssl_keyfile= of a certificate its tls-ca-cert-file trusts"
        )
    if any(word in reason for word in ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")):
        return TlsError(
            f"Redis at {where} refused our client certificate ({reason}); pass "
            "ssl_certfile= / ssl_keyfile= of a certificate signed by a CA the server trusts"
        )
    if isinstance(exc, ssl.SSLError) and reason in (
        "WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST",
    ):
        return TlsError(
            f"TLS handshake with Redis at {where} failed ({reason}): the port does not speak "
            "TLS; use a redis:// URL for a plain port, or the server's --tls-port"
        )
    return TlsError(
        f"TLS with Redis at {where} failed ({exc}); check the ssl_* options "
        f"({', '.join(TLS_OPTIONS)})"
    )


def refused_after_handshake(exc: BaseException, where: str, client_cert: bool) -> TlsError:
    """The handshake passed but the first reply is an alert or the end: mutual TLS."""
    reason = str(getattr(exc, "reason", "") or "")
    if reason and reason not in ("UNEXPECTED_EOF_WHILE_READING", "EOF"):
        return tls_failure(exc, where)
    if client_cert:
        return TlsError(
            f"Redis at {where} closed the TLS connection before answering ({exc}): it seems "
            "not to accept our client certificate; pass ssl_certfile= / ssl_keyfile= of one "
            "signed by a CA in its tls-ca-cert-file"
        )
    return TlsError(
        f"Redis at {where} closed the TLS connection before answering ({exc}): it seems to "
        "require a client certificate (mutual TLS, tls-auth-clients yes); pass ssl_certfile= "
        "and ssl_keyfile= of a certificate its tls-ca-cert-file trusts"
    )


def plain_to_tls_port(where: str, exc: BaseException) -> TlsError:
    """A plain-text handshake cut off before any reply: what a TLS port does to plain text."""
    return TlsError(
        f"Redis at {where} closed the connection before answering ({exc}); a TLS port "
        "(redis-server --tls-port) does that to plain text: use a rediss:// URL for it"
    )
