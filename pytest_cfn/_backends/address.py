"""Where a Redis server is and how to log in, parsed from a URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pytest_cfn._errors import InvalidOptionError

URL_FORMS = "redis://[[user]:password@]host[:port][/db] or unix:///path/to/socket[?db=N]"


@dataclass(frozen=True)
class ServerAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> ServerAddress:
    """Parse ``redis://`` and ``unix://`` URLs; anything else is a clear error."""
    if not isinstance(url, str) or not url:
        raise InvalidOptionError(f"Redis URL must be a non-empty string; use {URL_FORMS}")
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "unix":
        if not parts.path:
            raise InvalidOptionError(f"Redis URL {url!r} has no socket path; use {URL_FORMS}")
        db = 0
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if key == "db":
                db = _parse_db(value, url)
        return ServerAddress(
            unix_path=parts.path, db=db, username=username, password=password
        )
    if parts.scheme != "redis":
        hint = " (TLS is not supported yet)" if parts.scheme == "rediss" else ""
        raise InvalidOptionError(
            f"Redis URL {url!r} has scheme {parts.scheme!r}{hint}; use {URL_FORMS}"
        )
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise InvalidOptionError(f"Redis URL {url!r} has a bad port; use {URL_FORMS}") from exc
    db = _parse_db(parts.path.lstrip("/") or "0", url)
    return ServerAddress(
        host=parts.hostname or "127.0.0.1",
        port=port,
        db=db,
        username=username,
        password=password,
    )


def _parse_db(text: str, url: str) -> int:
    if not text.isdigit():
        raise InvalidOptionError(
            f"Redis URL {url!r} has database {text!r}; the database is a number 0-15"
        )
    return int(text)
