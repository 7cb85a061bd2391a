"""``SyncStream`` under gevent and with plain threads: every byte of a stream written in
pieces arrives in order, in both directions (a write is one ``send`` unless the kernel takes
part of it), a read times out, sees EOF and a close by another greenlet. The gevent run is a
subprocess: gevent's monkey patching must not reach the pytest process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading

from pytest_cfn._backends.sync_backend import GeventReader, SyncStream

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import socket, time, gevent
    from pytest_cfn._backends.sync_backend import SyncStream
    from pytest_cfn._errors import ConnectionLostError, ReplyTimeoutError

    a, b = socket.socketpair()
    stream = SyncStream(a, "pair")

    sent = [bytes([i % 251]) * (1 + i * 37 % 5000) for i in range(300)]

    def writer():
        for i, piece in enumerate(sent):
            b.sendall(piece)
            if i % 7 == 0:
                gevent.sleep(0.0005)

    gevent.spawn(writer)
    want = b"".join(sent)
    got = bytearray()
    while len(got) < len(want):
        got += stream.read(5.0)
    print("intact", bytes(got) == want)

    big = bytes(range(256)) * 40000  # 10 MB: the kernel takes it in parts
    def reader():
        seen = bytearray()
        while len(seen) < len(big):
            seen += b.recv(1 << 20)
        print("big", bytes(seen) == big)

    done = gevent.spawn(reader)
    stream.write(big)
    done.join()

    started = time.monotonic()
    try:
        stream.read(0.2)
    except ReplyTimeoutError:
        print("timeout", round(time.monotonic() - started, 1))

    def close_peer():
        gevent.sleep(0.05)
        b.close()

    gevent.spawn(close_peer)
    print("eof", stream.read(5.0) == b"")

    c, d = socket.socketpair()
    other = SyncStream(c, "pair2")
    d.sendall(b"x")
    other.read(1.0)  # short: the next read waits first

    def close_mine():
        gevent.sleep(0.05)
        c.close()

    gevent.spawn(close_mine)
    for _ in range(2):
        try:
            other.read(5.0)
        except ConnectionLostError:
            print("lost")

    # the reused timer: timeouts of one value and another, then data, then an abort
    from pytest_cfn._backends.sync_backend import GeventReader
    e, f = socket.socketpair()
    third = SyncStream(e, "pair3")
    print("gevent reader", GeventReader.of(e) is not None)
    waited = []
    for seconds in (0.1, 0.1, 0.3):
        started = time.monotonic()
        try:
            third.read(seconds)
        except ReplyTimeoutError:
            took = time.monotonic() - started
            # each wait its whole timeout (a restarted timer that fired at once read 0.0)
            waited.append("full" if seconds * 0.9 <= took < seconds + 2.0 else round(took, 3))
    print("timeouts", waited)

    def send_late():
        gevent.sleep(0.05)
        f.sendall(b"late")

    gevent.spawn(send_late)
    print("data", third.read(5.0))

    def abort_it():
        gevent.sleep(0.05)
        third.abort()

    gevent.spawn(abort_it)
    started = time.monotonic()
    try:
        print("abort eof", third.read(5.0) == b"")
    except ConnectionLostError:
        print("abort lost")
    print("abort in time", time.monotonic() - started < 2.0)
""")


def test_a_gevent_stream_loses_nothing_and_reports_timeouts_and_closes() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:-1] == [
        "intact True", "big True", "timeout 0.2", "eof True", "lost", "lost",
        "gevent reader True", "timeouts ['full', 'full', 'full']", "data b'late'",
        "abort lost", "abort in time True",
    ], proc.stdout + proc.stderr[-2000:]


def test_only_a_plain_gevent_socket_gets_the_gevent_reader() -> None:
    # no monkey patching in the pytest process: a standard socket keeps its own recv
    a, b = socket.socketpair()
    try:
        assert GeventReader.of(a) is None
    finally:
        a.close()
        b.close()


def test_a_plain_thread_stream_reads_and_writes_everything() -> None:
    a, b = socket.socketpair()
    try:
        stream = SyncStream(a, "pair")
        b.sendall(b"abc")
        assert stream.read(1.0) == b"abc"
        b.sendall(b"defg")
        assert stream.read(1.0) == b"defg"
        big = bytes(range(256)) * 40000
        seen = bytearray()

        def drain() -> None:
            while len(seen) < len(big):
                seen.extend(b.recv(1 << 20))

        reader = threading.Thread(target=drain)
        reader.start()
        stream.write(big)
        reader.join(10)
        assert bytes(seen) == big
    finally:
        a.close()
        b.close()
