"""The benchmark's arithmetic: latency percentiles, CPU from /proc, and the
A/B pairing of runs into ratios. Pure functions (except the /proc readers), so
tests check them on known numbers.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence: the smallest value
    with at least p% of the values at or below it (0 for no values)."""
    if not ordered:
        return 0.0
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} not in (0, 100]")
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point.
    rank = math.ceil(round(p / 100 * len(ordered), 9))
    return ordered[max(rank, 1) - 1]


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float]:
    """p50/p99/p999, mean and max of latencies in seconds, reported in ms."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "mean": 0.0, "max": 0.0}
    ms = 1000.0
    return {
        "p50": round(percentile(ordered, 50) * ms, 3),
        "p99": round(percentile(ordered, 99) * ms, 3),
        "p999": round(percentile(ordered, 99.9) * ms, 3),
        "mean": round(statistics.fmean(ordered) * ms, 3),
        "max": round(ordered[-1] * ms, 3),
    }


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used (all its threads), from
    /proc/<pid>/stat; None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat_cpu_ticks(raw) / CLOCK_TICKS


def stat_cpu_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) of a /proc/<pid>/stat line."""
    # The command name (field 2) is in parentheses and may hold spaces and ')'.
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc_pid_stat(5)


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


class CpuMeter:
    """CPU used by named processes between `start()` and `stop()`, in cores
    (CPU seconds per second of wall time)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._before: dict[str, float | None] = {}
        self._machine_before = (0.0, 0.0)

    def start(self) -> None:
        self._before = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine_before = machine_busy_seconds()

    def stop(self, wall_seconds: float) -> dict[str, Any]:
        after = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        busy, total = machine_busy_seconds()
        cores: dict[str, float | None] = {}
        for name, value in after.items():
            before = self._before.get(name)
            if value is None or before is None or wall_seconds <= 0:
                cores[name] = None
            else:
                cores[name] = round((value - before) / wall_seconds, 3)
        spent_total = total - self._machine_before[1]
        return {
            "processes": cores,
            # How busy the whole machine was (everything on it, not only us).
            "machine_busy_cores": round((busy - self._machine_before[0]) / wall_seconds, 3)
            if wall_seconds > 0
            else None,
            "machine_cores": round(spent_total / wall_seconds, 2) if wall_seconds > 0 else None,
        }


# -- A/B pairing ----------------------------------------------------------------


def pair_runs(runs: Sequence[dict[str, Any]], base: str, other: str) -> list[dict[str, Any]]:
    """Pair the runs of `base` and `other` for the same case and repetition
    (they ran back to back, so machine noise is shared) and give each pair's
    ratios base/other: throughput, and p50/p99 latency."""
    index = {(r["case"], r["rep"], r["target"]): r for r in runs}
    pairs = []
    for run in runs:
        if run["target"] != base:
            continue
        peer = index.get((run["case"], run["rep"], other))
        if peer is None:
            continue
        pairs.append(
            {
                "case": run["case"],
                "rep": run["rep"],
                "base": base,
                "other": other,
                "throughput_ratio": _ratio(run["ops_per_sec"], peer["ops_per_sec"]),
                "p50_ratio": _ratio(run["latency_ms"]["p50"], peer["latency_ms"]["p50"]),
                "p99_ratio": _ratio(run["latency_ms"]["p99"], peer["latency_ms"]["p99"]),
            }
        )
    return pairs


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def summarise_pairs(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, base, other): the median, min and max of each ratio over the
    repetitions."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for pair in pairs:
        groups.setdefault((pair["case"], pair["base"], pair["other"]), []).append(pair)
    summary = []
    for (case, base, other), group in groups.items():
        entry: dict[str, Any] = {"case": case, "base": base, "other": other, "pairs": len(group)}
        for key in ("throughput_ratio", "p50_ratio", "p99_ratio"):
            values = sorted(p[key] for p in group if p[key] is not None)
            entry[key] = (
                {
                    "median": round(statistics.median(values), 3),
                    "min": values[0],
                    "max": values[-1],
                }
                if values
                else None
            )
        summary.append(entry)
    return summary


def summarise_target(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (case, target): median ops/s, p50, p99 over the repetitions, and the range."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["case"], run["target"]), []).append(run)
    out = {}
    for key, group in groups.items():
        rates = sorted(r["ops_per_sec"] for r in group)
        out[key] = {
            "runs": len(group),
            "ops_per_sec": statistics.median(rates),
            "ops_per_sec_min": rates[0],
            "ops_per_sec_max": rates[-1],
            "p50": statistics.median(r["latency_ms"]["p50"] for r in group),
            "p99": statistics.median(r["latency_ms"]["p99"] for r in group),
            "errors": sum(r["errors"] for r in group),
        }
    return out
