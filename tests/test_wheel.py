"""The installed project, as a user gets it from its wheel: one top-level package."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from scripts.cluster import LocalNode

ROOT = Path(__file__).resolve().parent.parent
# What the wheel is built from (pyproject.toml's package mapping follows shardlite/'s links).
SOURCES = ["pyproject.toml", "README.md", "shardlite", "proto", "node", "replication", "stores"]

CHECK = """
import shardlite, shardlite.node.server, shardlite.stores, shardlite.v1.kv_pb2, sys
from shardlite import AsyncClient, Client
from importlib import resources
assert resources.files("shardlite.v1").joinpath("kv.proto").is_file()
for name in ("node", "proto", "replication", "stores"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"a top-level {name!r} is importable from {sys.modules[name].__file__}")
endpoint = sys.argv[1]
with Client([endpoint], namespace="wheel") as client:
    client.put("k", b"from the wheel")
    assert client.get("k").value == b"from the wheel"
print(shardlite.__file__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: a build writes build/ and *.egg-info into its source tree.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("shardlite-*.whl")
    return built


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)],
                   check=True, timeout=120)  # fmt: skip
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    return python, Path(purelib)


def test_the_wheel_installs_shardlite_and_nothing_else_of_ours(wheel: Path, tmp_path: Path) -> None:
    python, site_packages = _fresh_venv(tmp_path / "venv")
    before = {p.name for p in site_packages.iterdir()}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    added = {p.name for p in site_packages.iterdir()} - before - {"__pycache__"}
    assert added == {"shardlite", "shardlite-0.1.0.dist-info"}
    installed = site_packages / "shardlite"
    assert not [p for p in installed.rglob("*") if p.is_symlink()], "links left in the wheel"
    for part in ("node", "replication", "stores", "v1"):
        assert (installed / part / "py.typed").is_file(), part
    assert (tmp_path / "venv" / "bin" / "shardlite").is_file()

    # Its dependencies (not ours) from this environment, after the fresh one's own packages:
    # a path line in a .pth adds the directory, not the .pth files in it (no editable
    # install of the checkout comes along).
    ours = sysconfig.get_paths()["purelib"]
    assert ours in site.getsitepackages()
    (site_packages / "dependencies.pth").write_text(ours + "\n")

    help_text = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "shardlite"), "--help"],
        check=True, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert "node" in help_text

    # Run from tmp_path, so that the checkout is not on its path: the node is the wheel's.
    node = LocalNode(
        data_dir=tmp_path / "data", args=[], log_path=tmp_path / "node.log",
        python=str(python), cwd=tmp_path,
    )  # fmt: skip
    node.start()
    try:
        checked = subprocess.run(
            [str(python), "-c", CHECK, node.endpoint],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.strip() == str(installed / "__init__.py")
    finally:
        node.kill()
