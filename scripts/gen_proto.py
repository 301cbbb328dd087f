"""Generate the protobuf/gRPC modules (and their .pyi stubs) from proto/*.proto.

Usage: python -m scripts.gen_proto [OUT_DIR]   (default: the repo root, in place)
The repo root is the include path, so generated modules import `proto.frame_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def proto_sources() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").glob("*.proto"))


def generate(out_dir: Path, sources: list[str] | None = None) -> None:
    """Compile `sources` (paths relative to the repo root; default: proto/*.proto)
    into `out_dir`, each module beside its .proto."""
    sources = proto_sources() if sources is None else sources
    for source in sources:
        (out_dir / source).parent.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
