"""The seeded simulator in CI: a fixed block of seeds per cluster size, plus every
seed that once found a bug. A failure message ends with a one-line replay command."""

from __future__ import annotations

import pytest

from tests.raft.sim import Sim, SimOptions, replay_command, run_seed

CI_SEEDS = 1000  # per cluster size
CHUNK = 100

# (seed, nodes, randomize) triples that once failed; the comment names what they
# found. A seed replays the simulator as it is now, which may differ from when it
# failed, so each core bug also has a direct unit test (named in the comment).
# randomize=False: found before fault rates were drawn per seed (--fixed).
REGRESSION_SEEDS = [
    # Simulator bug: a proposal to a deposed leader counted as never committing.
    (4, 3, False),
    # Core: a joining node rebuilt its configuration from an empty base and
    # elected itself alone (test_joining_node_rebuilds_configuration_from_log).
    (10, 3, False),
    # Core: conf_state_at(applied) failed after a snapshot was restored, before
    # advance (test_conf_state_at_applied_survives_snapshot_restore).
    (94, 5, False),
    (568, 5, False),
    (854, 5, False),
    # Simulator: a storm of reordered one-entry appends outlived the liveness
    # window; a healed network now delivers in FIFO order, as the transport does.
    (428, 3, True),
    (465, 3, True),
    (339, 5, True),
    (465, 5, True),
    # Core: rejecting a vote at a higher term restarted the election timer, so
    # without pre-vote two stale nodes kept the only electable one from winning
    # (test_rejecting_a_vote_does_not_reset_election_timer).
    (213, 5, True),
    # Driver: read contexts counted from 1 in every process, so a follower's read
    # after a restart took the answer to its request from before the crash: a
    # read index below the commit index at request time, a stale read
    # (test_read_contexts_never_repeat_across_members_or_restarts).
    (502, 3, True),
    # Core: a leader demoted itself (ADD_LEARNER of its own id) and crashed; the
    # members with the newest log saw themselves as learners and never
    # campaigned, and the stale voter that raised the term never asked the
    # others, whose vote requests at a lower term it ignored: leaderless for good
    # (test_self_demoted_leader_that_crashed_is_elected_to_finish_the_change,
    # test_demoted_voter_campaigns_until_demotion_known_committed,
    # test_vote_request_with_stale_term_rejected_with_current_term).
    (7012038, 3, True),
    (7019575, 3, True),
    # Core: a member cut off while a new node was added, promoted and elected
    # refused that leader (not in any configuration it knew) for good
    # (test_lagging_member_follows_a_new_leader_it_does_not_know).
    (7016229, 3, True),
    (8014403, 3, True),
]


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("start", range(0, CI_SEEDS, CHUNK))
def test_sim_seeds(nodes: int, start: int) -> None:
    for seed in range(start, start + CHUNK):
        run_seed(seed, nodes)


@pytest.mark.parametrize(("seed", "nodes", "randomize"), REGRESSION_SEEDS)
def test_sim_regression_seed(seed: int, nodes: int, randomize: bool) -> None:
    run_seed(seed, nodes, randomize=randomize)


def test_sim_is_deterministic() -> None:
    a = Sim(7, SimOptions(nodes=3)).run()
    b = Sim(7, SimOptions(nodes=3)).run()
    assert a == b
    assert a.committed > 10
    assert a.leaders >= 1


def test_replay_command_names_the_seed() -> None:
    assert replay_command(42, 5) == "python -m tests.raft.sim --seed 42 --nodes 5 -v"
    assert replay_command(4, 3, False) == "python -m tests.raft.sim --seed 4 --nodes 3 --fixed -v"
