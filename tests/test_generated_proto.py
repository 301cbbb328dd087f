"""The committed protobuf/gRPC modules are exactly what proto/*.proto generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    env = dict(os.environ)
    # protoc finds the mypy plugins next to the interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        [sys.executable, "-m", "scripts.gen_proto", str(tmp_path)],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    generated = sorted(p.name for p in (tmp_path / "proto").iterdir())
    assert generated, "protoc generated nothing"
    committed = sorted(
        p.name
        for p in (ROOT / "proto").iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_grpc.py", "_grpc.pyi"))
    )
    assert generated == committed
    stale = [
        name for name in generated
        if (tmp_path / "proto" / name).read_bytes() != (ROOT / "proto" / name).read_bytes()
    ]  # fmt: skip
    assert stale == [], f"stale generated modules {stale}: run `make proto` and commit"
