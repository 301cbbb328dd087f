"""The load generator's pure parts: op mixes, key choice, splitting clients."""

from __future__ import annotations

import argparse
import random
from collections import Counter

import pytest

from scripts.bench import default_cases, parse_case
from scripts.bench_load import KeyChooser, parse_mix, split_clients


def test_op_mix_parses_weights_and_refuses_unknown_ops() -> None:
    assert parse_mix("put") == (("put", 1.0),)
    assert parse_mix("put=70, get=20,sget=10") == (("put", 70.0), ("get", 20.0), ("sget", 10.0))
    with pytest.raises(ValueError, match="unknown op 'scan'"):
        parse_mix("put,scan")
    with pytest.raises(ValueError, match="weights must be > 0"):
        parse_mix("put=0")


def test_cases_parse_from_mix_at_clients() -> None:
    case = parse_case("put=90,get=10@256", ["shardlite", "etcd"])
    assert (case.name, case.mix, case.clients, case.targets) == (
        "put90+get10-256",
        "put=90,get=10",
        256,
        ("shardlite", "etcd"),
    )
    for bad in ("put", "put@0", "put@x", "nope@4"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            parse_case(bad, ["echo"])


def test_default_cases_are_the_issues_and_the_sweep() -> None:
    quick = [c.name for c in default_cases(quick=True)]
    assert quick == ["put-1", "put-64", "get-64", "sget-64"]
    full = {c.name: c for c in default_cases(quick=False)}
    assert {n: full[n].clients for n in full if full[n].mix == "put"} == {
        "put-1": 1,
        "put-64": 64,
        "put-8": 8,
        "put-256": 256,
    }
    assert "echo" not in full["sget-64"].targets  # the echo server reads alike


def test_uniform_keys_cover_the_range() -> None:
    chooser = KeyChooser(10, "uniform", 0.99)
    rng = random.Random(1)
    seen = Counter(chooser.pick(rng) for _ in range(2000))
    assert set(seen) == set(range(10))


def test_zipf_keys_favour_the_first_ranks() -> None:
    chooser = KeyChooser(1000, "zipf", 1.0)
    rng = random.Random(1)
    seen = Counter(chooser.pick(rng) for _ in range(20_000))
    assert all(0 <= k < 1000 for k in seen)
    # Weight 1/r: key 0 is drawn about twice as often as key 1, ten times key 9.
    assert seen[0] > seen[1] > seen[9]
    assert seen.most_common(1)[0][0] == 0


def test_distinct_keys_for_a_batch_even_when_the_distribution_repeats() -> None:
    chooser = KeyChooser(20, "zipf", 3.0)  # almost always key 0
    rng = random.Random(1)
    for _ in range(50):
        keys = chooser.distinct(rng, 10)
        assert len(keys) == len(set(keys)) == 10
    assert sorted(KeyChooser(3, "uniform", 0).distinct(rng, 10)) == [0, 1, 2]


def test_bad_key_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keys must be"):
        KeyChooser(0, "uniform", 0.99)
    with pytest.raises(ValueError, match="unknown distribution"):
        KeyChooser(10, "pareto", 0.99)


def test_clients_split_evenly_over_processes_never_an_empty_one() -> None:
    assert split_clients(64, 2) == [(0, 32), (32, 32)]
    assert split_clients(5, 2) == [(0, 3), (3, 2)]
    assert split_clients(1, 4) == [(0, 1)]
    assert split_clients(3, 0) == [(0, 3)]
    assert sum(n for _, n in split_clients(257, 3)) == 257
