"""Is a Redis server at a URL? One connection, PING, and a one-line answer when it is not.

Every entry point that is handed a URL (the ``cfn`` commands, the plugin, both benchmarks and
the locustfile) asks this first, so a wrong URL ends in one sentence saying what is there and
what to do, never in a client library's traceback. It tells apart:

- nothing listening (connection refused), and a host or socket that does not exist;
- a port that accepts the connection and then says nothing (a paused server, a firewall, a
  service that waits for its client to speak first);
- a TLS port spoken to in plain text (its first bytes are a TLS record);
- a service that is not Redis (its first bytes are quoted: ``HTTP/1.0 400 ...``);
- wrong or missing credentials (``WRONGPASS``, ``NOAUTH``), and any other error reply.

It speaks RESP over a plain socket (no redis-py, no hiredis), so it is cheap to import, and a
reply it cannot parse is a finding, not a crash.
"""

from __future__ import annotations

import socket
import ssl
import time

from pytest_cfn._backends.address import ServerAddress, parse_redis_url
from pytest_cfn._backends.tls import refused_after_handshake, tls_failure
from pytest_cfn._core.resp import encode_command
from pytest_cfn._errors import ServerUnavailableError

__all__ = ["DEFAULT_TIMEOUT_S", "ServerCheckError", "check_server"]

DEFAULT_TIMEOUT_S = 3.0
MAX_REPLY_BYTES = 1 << 20
_RESP_TYPES = b"+-:$*_,#!=(%~>|"
_TLS_RECORD_TYPES = (0x14, 0x15, 0x16, 0x17)
_SERVICES = (
    (b"HTTP/", "an HTTP server"),
    (b"<", "an HTML page"),
    (b"SSH-", "an SSH server"),
    (b"220", "an SMTP or FTP server"),
    (b"* OK", "an IMAP server"),
    (b"+OK", "a POP3 server"),
)
URL_HELP = "redis://[user:password@]host:port/db"


class ServerCheckError(ServerUnavailableError):
    """The URL does not lead to a Redis server this client can use; the message says why
    (checked before anything runs, so ``except ServerUnavailableError`` catches it too)."""


class _Silent(Exception):
    """The peer sent nothing before the deadline."""


class _Closed(Exception):
    """The peer closed the connection."""


class _Reader:
    """Reads RESP2 replies (simple, error, integer, bulk) off a blocking socket."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.received = 0
        self.error: BaseException | None = None

    def _more(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Silent
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise _Silent from None
        except (ConnectionResetError, ssl.SSLError) as exc:  # a TLS alert, too
            self.error = exc
            raise _Closed from None
        if not chunk:
            raise _Closed
        self.buffer += chunk
        self.received += len(chunk)
        if self.received > MAX_REPLY_BYTES:
            raise _Closed

    def first_byte(self) -> int:
        while not self.buffer:
            self._more()
        return self.buffer[0]

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def reply(self) -> tuple[bytes, bytes]:
        """(type byte, content): content is the line, or the bulk string's bytes."""
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind != b"$":
            return kind, rest
        size = int(rest) if rest.lstrip(b"-").isdigit() else -1
        if size < 0:
            return kind, b""
        while len(self.buffer) < size + 2:
            self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        return kind, data


def _connect(address: ServerAddress, where: str, timeout: float) -> socket.socket:
    try:
        if address.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address.unix_path)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
    except ConnectionRefusedError:
        raise ServerCheckError(
            f"cannot reach Redis at {where}: connection refused (nothing listens there); "
            "start a server there or fix the URL"
        ) from None
    except FileNotFoundError:
        raise ServerCheckError(
            f"cannot reach Redis at {where}: no such socket file; start a server with "
            "'unixsocket' set to that path or fix the URL"
        ) from None
    except socket.gaierror as exc:
        raise ServerCheckError(
            f"cannot reach Redis at {where}: unknown host ({exc.strerror}); fix the URL"
        ) from None
    except TimeoutError:
        raise ServerCheckError(
            f"cannot reach Redis at {where}: no connection within {timeout:g} s (a host that "
            "does not answer, or a firewall that drops the packets)"
        ) from None
    except OSError as exc:
        raise ServerCheckError(
            f"cannot reach Redis at {where}: {exc.strerror or exc}; fix the URL"
        ) from None
    if address.tls is None:
        return sock
    try:
        return address.tls.client_context().wrap_socket(sock, server_hostname=address.host)
    except (ssl.SSLError, TimeoutError) as exc:
        sock.close()
        raise ServerCheckError(str(tls_failure(exc, where, timeout))) from None
    except BaseException:
        sock.close()
        raise


def _not_redis(where: str, reader: _Reader) -> ServerCheckError:
    head = reader.buffer[:60]
    if head[0] in _TLS_RECORD_TYPES and head[1:2] == b"\x03":
        return ServerCheckError(
            f"{where} speaks TLS: it answered the plain-text PING with a TLS record; this "
            "client speaks plain RESP only, so use the server's plain-text port"
        )
    what = next((name for prefix, name in _SERVICES if head.startswith(prefix)), None)
    shown = head.splitlines()[0].strip().decode("ascii", "replace") if head.strip() else ""
    return ServerCheckError(
        f"{where} is not a Redis server: it answered PING with {shown!r}"
        + (f" ({what})" if what else "")
        + "; check the host and port of the URL"
    )


