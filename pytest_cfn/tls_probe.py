"""Say in one line why a connection fails when the cause is TLS, for tools built on redis-py.

redis-py reports a TLS mistake as a bare ``ConnectionError`` ("EOF occurred in
violation of protocol"); the plugin, the bench and the harness probe the same URL
once with this library's own connection, whose :class:`TlsError` names the fix.
"""

from __future__ import annotations

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._errors import CfnError, TlsError
from pytest_cfn._sync.connection import RespConnection

__all__ = ["tls_problem"]


def tls_problem(url: str, timeout: float = 3.0) -> str | None:
    """The TLS reason a connection to ``url`` fails, or None when TLS is not the problem."""
    try:
        address = parse_redis_url(url)
    except CfnError:
        return None
    conn = RespConnection(address, "cfn:tls-probe", connect_timeout=timeout,
                          socket_timeout=timeout)
    try:
        conn.connect()
    except TlsError as exc:
        return str(exc)
    except (OSError, TimeoutError, CfnError):
        return None
    finally:
        conn.close()
    return None
