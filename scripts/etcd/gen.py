"""Generate scripts/etcd/etcd_kv_pb2*.py (and .pyi stubs) from etcd_kv.proto.

Usage: python -m scripts.etcd.gen [OUT_DIR]   (default: the repo root, in place)
The repo root is the include path, so the modules import `scripts.etcd.etcd_kv_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.gen_proto import ROOT, generate

SOURCE = "scripts/etcd/etcd_kv.proto"

if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT, [SOURCE], include=ROOT)
