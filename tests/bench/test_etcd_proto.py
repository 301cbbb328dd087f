"""scripts/etcd: the committed modules are what etcd_kv.proto generates, and
the messages carry etcd's field numbers (api/etcdserverpb/rpc.proto), pinned
here as wire bytes so that an edit of a number cannot pass unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scripts.etcd import etcd_kv_pb2 as pb
from scripts.etcd import etcd_kv_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
GENERATED = ("etcd_kv_pb2.py", "etcd_kv_pb2.pyi", "etcd_kv_pb2_grpc.py", "etcd_kv_pb2_grpc.pyi")


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    env = dict(os.environ)
    # protoc finds the mypy plugins next to the interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        [sys.executable, "-m", "scripts.etcd.gen", str(tmp_path)],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    out = tmp_path / "scripts" / "etcd"
    assert sorted(p.name for p in out.iterdir()) == sorted(GENERATED)
    stale = [
        name for name in GENERATED
        if (out / name).read_bytes() != (ROOT / "scripts" / "etcd" / name).read_bytes()
    ]  # fmt: skip
    assert stale == [], f"stale {stale}: run `python -m scripts.etcd.gen` and commit"


def test_wire_format_is_etcds() -> None:
    # tag byte = field_number << 3 | wire_type (0 varint, 2 length-delimited)
    assert pb.PutRequest(key=b"k", value=b"v").SerializeToString() == b"\x0a\x01k\x12\x01v"
    assert pb.RangeRequest(key=b"k", serializable=True).SerializeToString() == b"\x0a\x01k\x38\x01"
    assert pb.DeleteRangeRequest(key=b"k").SerializeToString() == b"\x0a\x01k"
    compare = pb.Compare(
        result=pb.Compare.NOT_EQUAL, target=pb.Compare.MOD, key=b"k", version=0
    )  # version is in a oneof: written even when 0
    assert compare.SerializeToString() == b"\x08\x03\x10\x02\x1a\x01k\x20\x00"
    txn = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k"))])
    assert txn.SerializeToString() == b"\x12\x05\x12\x03\x0a\x01k"
    kv = pb.KeyValue(key=b"k", mod_revision=3, version=4, value=b"v")
    assert kv.SerializeToString() == b"\x0a\x01k\x18\x03\x20\x04\x2a\x01v"
    status = pb.StatusResponse.FromString(b"\x0a\x02\x10\x07\x12\x053.4.1\x20\x07")
    assert (status.header.member_id, status.version, status.leader) == (7, "3.4.1", 7)


def test_method_paths_are_etcds() -> None:
    assert pb.DESCRIPTOR.package == "etcdserverpb"
    services = {
        s.name: [m.name for m in s.methods] for s in pb.DESCRIPTOR.services_by_name.values()
    }
    assert services == {"KV": ["Range", "Put", "DeleteRange", "Txn"], "Maintenance": ["Status"]}
    assert hasattr(pb_grpc, "KVStub")
    assert hasattr(pb_grpc, "MaintenanceStub")
