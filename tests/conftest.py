from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import NodeProcess


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start `shardlite node` processes; every one is killed when the test ends."""
    started: list[NodeProcess] = []

    def start(
        *args: str,
        name: str = "n1",
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        node = NodeProcess(
            env=env,
            data_dir=data_dir or tmp_path / name,
            args=list(args),
            log_path=tmp_path / f"{name}.log",
            node_id=name,
        )
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.kill()


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for a whole module of API tests (each test uses its own namespace)."""
    base = tmp_path_factory.mktemp("shared")
    node = NodeProcess(data_dir=base / "n1", args=[], log_path=base / "n1.log")
    try:
        yield node.start()
    finally:
        node.kill()
