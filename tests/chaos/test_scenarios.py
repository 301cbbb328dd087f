"""Every shipped chaos scenario, one period each, against a real 3-node
process cluster: the history must be linearizable and nothing may be lost.
And the harness must catch a node that serves stale reads."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from scripts.chaos import SCENARIO_DIR, Scenario, main, run_scenario, shipped_scenarios

SCENARIOS = shipped_scenarios()


def _seed(name: str) -> int:
    """Fixed per scenario (reproducible CI); CHAOS_SEED=N varies them all."""
    return zlib.crc32(name.encode()) % 10_000 + int(os.environ.get("CHAOS_SEED", "0"))


def test_at_least_eight_scenarios_ship() -> None:
    assert len(SCENARIOS) >= 8
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    for s in SCENARIOS:
        assert Path(s.path).stem == s.name
        assert s.expect == "linearizable"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario, tmp_path: Path) -> None:
    result = run_scenario(scenario, _seed(scenario.name), base=tmp_path)
    report = result.report()
    assert result.verdict is not None, report
    assert result.verdict.linearizable is True, report
    assert result.failures == [], report
    assert result.ok, report
    assert result.counts["writes_ok"] > 50, report
    assert result.counts["reads_ok"] > 50, report
    assert result.faults, report


@pytest.mark.timeout(120)
def test_harness_catches_stale_reads(tmp_path: Path) -> None:
    scenario = Scenario.load(str(SCENARIO_DIR / "selftest" / "unsafe-stale-reads.json"))
    result = run_scenario(scenario, _seed(scenario.name), base=tmp_path)
    report = result.report()
    assert result.verdict is not None, report
    assert result.verdict.linearizable is False, report
    assert result.verdict.witness, report
    assert result.ok, report  # for a self-test, ok = the violation was caught
    assert "--scenario" in result.replay
    assert "smallest offending sub-history" in report


def test_cli_lists_and_rejects_bad_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--list"]) == 0
    assert "kill-leader" in capsys.readouterr().out
    assert main(["--scenario", "no-such-scenario"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "period": 5, "schedule": [{"at": 1, "do": "explode"}]}')
    assert main(["--scenario", str(bad)]) == 2
    bad.write_text('{"name": "bad", "period": 5, "schedule": [{"at": 7, "do": "kill"}]}')
    with pytest.raises(ValueError, match="within"):
        Scenario.load(str(bad))
