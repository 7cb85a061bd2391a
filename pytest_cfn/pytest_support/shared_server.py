"""The embedded redis-server of an xdist run: started once, by the first worker that needs it.

Theory of operation. The workers of one run share a directory (the parent of their base
temp directories). Three files live there:

- ``cfn-server.lock``: held exclusively while a worker starts the server or reads its state;
- ``cfn-server.json``: the running server (url, pid, version, binary, why), written by the
  worker that started it (the *owner*), removed when it is stopped;
- ``cfn-server.users``: every other worker that uses the server holds a shared lock on it
  until its session ends.

The owner stops the server at the end of its own session, but first takes the state lock
and then an exclusive lock on the users file, so it waits until every worker that uses the
server is done. A worker that reads the state takes its shared lock before it lets go of
the state lock, so it can never see a server that is about to be stopped. A worker that
arrives after the owner has stopped it finds no state and starts a new one (it is the new
owner). Locks held by a crashed worker are dropped by the kernel; a server whose owner
crashed dies with it (PR_SET_PDEATHSIG), and a state file whose pid is gone is ignored.
Workers never start a server for a session that does not ask for one.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_cfn.pytest_support.endpoint import RedisEndpoint, StoppableServer, start_embedded

LOCK_NAME = "cfn-server.lock"
STATE_NAME = "cfn-server.json"
USERS_NAME = "cfn-server.users"

if TYPE_CHECKING:
    from pytest_cfn.server import ServerChoice


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedServer:
    """One worker's share of the run's embedded server (see the module docstring)."""

    def __init__(
        self, directory: Path, binary: str | None, choice: ServerChoice | None = None
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.choice = choice
        self.endpoint: RedisEndpoint | None = None
        self.started_here = False
        self._server: StoppableServer | None = None
        self._users: IO[str] | None = None

    def _open(self, name: str) -> IO[str]:
        return open(self.directory / name, "a+", encoding="utf-8")

    def acquire(self) -> RedisEndpoint:
        """The running server, started here if no worker has started one."""
        if self.endpoint is not None:
            return self.endpoint
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._open(LOCK_NAME) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read_state()
            if state is not None:
                self._users = self._open(USERS_NAME)
                fcntl.flock(self._users, fcntl.LOCK_SH)
                self.endpoint = state
                return state
            endpoint, server = start_embedded(self.binary, self.choice)
            self._server, self.endpoint, self.started_here = server, endpoint, True
            self._write_state(endpoint)
            return endpoint

    def release(self) -> None:
        """A user lets go; the owner waits for every user, then stops the server by its pid."""
        users, self._users = self._users, None
        if users is not None:
            users.close()
        server, self._server = self._server, None
        if server is None:
            return
        with self._open(LOCK_NAME) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self._open(USERS_NAME) as everyone:
                fcntl.flock(everyone, fcntl.LOCK_EX)
                try:
                    server.stop()
                finally:
                    (self.directory / STATE_NAME).unlink(missing_ok=True)

    def _read_state(self) -> RedisEndpoint | None:
        try:
            data: dict[str, Any] = json.loads((self.directory / STATE_NAME).read_text())
            endpoint = RedisEndpoint.from_dict(data)
        except (OSError, ValueError, TypeError):
            return None
        return endpoint if _pid_alive(endpoint.pid) else None

    def _write_state(self, endpoint: RedisEndpoint) -> None:
        path = self.directory / STATE_NAME
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(endpoint.to_dict()))
        partial.replace(path)
