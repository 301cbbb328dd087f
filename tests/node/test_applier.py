"""The applier: deterministic about bad frames, fail-stop on machine faults,
and a marker that never stops a restart (issue 11 items 1 and 6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from node.applier import read_applied_marker
from tests.harness import NodeProcess


@pytest.mark.parametrize("garbage", [b"", b"12", b"\x00\x00\x00", b"not an index\n", b"\xff\xfe"])
def test_a_torn_or_garbage_marker_means_replay_from_zero(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "applied_index").write_bytes(garbage)
    expected = 12 if garbage == b"12" else 0
    assert read_applied_marker(tmp_path) == expected


def test_a_node_with_a_torn_marker_starts_and_keeps_its_data(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = start_node()
    with node.client(namespace="m") as c:
        for i in range(5):
            c.put(f"k{i}", b"v%d" % i)
    assert node.terminate() == 0
    # A torn write (an older version wrote it without fsync): zeros, half a number.
    (tmp_path / "n1" / "applied_index").write_bytes(b"\x00\x00\x00\x00")
    node = start_node()
    with node.client(namespace="m") as c:
        values = [entry.value if (entry := c.get(f"k{i}")) else None for i in range(5)]
        assert values == [b"v%d" % i for i in range(5)]
        assert c.put("after", b"x").version > 5
