"""Golden transcripts: each file in testdata/ replays its commands and must print
exactly the recorded output. After an intended change, run
``python -m tests.raft.transcripts --rewrite`` and review the diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.transcripts import TESTDATA, render, run_file

FILES = sorted(TESTDATA.glob("*.txt"))


def test_transcripts_exist() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_transcript(path: Path) -> None:
    blocks, outputs = run_file(path)
    for block, out in zip(blocks, outputs, strict=True):
        assert out == block.expected, (
            f"{path.name}: `{block.command}` printed:\n" + "\n".join(out) + "\n"
            "(python -m tests.raft.transcripts --rewrite to accept, then review the diff)"
        )
    assert render(blocks, outputs) == path.read_text()
