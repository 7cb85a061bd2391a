"""Reading README.md as a new user does: its fenced blocks, its sections, and its commands run
in a clean environment (for the README tests: test_readme_promises.py, test_readme_names.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
RUN_TIMEOUT = 60.0


def fenced_blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block of ``language`` in the README."""
    pattern = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
    return [
        (README[: m.start()].count("\n") + 1, m.group(2))
        for m in pattern.finditer(README)
        if m.group(1) == language
    ]


def section(title: str) -> str:
    """The README's text under the heading ``title``, up to the next heading as high or higher."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert match is not None, f"README has no heading {title!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(README, match.end())
    return README[match.end(): end.start() if end else len(README)]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new user's shell: no pytest, xdist or CFN_* settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CFN_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(args: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)

