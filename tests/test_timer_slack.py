"""The paced senders' timer slack: 1 ns for the thread that asked, no other thread's changed."""

from __future__ import annotations

import ctypes
import sys
import threading

import pytest

from pytest_cfn.measure.timer_slack import tighten_timer_slack

PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30
DEFAULT_NS = 50_000

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="timer slack is a Linux setting")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def _slack_ns() -> int:
    return int(_libc().prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0))


def test_the_asking_thread_gets_1ns_and_no_other_thread_does() -> None:
    # A new thread starts with its creator's slack, and this process may already have
    # asked for 1 ns (the benchmark's senders run in-process in other tests): the parent
    # thread sets Linux's default first.
    seen: dict[str, int | bool] = {}

    def sender() -> None:
        seen["before"] = _slack_ns()
        seen["granted"] = tighten_timer_slack()
        seen["after"] = _slack_ns()

    def bystander() -> None:
        seen["bystander"] = _slack_ns()

    def parent() -> None:
        _libc().prctl(PR_SET_TIMERSLACK, DEFAULT_NS, 0, 0, 0)
        for target in (sender, bystander):
            child = threading.Thread(target=target)
            child.start()
            child.join()
        seen["parent"] = _slack_ns()

    one = threading.Thread(target=parent)
    one.start()
    one.join()
    assert seen["granted"] is True
    assert seen["before"] == DEFAULT_NS
    assert seen["after"] == 1
    assert seen["bystander"] == DEFAULT_NS  # started after the sender asked, by its parent
    assert seen["parent"] == DEFAULT_NS
