"""The one parser of our connection names reads back what both front ends' engines write,
and refuses every name that is not ours (the counts of the plugin, the harness and the server
sampler all use it)."""

from __future__ import annotations

import pytest

from pytest_cfn._async import connection_share as async_share
from pytest_cfn._async import engine as async_engine
from pytest_cfn._core.connection_names import ConnectionName, parse_connection_name
from pytest_cfn._sync import connection_share as sync_share
from pytest_cfn._sync import engine as sync_engine


@pytest.mark.parametrize("engine", [async_engine, sync_engine], ids=["async", "sync"])
@pytest.mark.parametrize(
    ("role", "swarm", "agent", "namespace"),
    [("event-pub", "s1", "a1", ""), ("message-sub", "swarm.b", "agent_7", "lt123x4f"),
     ("event-sub", "a-b", "proc-9", "ns.x")],
)
def test_a_name_the_engine_writes_parses_back_to_its_fields(
    engine: object, role: str, swarm: str, agent: str, namespace: str
) -> None:
    name = engine.connection_name(role, swarm, agent, namespace)  # type: ignore[attr-defined]
    assert parse_connection_name(name) == ConnectionName(role, swarm, agent, namespace)
    assert parse_connection_name(name).subsystem == role.rsplit("-", 1)[0]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name",
    ["", "someone-else", "cfn-sampler", "cfn:", "cfn:pub:s1", "cfn:pub:s1:a1:extra",
     "cfn:pub::a1", "cfn:pub:s1:a1@", "cfn:pub:s1:a1@ns@x", "xcfn:pub:s1:a1"],
)
def test_names_that_are_not_ours_parse_to_none(name: str) -> None:
    assert parse_connection_name(name) is None


@pytest.mark.parametrize("share", [async_share, sync_share], ids=["async", "sync"])
def test_a_shared_connection_name_parses_back_to_its_owner(share: object) -> None:
    name = share.connection_name(  # type: ignore[attr-defined]
        "shared-sub", share.ALL_SWARMS, "proc-7", "lt1x2")  # type: ignore[attr-defined]
    assert parse_connection_name(name) == ConnectionName("shared-sub", "all", "proc-7", "lt1x2")
