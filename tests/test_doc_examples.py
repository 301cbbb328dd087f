"""Every Python example in README.md, docs/client.md and docs/stores.md runs as written against
a real 3-node cluster (its client addresses in SHARDLITE_ENDPOINTS)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import LocalCluster, running_cluster

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "client.md", ROOT / "docs" / "stores.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for n, block in enumerate(BLOCK.findall(doc.read_text()), 1):
            found.append((f"{doc.relative_to(ROOT)}#{n}", block))
    return found


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("docs"), 3) as cluster:
        yield cluster


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 5, [name for name, _ in EXAMPLES]


@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_the_example_runs_as_written(cluster: LocalCluster, name: str, code: str) -> None:
    env = {**os.environ, "SHARDLITE_ENDPOINTS": ",".join(cluster.addresses.values())}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
