"""The client's errors say what to do: a lost compare-and-set names the key and
its current version, a bad request is InvalidRequestError, an unreachable
node UnavailableError within the deadline, a malformed endpoint fails at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from shardlite.node.async_client import AsyncClient
from shardlite.node.client import (
    Client,
    ConditionFailedError,
    InvalidRequestError,
    UnavailableError,
)
from tests.harness import NodeProcess, free_ports


def test_a_lost_compare_and_set_names_the_key_and_its_current_version(
    shared_node: NodeProcess,
) -> None:
    with shared_node.client(namespace="errors") as client:
        written = client.put("cas", b"1")
        with pytest.raises(ConditionFailedError) as lost:
            client.put("cas", b"2", expected_version=written.version + 1000)
    assert (lost.value.key, lost.value.actual) == ("cas", written.version)
    assert lost.value.expected == written.version + 1000


@pytest.mark.parametrize("key", ["tab\there", "caf\u00e9", "ctl\x01\x01x", "line\nbreak"])
def test_a_lost_compare_and_set_on_a_key_metadata_cannot_carry_is_still_a_condition(
    shared_node: NodeProcess, key: str
) -> None:
    """gRPC metadata text is printable ASCII only: the key travels as UTF-8 in
    a -bin trailer (it used to turn the answer into INTERNAL "Invalid metadata")."""
    with shared_node.client(namespace="errors") as client:
        written = client.put(key, b"1")
        with pytest.raises(ConditionFailedError) as lost:
            client.put(key, b"2", expected_version=0)
    assert (lost.value.key, lost.value.actual) == (key, written.version)


def test_the_async_client_names_them_too(shared_node: NodeProcess) -> None:
    async def run() -> int:
        async with AsyncClient(shared_node.endpoint, namespace="errors") as client:
            written = await client.put("async-cas", b"1")
            await client.put("async-cas", b"2", expected_version=0)
            return written.version

    with pytest.raises(ConditionFailedError) as lost:
        asyncio.run(run())
    assert (lost.value.key, lost.value.expected) == ("async-cas", 0)
    assert lost.value.actual > 0


def test_a_request_that_cannot_succeed_is_invalid(shared_node: NodeProcess) -> None:
    with shared_node.client(namespace="errors") as client:
        with pytest.raises(InvalidRequestError):
            client.put("k", b"v", namespace="../escape")
        with pytest.raises(InvalidRequestError):  # a single node has no members
            client.members()


def test_an_unreachable_node_is_unavailable_within_the_deadline() -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    with Client(f"127.0.0.1:{port}", timeout=1.0) as client, pytest.raises(UnavailableError):
        client.get("k")
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("endpoint", ["27310", "host", "127.0.0.1:99999", "", "a b:1"])
def test_a_malformed_endpoint_fails_at_once(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|no endpoint"):
        Client(endpoint)
