from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import LocalCluster

# Fast elections for tests: 50 ms ticks, 10-20 ticks timeout.
FAST = ("--raft-tick-ms", "50", "--election-ticks", "10", "--leader-wait", "10")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start real 3-node clusters; every node is stopped when the test ends."""
    started: list[LocalCluster] = []

    def make(size: int = 3, args: tuple[str, ...] = ()) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"c{len(started)}", size, args=FAST + args)
        started.append(cluster)
        return cluster.start()

    yield make
    for cluster in started:
        cluster.stop()
