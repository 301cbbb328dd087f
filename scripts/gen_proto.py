"""Generate the protobuf/gRPC modules (and their .pyi stubs) from proto/shardlite/v1/*.proto.

Usage: python -m scripts.gen_proto [OUT_DIR]   (default: proto/, in place)
proto/ is the include path, as it is for every other language, so a .proto's path
`shardlite/v1/kv.proto` makes the module `shardlite.v1.kv_pb2` (shardlite/v1 in the
installed package is proto/shardlite/v1).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "proto"


def proto_sources() -> list[str]:
    """The .proto files, as paths relative to the include path (shardlite/v1/kv.proto)."""
    return sorted(str(p.relative_to(INCLUDE)) for p in (INCLUDE / "shardlite").rglob("*.proto"))


def generate(out_dir: Path, sources: list[str] | None = None, include: Path = INCLUDE) -> None:
    """Compile `sources` (relative to `include`; default: all of proto/) into `out_dir`,
    each module at its .proto's path: Python, gRPC and the mypy stubs."""
    sources = proto_sources() if sources is None else sources
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(include / source) for source in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else INCLUDE)
