"""The image: built from no registry, small, non-root, no compilers or tests, a volume,
a health check that turns unhealthy when the node cannot answer, SIGTERM handled."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.docker.dockerlib import (
    COMPOSE_FILE,
    IMAGE,
    PROJECT,
    TEST_LABEL,
    ComposeCluster,
    container_logs,
    docker,
    health,
    inspect,
    wait_health,
)


def test_compose_file_validates() -> None:
    config = ComposeCluster(ports={"n1": 7001, "n2": 7002, "n3": 7003})
    config.compose("config", "--quiet", timeout=60)
    services = config.compose("config", "--services", timeout=60).split()
    assert sorted(services) == ["n1", "n2", "n3"], f"{COMPOSE_FILE}: {services}"


def test_image_metadata() -> None:
    image = inspect(IMAGE)
    config = image["Config"]
    size_mb = image["Size"] / 1e6
    print(f"{IMAGE}: {size_mb:.0f} MB")
    assert size_mb < 250, f"{IMAGE} is {size_mb:.0f} MB"
    assert config["User"] not in ("", "root", "0"), config["User"]
    assert config["Entrypoint"] == ["shardlite"], "exec form: the node is PID 1 and gets SIGTERM"
    assert config.get("StopSignal", "SIGTERM") == "SIGTERM"
    assert "/data" in config["Volumes"]
    assert "shardlite health" in " ".join(config["Healthcheck"]["Test"])


def test_image_has_no_compiler_tests_or_build_cache() -> None:
    script = r"""
        id -u
        for tool in cc gcc g++ c++ clang make ld as; do command -v "$tool" || true; done
        find /opt/shardlite /root /tmp /data /var/cache -xdev \
            \( -name tests -o -name 'test_*.py' -o -name '*.whl' -o -name '.cache' \
               -o -name pip -o -name pytest -o -name hypothesis \) -print 2>/dev/null
        python3 -c 'import importlib.util as u
from shardlite import AsyncClient, Client
print([m for m in ("pip", "pytest", "tests", "node", "proto", "replication", "stores")
       if u.find_spec(m)])'
    """
    out = docker("run", "--rm", "--label", TEST_LABEL, "--entrypoint", "/bin/sh", IMAGE, "-c",
                 script, timeout=60).split("\n")  # fmt: skip
    uid, rest = out[0], [line for line in out[1:] if line.strip()]
    assert uid != "0", "runs as root"
    # ... and of ours only the package shardlite (no top-level node, proto, ...).
    assert rest == ["[]"], f"compilers, tests, build leftovers or stray packages: {rest}"


@pytest.fixture
def single_node() -> Iterator[str]:
    """One container (a single node, no peers) with the image's own health check,
    probed every second; removed with its anonymous volume afterwards."""
    name = f"{PROJECT}-single"
    docker("run", "--detach", "--name", name, "--label", TEST_LABEL,
           "--health-interval", "1s", "--health-timeout", "4s", "--health-retries", "2",
           IMAGE, timeout=60)  # fmt: skip
    try:
        yield name
    finally:
        docker("kill", "--signal", "CONT", name, check=False, timeout=30)
        docker("rm", "--force", "--volumes", name, check=False, timeout=60)


def test_healthcheck_turns_unhealthy_when_the_node_cannot_answer(single_node: str) -> None:
    wait_health(single_node, "healthy", 60)
    # Freeze the node process (PID 1, signalled from outside): the port still accepts
    # TCP connections, but nothing answers the gRPC health check.
    docker("kill", "--signal", "STOP", single_node, timeout=30)
    wait_health(single_node, "unhealthy", 60)
    log = inspect(single_node)["State"]["Health"]["Log"]
    assert log[-1]["ExitCode"] != 0, log[-1]
    docker("kill", "--signal", "CONT", single_node, timeout=30)
    wait_health(single_node, "healthy", 60)


def test_sigterm_stops_the_node_gracefully(single_node: str) -> None:
    wait_health(single_node, "healthy", 60)
    started = time.monotonic()
    docker("stop", "--time", "30", single_node, timeout=60)
    took = time.monotonic() - started
    state = inspect(single_node)["State"]
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} (137 = killed after grace)"
    assert took < 10, f"docker stop took {took:.1f}s"
    logs = container_logs(single_node)
    assert "shutting down" in logs, logs[-2000:]
    assert "stopped at applied index" in logs, logs[-2000:]
    assert health(single_node) == "exited"
