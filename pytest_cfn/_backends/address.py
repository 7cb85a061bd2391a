"""Where a Redis server is and how to log in, parsed from a URL."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pytest_cfn._backends.tls import TLS_OPTIONS, TlsSettings, tls_settings
from pytest_cfn._errors import InvalidOptionError

ADDRESS_SETTINGS = ("ssl", *TLS_OPTIONS)
"""The keyword settings :func:`with_tls_options` takes out of a bus's settings."""

URL_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://... (TLS; query options "
    "ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, ssl_check_hostname) "
    "or unix:///path/to/socket[?db=N]"
)


@dataclass(frozen=True)
class ServerAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    """TLS settings; ``None`` for plain text."""

    def describe(self) -> str:
        if self.unix_path:
            return f"unix:{self.unix_path}"
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls is not None else "")


def parse_redis_url(url: str, **tls_options: Any) -> ServerAddress:
    """Parse ``redis://``, ``rediss://`` and ``unix://`` URLs; anything else is a clear error.

    ``tls_options`` (``ssl_ca_certs=`` ...) are applied on top of the URL's query.
    """
    if not isinstance(url, str) or not url:
        raise InvalidOptionError(f"Redis URL must be a non-empty string; use {URL_FORMS}")
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    query = dict(parse_qsl(parts.query))
    tls_query = {key: value for key, value in query.items() if key.startswith("ssl_")}
    if parts.scheme == "unix":
        if not parts.path:
            raise InvalidOptionError(f"Redis URL {url!r} has no socket path; use {URL_FORMS}")
        if tls_query:
            raise InvalidOptionError(
                f"Redis URL {url!r} sets TLS options on a unix socket; TLS needs rediss://host:port"
            )
        db = _parse_db(query["db"], url) if "db" in query else 0
        address = ServerAddress(
            unix_path=parts.path, db=db, username=username, password=password
        )
        return with_tls_options(address, tls_options)
    if parts.scheme not in ("redis", "rediss"):
        raise InvalidOptionError(f"Redis URL {url!r} has scheme {parts.scheme!r}; use {URL_FORMS}")
    if tls_query and parts.scheme == "redis":
        raise InvalidOptionError(
            f"Redis URL {redact(url)!r} sets {', '.join(sorted(tls_query))} on a plain "
            "redis:// URL; use rediss:// for TLS"
        )
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise InvalidOptionError(f"Redis URL {url!r} has a bad port; use {URL_FORMS}") from exc
    db = _parse_db(parts.path.lstrip("/") or "0", url)
    tls = None
    if parts.scheme == "rediss":
        tls = tls_settings(tls_query, f"Redis URL {redact(url)!r}")
    address = ServerAddress(
        host=parts.hostname or "127.0.0.1",
        port=port,
        db=db,
        username=username,
        password=password,
        tls=tls,
    )
    return with_tls_options(address, tls_options)


def with_tls_options(address: ServerAddress, options: MutableMapping[str, Any]) -> ServerAddress:
    """``address`` with ``ssl_*`` keyword options applied; they are removed from ``options``
    (the other keys are left for the caller). ``ssl=True`` turns TLS on for a plain address."""
    taken = {key: options.pop(key) for key in list(options) if key.startswith("ssl_")}
    enable = options.pop("ssl", None)
    if enable is not None and not isinstance(enable, bool):
        raise InvalidOptionError(f"ssl must be True or False, got {enable!r}")
    if not taken and enable is None:
        return address
    if enable is False:
        if taken:
            raise InvalidOptionError(f"ssl=False contradicts {', '.join(sorted(taken))}")
        return replace(address, tls=None)
    if address.unix_path:
        raise InvalidOptionError("TLS options were given for a unix socket; TLS needs host:port")
    if address.tls is None and enable is None:
        raise InvalidOptionError(
            f"{', '.join(sorted(taken))} given for a plain address ({address.describe()}); "
            "use a rediss:// URL or pass ssl=True"
        )
    merged: dict[str, Any] = {}
    if address.tls is not None:
        merged = {
            "ssl_ca_certs": address.tls.ca_certs,
            "ssl_certfile": address.tls.certfile,
            "ssl_keyfile": address.tls.keyfile,
            "ssl_cert_reqs": address.tls.cert_reqs,
            "ssl_check_hostname": address.tls.check_hostname,
        }
    merged.update(taken)
    return replace(address, tls=tls_settings(merged, "TLS keyword options"))


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _parse_db(text: str, url: str) -> int:
    if not text.isdigit():
        raise InvalidOptionError(
            f"Redis URL {url!r} has database {text!r}; the database is a number 0-15"
        )
    return int(text)


__all__ = [
    "ADDRESS_SETTINGS", "TLS_OPTIONS", "URL_FORMS", "ServerAddress", "parse_redis_url",
    "with_tls_options",
]
