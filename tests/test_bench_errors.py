"""``python -m pytest_cfn.measure.microbench`` and the locustfile: a URL that is not a usable
Redis ends in one line naming what is there (real listeners on loopback), never a client's
traceback."""

from __future__ import annotations

import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from not_redis import EXPECTED, NOT_REDIS, not_redis_url

SWARM = Path(__file__).resolve().parent.parent / "loadtests" / "swarm.py"


@pytest.mark.parametrize("kind", NOT_REDIS)
def test_bench_module_names_a_wrong_server_in_one_line_and_exits_2(
    kind: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        url = not_redis_url(kind, stack, tmp_path)
        out = subprocess.run(
            [sys.executable, "-m", "pytest_cfn.measure.microbench", "--quick", "--redis", url],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("pytest_cfn.measure.microbench: error: ")
    assert EXPECTED[kind] in out.stderr
    assert "Redis " not in out.stdout, "the benchmark started measuring"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["http", "tls", "wrong-password"])
def test_locustfile_names_a_wrong_server_in_one_line(kind: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        url = not_redis_url(kind, stack, tmp_path)
        out = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(SWARM), "--headless", "-u", "1",
             "-t", "1s", "--cfn-redis", url],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if "cannot start the harness" in line]
    assert len(lines) == 1 and EXPECTED[kind] in lines[0], out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert not list(tmp_path.glob("reports/*.json"))


def test_the_old_module_name_runs_the_micro_benchmark_and_names_the_new_one() -> None:
    out = subprocess.run([sys.executable, "-m", "pytest_cfn.bench", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "is now python -m pytest_cfn.measure.microbench" in out.stderr
    assert out.stdout.startswith("usage: python -m pytest_cfn.measure.microbench")
