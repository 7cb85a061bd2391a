"""What installing pytest-cfn costs an unrelated suite: interleaved runs with and without it.

    python scripts/plugin_overhead.py --runs 20

Method: a temporary directory holds one trivial test (``def test_x(): assert 1``, no fixture of
ours). Each round runs ``python -m pytest -q -p no:cacheprovider test_x.py`` once with the plugin
and once with ``-p no:cfn``, in alternating order, so a change in the machine's load hits both
alike; wall time is measured around each subprocess (``time.perf_counter``). Prints the median
and mean of each, their difference in ms and %, and the plugin's own import time
(``python -X importtime -c "import pytest_cfn.plugin"``, the cumulative figure of the module
minus that of ``pytest``, median of the runs). Every run must pass. That no server is started
for such a suite is checked by tests/test_plugin_startup.py, not here.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = "def test_x():\n    assert 1\n"


def _run(cwd: Path, *extra: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "test_x.py"],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def _import_ms() -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import pytest_cfn.plugin"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    cumulative: dict[str, int] = {}
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            cumulative[parts[2]] = int(parts[1])
    return (cumulative["pytest_cfn.plugin"] - cumulative.get("pytest", 0)) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfn-overhead-") as tmp:
        cwd = Path(tmp)
        (cwd / "test_x.py").write_text(TEST)
        _run(cwd)
        _run(cwd, "-p", "no:cfn")
        with_plugin: list[float] = []
        without: list[float] = []
        for index in range(args.runs):
            order = [(with_plugin, ()), (without, ("-p", "no:cfn"))]
            for bucket, extra in order if index % 2 == 0 else order[::-1]:
                bucket.append(_run(cwd, *extra))
    imports = [_import_ms() for _ in range(max(5, args.runs // 2))]
    on, off = statistics.median(with_plugin), statistics.median(without)
    print(f"trivial suite, {args.runs} interleaved rounds (python -m pytest -q test_x.py):")
    print(f"  with pytest-cfn:  median {on * 1000:7.1f} ms, mean "
          f"{statistics.mean(with_plugin) * 1000:7.1f} ms")
    print(f"  with -p no:cfn:   median {off * 1000:7.1f} ms, mean "
          f"{statistics.mean(without) * 1000:7.1f} ms")
    print(f"  added by the plugin: {(on - off) * 1000:+.1f} ms ({(on - off) / off * 100:+.1f} %) "
          "at the median")
    print(f"import pytest_cfn.plugin beyond pytest: median {statistics.median(imports):.1f} ms "
          f"(-X importtime, {len(imports)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
