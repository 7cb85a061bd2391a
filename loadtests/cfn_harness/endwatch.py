"""What makes the end of a harness run abnormal, noted while the run goes on (master side).

Locust has no event for a worker that misses its heartbeats, quits or crashes, nor for stopping
a test by itself; it changes a worker's state and writes a log line. So a watcher greenlet polls
the master's worker list (a worker Locust marks missing; a worker that leaves before the test
stops), a logging handler keeps Locust's own words when it stops the test, and at the end the
exceptions Locust recorded are counted (the harness sets the exit code itself, so it must not
hide what would have made Locust exit non-zero).
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from locust import log as locust_log
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner

WATCH_INTERVAL_S = 0.25
# Locust's words when it stops a test itself (locust/runners.py); a worker marked missing is
# the watcher's to report, with its id.
LOCUST_STOPS = ("The last worker went missing", "The last worker quit", "Stopping Locust",
                "Timeout waiting for all workers to stop")


class _LocustLog(logging.Handler):
    def __init__(self, watch: EndWatch) -> None:
        super().__init__(logging.INFO)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(words in message for words in LOCUST_STOPS):
            self.watch.note(f"Locust: {message}")


class EndWatch:
    """The reasons one run's end is abnormal (empty when it ended as it should)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.reasons: list[str] = []
        self.participants: set[str] = set()
        self.gone: dict[str, str] = {}
        self.active = False
        self.stopping = False
        self._handler = _LocustLog(self)
        self._greenlet: gevent.Greenlet | None = None
        logging.getLogger("locust").addHandler(self._handler)

    def begin(self, participants: set[str]) -> None:
        """A test starts with these workers (none for a local run)."""
        self.end()
        self.reasons, self.gone = [], {}
        self.participants = set(participants)
        self.active, self.stopping = True, False
        if isinstance(self.environment.runner, MasterRunner):
            self._greenlet = gevent.spawn(self._watch, self.environment.runner)

    def note(self, reason: str) -> None:
        if self.active and reason not in self.reasons:
            self.reasons.append(reason)

    def _watch(self, runner: MasterRunner) -> None:
        while self.active:
            present = {str(c.id): c for c in runner.clients.all}
            self.participants |= set(present)
            for client_id, client in present.items():
                if client.state == STATE_MISSING and client_id not in self.gone:
                    self.gone[client_id] = "missing"
                    self.note(f"worker {client_id} missed its heartbeats "
                              "(Locust marked it missing)")
            for client_id in self.participants - set(present):
                if client_id not in self.gone and not self.stopping:
                    self.gone[client_id] = "left"
                    self.note(f"worker {client_id} quit or was lost during the test")
            gevent.sleep(WATCH_INTERVAL_S)

    def note_exceptions(self, runner: Any) -> None:
        """Exceptions raised in users (an agent that could not start, say) or greenlets."""
        raised = sum(int(row.get("count", 0)) for row in runner.exceptions.values())
        if raised:
            first = next(iter(runner.exceptions.values()))
            self.note(f"{raised} exception(s) raised in Locust users, e.g. "
                      f"{str(first.get('msg', ''))[:200]!r} (see the log)")
        if locust_log.unhandled_greenlet_exception:
            self.note("an unhandled exception in a greenlet (see the log)")

    def end(self) -> None:
        """The run's result is written: later events belong to no run."""
        self.active = False
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def close(self) -> None:
        self.end()
        logging.getLogger("locust").removeHandler(self._handler)
