"""A client's identity is unique per incarnation (issue 11, item 3): a
process restarted with the same client_id numbers its writes from 1 again;
they must be applied, not answered with the previous life's results."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shardlite.node.client import Client
from tests.harness import NodeProcess


def test_a_restarted_client_with_the_same_id_writes_anew(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node()
    with Client(node.endpoint, namespace="ns", client_id="billing") as first_life:
        first = first_life.put("k", b"v1")
    # The process restarts: a new Client, the same caller-given id, seq from 1.
    with Client(node.endpoint, namespace="ns", client_id="billing") as second_life:
        second = second_life.put("k", b"v2")
        entry = second_life.get("k")
    assert second.index > first.index  # a new write, not the old result
    assert entry is not None
    assert entry.value == b"v2"
    assert entry.version == second.version


def test_client_ids_keep_the_callers_name_and_differ() -> None:
    a = Client("127.0.0.1:1", client_id="billing")
    b = Client("127.0.0.1:1", client_id="billing")
    c = Client("127.0.0.1:1")
    try:
        assert a.client_id.startswith("billing.")
        assert b.client_id.startswith("billing.")
        assert len({a.client_id, b.client_id, c.client_id}) == 3
        assert all(len(x.client_id) <= 128 for x in (a, b, c))
    finally:
        for x in (a, b, c):
            x.close()


@pytest.mark.parametrize("name", ["", "x" * 112])
def test_a_client_id_the_node_would_refuse_is_refused_here(name: str) -> None:
    with pytest.raises(ValueError, match="client_id"):
        Client("127.0.0.1:1", client_id=name)
