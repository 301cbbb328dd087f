"""`shardlite export` / `import`: one namespace as JSON lines, through the
normal (replicated) write path, in bounded batches."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from shardlite.node.client import Put
from shardlite.node.transfer import IMPORT_BATCH_KEYS
from tests.harness import NodeProcess

AWKWARD = {
    "tab": b"a\tb",
    "newline": b"line1\nline2\r\n",
    "nul": b"\x00\x00zero\x00",
    "binary": bytes(range(256)),
    "empty": b"",
    "json-looking": b'{"key": "x"}\n',
    "unicode key \u00e9\u4e2d \U0001f600": "caf\u00e9".encode(),
    'quote"and\\backslash': b"\\",
}


def shardlite(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    command, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "shardlite.node.cli", command, "--endpoint", node.endpoint, *rest],
        capture_output=True, timeout=120,
    )  # fmt: skip


def test_round_trip_keeps_every_byte_and_reports_versions(
    shared_node: NodeProcess, tmp_path: Path
) -> None:
    with shared_node.client() as c:
        versions = {k: c.put(k, v, org="ex", namespace="src").version for k, v in AWKWARD.items()}
    out = tmp_path / "src.jsonl"
    exported = shardlite(shared_node, "export", "--org", "ex", "-n", "src", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == f"exported {len(AWKWARD)} keys to {out}\n".encode()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["key"] for x in lines] == sorted(AWKWARD)
    for x in lines:
        assert base64.b64decode(x["value"]) == AWKWARD[x["key"]]
        assert x["version"] == versions[x["key"]]
    # To stdout, the same lines.
    to_stdout = shardlite(shared_node, "export", "--org", "ex", "-n", "src")
    assert to_stdout.stdout.decode() == out.read_text()

    imported = shardlite(shared_node, "import", "--org", "ex2", "-n", "dst", str(out))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"imported {len(AWKWARD)} keys into ex2/dst in 1 batches\n".encode()
    with shared_node.client() as c:
        got = {e.key: e.value for e in c.list(org="ex2", namespace="dst")}
    assert got == AWKWARD


def test_import_goes_in_bounded_batches(shared_node: NodeProcess, tmp_path: Path) -> None:
    count = IMPORT_BATCH_KEYS * 2 + 7
    source = tmp_path / "many.jsonl"
    source.write_text(
        "".join(
            json.dumps({"key": f"k{i:05}", "value": base64.b64encode(b"v%d" % i).decode()}) + "\n"
            for i in range(count)
        )
    )
    result = shardlite(shared_node, "import", "-n", "many", str(source), "--output", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["keys"] == count
    assert summary["batches"] == 3
    with shared_node.client() as c:
        entries = list(c.list(namespace="many"))
        assert len(entries) == count
        # Each batch is one replicated frame: three distinct versions.
        assert len({e.version for e in entries}) == 3
        assert c.get("k01000", namespace="many") is not None


def test_a_bad_file_is_refused_before_anything_is_written(
    shared_node: NodeProcess, tmp_path: Path
) -> None:
    good = json.dumps({"key": "a", "value": base64.b64encode(b"1").decode()})
    cases = {
        "not json": (f"{good}\n{{oops\n", "line 2: not JSON"),
        "no value": (
            f'{good}\n{good}\n{{"key": "b"}}\n',
            'line 3: "value" must be a base64 string',
        ),
        "bad base64": ('{"key": "b", "value": "@@@"}\n', 'line 1: "value" is not valid base64'),
        "key not a string": ('{"key": 5, "value": ""}\n', "line 1: expected"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(content)
        result = shardlite(shared_node, "import", "-n", "refused", str(path))
        assert result.returncode == 2, name
        assert message in result.stderr.decode(), (name, result.stderr)
    with shared_node.client() as c:
        assert list(c.list(namespace="refused")) == []


def test_a_batch_the_node_refuses_stops_the_import_and_says_where(
    shared_node: NodeProcess, tmp_path: Path
) -> None:
    with shared_node.client() as c:
        c.batch([Put("seed", b"x")], namespace="partial")
    path = tmp_path / "too-big.jsonl"
    lines = [json.dumps({"key": "ok", "value": base64.b64encode(b"1").decode()})]
    # Larger than --max-value-bytes (1 MiB): the node refuses that batch.
    lines.append(json.dumps({"key": "huge", "value": base64.b64encode(b"x" * (2 << 20)).decode()}))
    path.write_text("\n".join(lines) + "\n")
    result = shardlite(shared_node, "import", "-n", "partial", str(path))
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "the batch from line 2 was refused (INVALID_ARGUMENT" in message
    assert "1 keys before it were imported" in message
