"""The seeded simulator in CI: a fixed block of seeds per cluster size, plus every
seed that once found a bug. A failure message ends with a one-line replay command."""

from __future__ import annotations

import pytest

from tests.raft.sim import Sim, SimOptions, replay_command, run_seed

CI_SEEDS = 500  # per cluster size
CHUNK = 50

# (seed, nodes) pairs that once failed; the comment names what they found.
# Seeds replay the simulator as it was when they failed; they remain as extra
# coverage, and each bug also has a direct unit test.
REGRESSION_SEEDS = [
    (4, 3),  # liveness check: a proposal to a deposed leader counted as never committing
    (10, 3),  # a joining node rebuilt its configuration from an empty base -> two leaders
    (94, 5),  # conf_state_at(applied) failed after a snapshot was restored, before advance
    (568, 5),  # same
    (854, 5),  # same
]


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("start", range(0, CI_SEEDS, CHUNK))
def test_sim_seeds(nodes: int, start: int) -> None:
    for seed in range(start, start + CHUNK):
        run_seed(seed, nodes)


@pytest.mark.parametrize(("seed", "nodes"), REGRESSION_SEEDS)
def test_sim_regression_seed(seed: int, nodes: int) -> None:
    run_seed(seed, nodes)


def test_sim_is_deterministic() -> None:
    a = Sim(7, SimOptions(nodes=3)).run()
    b = Sim(7, SimOptions(nodes=3)).run()
    assert a == b
    assert a.committed > 10
    assert a.leaders >= 1


def test_replay_command_names_the_seed() -> None:
    assert replay_command(42, 5) == "python -m tests.raft.sim --seed 42 --nodes 5 -v"
