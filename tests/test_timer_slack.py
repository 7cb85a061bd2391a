"""The paced senders' timer slack: 1 ns for the thread that asked, the default elsewhere."""

from __future__ import annotations

import ctypes
import sys
import threading

import pytest

from pytest_cfn.measure.timer_slack import tighten_timer_slack

PR_GET_TIMERSLACK = 30

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="timer slack is a Linux setting")


def _slack_ns() -> int:
    return int(ctypes.CDLL(None).prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0))


def test_the_asking_thread_gets_1ns_and_no_other_thread_does() -> None:
    seen: dict[str, int | bool] = {}

    def sender() -> None:
        seen["before"] = _slack_ns()
        seen["granted"] = tighten_timer_slack()
        seen["after"] = _slack_ns()

    def bystander() -> None:
        seen["bystander"] = _slack_ns()

    one = threading.Thread(target=sender)
    one.start()
    one.join()
    other = threading.Thread(target=bystander)
    other.start()
    other.join()
    assert seen["granted"] is True
    assert seen["before"] > 1  # Linux's default (50 µs) or what the environment set
    assert seen["after"] == 1
    assert seen["bystander"] == seen["before"]
