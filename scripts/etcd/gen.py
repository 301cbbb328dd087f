"""Generate scripts/etcd/etcd_kv_pb2*.py (and .pyi stubs) from etcd_kv.proto.

Usage: python -m scripts.etcd.gen [OUT_DIR]   (default: the repo root, in place)
The repo root is the include path, so the modules import `scripts.etcd.etcd_kv_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCE = "scripts/etcd/etcd_kv.proto"


def generate(out_dir: Path) -> None:
    (out_dir / "scripts" / "etcd").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        SOURCE,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