def _speaks_tls(address: ServerAddress, timeout: float) -> bool:
    """A second connection that starts a TLS handshake: True when a TLS record comes back."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        if address.unix_path is not None:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.settimeout(timeout)
            raw.connect(address.unix_path)
        else:
            raw = socket.create_connection((address.host, address.port), timeout=timeout)
    except OSError:
        return False
    try:
        with context.wrap_socket(raw, do_handshake_on_connect=False) as tls:
            tls.settimeout(timeout)
            tls.do_handshake()
        return True
    except ssl.SSLError as exc:
        # An alert (a client certificate required, no shared cipher) is TLS talking back.
        return "ALERT" in str(exc.reason or "").upper()
    except OSError:
        return False
    finally:
        raw.close()


def _tls_error(where: str) -> ServerCheckError:
    return ServerCheckError(
        f"{where} is a TLS port: it dropped the plain-text PING and answered a TLS handshake; "
        "use a rediss:// URL for it (TLS options: ssl_ca_certs, ssl_certfile, ssl_keyfile, "
        "ssl_cert_reqs, ssl_check_hostname), or the server's plain-text port"
    )


def _login_error(where: str, message: str) -> ServerCheckError:
    if message.startswith(("WRONGPASS", "ERR invalid password", "ERR invalid username")):
        return ServerCheckError(
            f"Redis at {where} refused the login ({message}); put the right user and password "
            f"in the URL: {URL_HELP}"
        )
    if message.startswith("NOAUTH"):
        return ServerCheckError(
            f"Redis at {where} needs a password ({message}); put it in the URL: {URL_HELP}"
        )
    if "without any password configured" in message:
        return ServerCheckError(
            f"Redis at {where} has no password set but the URL gives one ({message}); take "
            "the password out of the URL"
        )
    return ServerCheckError(f"Redis at {where} answered PING with an error: {message}")


def _version(info: bytes) -> str:
    for line in info.decode(errors="replace").splitlines():
        if line.startswith("redis_version:"):
            return line.partition(":")[2].strip()
    return ""


def check_server(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """PING the server at ``url`` (after AUTH when the URL has credentials) and return its
    version (``""`` when INFO is refused); :class:`ServerCheckError` with one line otherwise.
    A bad URL raises ``InvalidOptionError`` from the URL parser."""
    address = parse_redis_url(url)
    where = address.describe()
    sock = _connect(address, where, timeout)
    try:
        commands = []
        if address.password is not None:
            login = [address.username] if address.username else []
            commands.append(encode_command("AUTH", *login, address.password))
        commands += [encode_command("PING"), encode_command("INFO", "server")]
        sock.settimeout(timeout)
        try:
            sock.sendall(b"".join(commands))
        except OSError as exc:
            if address.tls is not None:  # a mutual-TLS server's alert comes at the first write
                tls = address.tls
                failure = refused_after_handshake(exc, where, tls.certfile is not None)
                raise ServerCheckError(str(failure)) from None
            raise ServerCheckError(
                f"{where} closed the connection before PING was sent ({exc.strerror or exc}); "
                "it is not a Redis server this client can talk to"
            ) from None
        reader = _Reader(sock, time.monotonic() + timeout)
        try:
            if reader.first_byte() not in _RESP_TYPES:
                raise _not_redis(where, reader)
            replies = [reader.reply() for _ in commands[:-1]]
            for kind, content in replies:
                if kind != b"-" and kind not in b"+:$":
                    raise _not_redis(where, reader)
                if kind == b"-":
                    raise _login_error(where, content.decode(errors="replace"))
            kind, info = reader.reply()
        except _Silent:
            if reader.received:
                raise _not_redis(where, reader) from None
            if _speaks_tls(address, min(timeout, 1.0)):
                raise _tls_error(where) from None
            raise ServerCheckError(
                f"cannot reach Redis at {where}: it accepted the connection but answered "
                f"nothing to PING within {timeout:g} s (a paused or overloaded server, a TLS "
                "port waiting for a handshake, or a service that is not Redis)"
            ) from None
        except _Closed:
            if address.tls is not None:
                cause = reader.error or ConnectionResetError("closed")
                failure = refused_after_handshake(cause, where, address.tls.certfile is not None)
                raise ServerCheckError(str(failure)) from None
            if reader.buffer and reader.buffer[:1] not in _RESP_TYPES:
                raise _not_redis(where, reader) from None
            if _speaks_tls(address, timeout):
                raise _tls_error(where) from None
            raise ServerCheckError(
                f"{where} closed the connection without answering PING: not a Redis server "
                "this client can talk to (or one at its maxclients limit)"
            ) from None
        return _version(info) if kind == b"$" else ""
    finally:
        sock.close()
