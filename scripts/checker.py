"""Linearizability checker for shardlite's versioned key/value model.

The model
---------
Each key holds nothing or ``(value, version)``. A key's version is the log
index of the frame that last wrote it, so versions of one key strictly
increase over time, and a delete's index is also a point in that order.

Operations (``Op``): a LINEARIZABLE ``read`` of one key, and ``write``: one
atomic frame of puts and deletes on distinct keys with optional conditions
``(key, version)`` (version 0 = "must not exist"). A single put, a CAS put, a
delete and a Batch are all writes. Outcomes:

- ``ok``: it happened; a write reports its index (every put in it got that
  version) and, for each delete, whether the key existed; a read reports what
  it saw.
- ``fail``: a condition did not hold (FAILED_PRECONDITION): definitely nothing
  was written.
- ``info``: indeterminate (timeout, UNAVAILABLE, ...): it may or may not have
  taken effect, at any time after its invocation. Such an operation has no
  completion time (+inf). Because it may be linearized after everything else,
  "took effect at the very end" covers "never took effect", so the search does
  not need a separate no-op branch (the trick Porcupine and Knossos use).

The search
----------
Wing & Gong's algorithm with Lowe's memoization of (linearized set, model
state), in the linked-list form Porcupine uses: events sorted by time, lift a
call (and its return) when the model accepts it, backtrack when a return is
reached whose call is still pending. Budgeted in steps and seconds: running out
gives the verdict ``unknown``, never a silent pass.

P-compositionality and batches
------------------------------
Linearizability is local (Herlihy & Wing), so single-key operations are
checked per key. A batch that touches several keys is split into one sub-op
per key, each carrying the batch's shared version (its index), its condition
on that key and its outcome. That is a *relaxation*: every linearization of
the whole history projects onto a linearization of each key, so a violation
found on one key is real (no false alarms). What the split alone cannot see is
cross-key atomicity. Merging every key a batch touches into one partition
would see it, but with hot keys and frequent batches every key ends up in one
partition and the search becomes exponential. Instead a second, global check
uses what makes versions special here: they are positions in one total order
(the Raft log). The *index horizon* check: once any operation has completed
having observed index ``i`` (a write acknowledged at ``i``; a read that
returned version ``i``), every frame up to ``i`` has taken effect, so a read
invoked afterwards must not return a key state older than the last write to
that key at or below ``i``. This catches stale reads across keys and a batch
seen half-applied.

A failed batch with several conditions only says "some condition failed" (a
disjunction over keys), so it adds no per-key constraint; with one condition,
that condition definitely failed.

Indeterminate writes are sharpened before the search (sound, not a guess):
every put writes a unique value, so a read that returned that value proves the
put happened, at the version the read saw, and before that read completed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

INF = math.inf

OK = "ok"
FAIL = "fail"
INFO = "info"


@dataclass(frozen=True)
class Write:
    """One op of a write frame: put ``value`` (a str), or delete when value is None."""

    key: str
    value: str | None


@dataclass
class Op:
    """One client operation as recorded by the harness."""

    id: int
    process: int
    f: str  # "read" | "write"
    invoke: float
    complete: float = INF  # INF while indeterminate
    status: str = INFO  # ok | fail | info
    key: str = ""  # read: the key
    writes: tuple[Write, ...] = ()
    conditions: tuple[tuple[str, int], ...] = ()
    # write ok: the frame index (= version of every put in it)
    index: int = 0
    # write ok: per write, whether a delete found the key (None for puts)
    deleted: tuple[bool | None, ...] = ()
    # read ok: found, value, version
    found: bool = False
    value: str | None = None
    version: int = 0
    node: str = ""
    error: str = ""
    request_id: str = ""
    # Set by the harness when the committed log proved an indeterminate write
    # happened (True) - its index is then known.
    happened: bool = False

    def describe(self) -> str:
        t0 = f"{self.invoke:.3f}"
        t1 = "?" if self.complete == INF else f"{self.complete:.3f}"
        where = f" @{self.node}" if self.node else ""
        if self.f == "read":
            if self.status != OK:
                res = self.status
            elif self.found:
                res = f"-> {self.value!r} v{self.version}"
            else:
                res = "-> (absent)"
            body = f"read {self.key} {res}"
        else:
            parts = [
                f"put {w.key}={w.value!r}" if w.value is not None else f"del {w.key}"
                for w in self.writes
            ]
            conds = "".join(f" if {k}@{v}" for k, v in self.conditions)
            if self.status == OK:
                dels = [d for d in self.deleted if d is not None]
                res = f"-> ok index {self.index}" + (f" deleted={dels}" if dels else "")
            elif self.status == FAIL:
                res = "-> condition failed"
            else:
                res = "-> indeterminate" + (f" ({self.error})" if self.error else "")
                if self.happened:
                    res += f" [in log at {self.index}]"
            body = f"{'; '.join(parts)}{conds} {res}"
        return f"#{self.id} p{self.process}{where} [{t0}, {t1}] {body}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["complete"] = None if self.complete == INF else self.complete
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Op:
        d = dict(d)
        d["complete"] = INF if d.get("complete") is None else d["complete"]
        d["writes"] = tuple(Write(**w) for w in d.get("writes", ()))
        d["conditions"] = tuple(tuple(c) for c in d.get("conditions", ()))
        d["deleted"] = tuple(d.get("deleted", ()))
        return Op(**d)


# -- per-key sub-operations ---------------------------------------------------

READ = "read"
PUT = "put"
DELETE = "delete"
ASSERT = "assert"  # a batch's condition on a key it does not write
REFUSED = "refused"  # a definitely failed condition on this key


@dataclass(frozen=True)
class KeyOp:
    op_id: int
    invoke: float
    complete: float
    kind: str
    status: str  # ok | info
    must: bool = False  # indeterminate, but known to have happened
    cond: int | None = None
    value: str | None = None  # put: value written; read: value seen
    index: int = 0  # write: version/index (0 = unknown); read: version seen
    found: bool = False  # read
    deleted: bool | None = None  # delete ok: whether the key existed


# state: (present, value, version (-1 = unknown), floor = highest index that wrote the key)
State = tuple[bool, "str | None", int, int]
INITIAL: State = (False, None, 0, 0)


def _condition(state: State, cond: int | None, known: frozenset[int]) -> list[tuple[bool, State]]:
    """Whether `cond` holds in `state`, as the possible (holds, state) pairs.
    Two answers when the key was written by an indeterminate put whose version
    nobody saw: it may be `cond` (then the state learns it), unless `cond` is
    the version of another write of this key."""
    present, value, version, floor = state
    if cond is None:
        return [(True, state)]
    if cond == 0:
        return [(not present, state)]
    if not present:
        return [(False, state)]
    if version >= 0:
        return [(version == cond, state)]
    if cond in known or cond <= floor:
        return [(False, state)]
    return [(False, state), (True, (present, value, cond, cond))]


def step(state: State, k: KeyOp, known: frozenset[int] = frozenset()) -> list[State]:
    """The states `k` can lead to from `state` (none: it cannot be linearized here)."""
    present, value, version, floor = state
    if k.kind == READ:
        if not k.found:
            return [] if present else [state]
        if present and value == k.value and version == k.index:
            return [state]
        return []
    out: list[State] = []
    for holds, s in _condition(state, k.cond, known):
        if k.kind == REFUSED:
            if not holds:
                out.append(s)
            continue
        if not holds:
            # ok (or proven) writes needed their condition; an indeterminate
            # one that meets a false condition just fails, with no effect.
            if k.status == INFO and not k.must:
                out.append(s)
            continue
        if k.kind == ASSERT:
            out.append(s)
            continue
        if k.deleted is not None and k.deleted != s[0]:
            continue
        floor = s[3]
        if k.index:
            if k.index <= floor:
                continue  # versions of a key strictly increase
            floor = k.index
        if k.kind == DELETE:
            out.append((False, None, 0, floor))
        else:
            out.append((True, k.value, k.index or -1, floor))
    return out


def partition(history: Iterable[Op]) -> dict[str, list[KeyOp]]:
    """Project the history onto keys (see the module docstring for batches)."""
    parts: dict[str, list[KeyOp]] = {}
    for op in history:
        if op.f == "read":
            if op.status != OK:
                continue  # a failed read has no effect and saw nothing
            parts.setdefault(op.key, []).append(
                KeyOp(
                    op.id,
                    op.invoke,
                    op.complete,
                    READ,
                    OK,
                    value=op.value,
                    index=op.version,
                    found=op.found,
                )
            )
            continue
        conds = dict(op.conditions)
        if op.status == FAIL:
            if len(op.conditions) == 1:
                key, version = op.conditions[0]
                parts.setdefault(key, []).append(
                    KeyOp(op.id, op.invoke, op.complete, REFUSED, OK, cond=version)
                )
            continue
        status = OK if op.status == OK else INFO
        must = op.status != OK and op.happened
        index = op.index if (op.status == OK or op.happened) else 0
        written = set()
        for i, w in enumerate(op.writes):
            written.add(w.key)
            deleted = op.deleted[i] if op.status == OK and i < len(op.deleted) else None
            parts.setdefault(w.key, []).append(
                KeyOp(
                    op.id,
                    op.invoke,
                    op.complete,
                    PUT if w.value is not None else DELETE,
                    status,
                    must=must,
                    cond=conds.get(w.key),
                    value=w.value,
                    index=index,
                    deleted=deleted if w.value is None else None,
                )
            )
        for key, version in op.conditions:
            if key not in written:
                parts.setdefault(key, []).append(
                    KeyOp(op.id, op.invoke, op.complete, ASSERT, status, must=must, cond=version)
                )
    return parts


def sharpen(kops: list[KeyOp]) -> list[KeyOp]:
    """An indeterminate put whose (unique) value some read returned did
    happen, at the version that read saw, before that read completed."""
    seen: dict[str, tuple[int, float]] = {}
    for k in kops:
        if k.kind == READ and k.found and k.value is not None:
            version, done = seen.get(k.value, (k.index, INF))
            seen[k.value] = (version, min(done, k.complete))
    out = []
    for k in kops:
        if k.kind == PUT and k.status == INFO and k.value in seen:
            version, done = seen[k.value]
            if not k.index:
                k = replace(k, index=version)
            k = replace(k, must=True, complete=min(k.complete, max(done, k.invoke)))
        out.append(k)
    return out


# -- the search ---------------------------------------------------------------


@dataclass
class SearchResult:
    ok: bool | None  # None: budget exhausted
    steps: int
    best: list[int] = field(default_factory=list)  # longest linearized prefix (indices)
    best_state: State = INITIAL
    stuck: int | None = None  # index of the op whose return could not be passed


def search(
    kops: Sequence[KeyOp],
    initial: State = INITIAL,
    max_steps: int = 2_000_000,
    deadline: float = INF,
) -> SearchResult:
    n = len(kops)
    known = frozenset(k.index for k in kops if k.kind == PUT and k.index)
    events = sorted(
        [(k.invoke, 0, i) for i, k in enumerate(kops)]
        + [(k.complete, 1, i) for i, k in enumerate(kops)]
    )
    m = len(events)
    nxt = list(range(1, m + 2))
    nxt[m] = -1
    prv = list(range(-1, m))
    ev_op = [0] * (m + 1)
    ev_ret = [False] * (m + 1)
    call_node = [0] * n
    ret_node = [0] * n
    for pos, (_, typ, i) in enumerate(events, start=1):
        ev_op[pos] = i
        ev_ret[pos] = typ == 1
        if typ:
            ret_node[i] = pos
        else:
            call_node[i] = pos

    def unlink(node: int) -> None:
        nxt[prv[node]] = nxt[node]
        if nxt[node] != -1:
            prv[nxt[node]] = prv[node]

    def relink(node: int) -> None:
        nxt[prv[node]] = node
        if nxt[node] != -1:
            prv[nxt[node]] = node

    cache: set[tuple[int, State]] = set()
    stack: list[tuple[int, State]] = []
    best: list[int] = []
    best_state = initial
    stuck: int | None = None
    linearized = 0
    state = initial
    entry = nxt[0]
    steps = 0
    while nxt[0] != -1:
        steps += 1
        if steps > max_steps or (steps & 0xFFF == 0 and time.monotonic() > deadline):
            return SearchResult(None, steps, best, best_state, stuck)
        i = ev_op[entry]
        if not ev_ret[entry]:
            lin = linearized | (1 << i)
            for new_state in step(state, kops[i], known):
                memo = (lin, new_state)
                if memo not in cache:
                    break
            else:
                entry = nxt[entry]
                continue
            cache.add(memo)
            stack.append((i, state))
            linearized = lin
            state = new_state
            unlink(call_node[i])
            unlink(ret_node[i])
            if len(stack) > len(best):
                best = [j for j, _ in stack]
                best_state = state
                stuck = None
            entry = nxt[0]
        else:
            if len(stack) == len(best) and stuck is None:
                stuck = i
            if not stack:
                return SearchResult(False, steps, best, best_state, stuck)
            i, state = stack.pop()
            linearized &= ~(1 << i)
            relink(ret_node[i])
            relink(call_node[i])
            entry = nxt[call_node[i]]
    return SearchResult(True, steps, best, best_state, stuck)


# -- the index horizon (cross-key) check ----------------------------------------


def horizon_violations(history: Sequence[Op], limit: int = 5) -> list[list[Op]]:
    """Reads that returned a key state older than a write the reader must have
    seen: one whose index is at or below an index some operation had already
    observed when the read was invoked. Each violation: [read, write, witness]."""
    observed: list[tuple[float, int, Op]] = []
    for op in history:
        if op.status != OK or op.complete == INF:
            continue
        if op.f == "write" and op.index:
            observed.append((op.complete, op.index, op))
        elif op.f == "read" and op.found:
            observed.append((op.complete, op.version, op))
    observed.sort(key=lambda t: t[0])
    # writes per key with a known index: (index, is_delete, op)
    writes: dict[str, list[tuple[int, bool, Op]]] = {}
    unknown_deletes: set[str] = set()
    for op in history:
        if op.f != "write" or op.status == FAIL:
            continue
        known = op.status == OK or op.happened
        for w in op.writes:
            if known and op.index:
                writes.setdefault(w.key, []).append((op.index, w.value is None, op))
            elif w.value is None:
                unknown_deletes.add(w.key)
    for lst in writes.values():
        lst.sort(key=lambda t: t[0])
    reads = sorted(
        (op for op in history if op.f == "read" and op.status == OK), key=lambda o: o.invoke
    )
    out: list[list[Op]] = []
    pos = 0
    horizon = 0
    witness: Op | None = None
    for r in reads:
        while pos < len(observed) and observed[pos][0] < r.invoke:
            if observed[pos][1] > horizon:
                horizon, witness = observed[pos][1], observed[pos][2]
            pos += 1
        last = None
        for idx, is_delete, writer in writes.get(r.key, ()):
            if idx > horizon:
                break
            last = (idx, is_delete, writer)
        if last is None or witness is None:
            continue
        idx, is_delete, writer = last
        if r.found:
            stale = r.version < idx or (is_delete and r.version == idx)
        else:
            later_delete = r.key in unknown_deletes or any(
                d and i > idx for i, d, _ in writes.get(r.key, ())
            )
            stale = not is_delete and not later_delete
        if stale:
            out.append([r, writer, witness] if witness is not writer else [r, writer])
            if len(out) >= limit:
                break
    return out


# -- verdicts and witnesses -----------------------------------------------------


@dataclass
class KeyVerdict:
    key: str
    ops: int
    ok: bool | None
    steps: int
    seconds: float


@dataclass
class Verdict:
    linearizable: bool | None  # None: unknown (budget exhausted somewhere)
    keys: list[KeyVerdict]
    failing_key: str | None = None
    witness: list[Op] = field(default_factory=list)
    explanation: str = ""
    horizon: list[list[Op]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.linearizable is None:
            return "unknown"
        return "linearizable" if self.linearizable else "NOT linearizable"

    def summary(self) -> str:
        steps = sum(k.steps for k in self.keys)
        ops = sum(k.ops for k in self.keys)
        return (
            f"{self.label}: {len(self.keys)} keys, {ops} per-key ops, "
            f"{steps} search steps, {self.seconds:.2f}s"
        )

    def report(self) -> str:
        lines = [self.summary()]
        if self.explanation:
            lines.append(self.explanation)
        if self.witness:
            lines.append("smallest offending sub-history:")
            lines += ["  " + op.describe() for op in sorted(self.witness, key=lambda o: o.invoke)]
        for i, group in enumerate(self.horizon):
            lines.append(f"stale read {i + 1} (index horizon):")
            lines += ["  " + op.describe() for op in group]
        return "\n".join(lines)


def _fails(kops: list[KeyOp], max_steps: int) -> bool:
    return search(sharpen(kops), max_steps=max_steps).ok is False


def _closure(chosen: list[KeyOp], all_kops: list[KeyOp]) -> list[KeyOp]:
    """Add the writes that the chosen reads and conditions depend on, so a
    witness never fails merely because it dropped the write a read saw."""
    by_value = {k.value: k for k in all_kops if k.kind == PUT}
    by_index = {k.index: k for k in all_kops if k.kind in (PUT,) and k.index}
    ids = {id(k) for k in chosen}
    out = list(chosen)
    for k in chosen:
        deps: list[KeyOp] = []
        if k.kind == READ and k.found and k.value in by_value:
            deps.append(by_value[k.value])
        if k.cond and k.cond in by_index:
            deps.append(by_index[k.cond])
        for d in deps:
            if id(d) not in ids:
                ids.add(id(d))
                out.append(d)
    return out


def minimize(kops: list[KeyOp], stuck: KeyOp | None, max_steps: int = 20_000) -> list[KeyOp]:
    """A small sub-history of one key that is not linearizable on its own
    (closed under the writes its reads depend on): a time window around the
    op the search got stuck on, then delta debugging."""
    ordered = sorted(kops, key=lambda k: k.invoke)
    ids = [k.op_id for k in ordered]
    if stuck is not None and stuck.op_id in ids:
        centre = ids.index(stuck.op_id)
        width = 4
        while width < 2 * len(ordered):
            lo = max(0, centre - width)
            window = _closure(ordered[lo : centre + width + 1], kops)
            if _fails(window, max_steps):
                ordered = window
                break
            width *= 2
    if not _fails(ordered, max_steps * 10):
        return ordered
    # ddmin over the ops
    current = ordered
    chunks = 2
    rounds = 0
    while len(current) >= 2 and rounds < 200:
        rounds += 1
        size = math.ceil(len(current) / chunks)
        reduced = False
        for start in range(0, len(current), size):
            candidate = _closure(current[:start] + current[start + size :], kops)
            if len(candidate) < len(current) and _fails(candidate, max_steps):
                current = candidate
                chunks = max(chunks - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunks >= len(current):
                break
            chunks = min(len(current), chunks * 2)
    return current


def check(
    history: Sequence[Op],
    *,
    max_steps: int = 5_000_000,
    time_limit: float = 300.0,
    minimize_witness: bool = True,
) -> Verdict:
    """Check a whole history: per key (Wing-Gong/Lowe), then the index horizon."""
    started = time.monotonic()
    deadline = started + time_limit
    by_id = {op.id: op for op in history}
    parts = partition(history)
    keys: list[KeyVerdict] = []
    verdict = Verdict(True, keys)
    for key in sorted(parts):
        kops = sharpen(parts[key])
        t0 = time.monotonic()
        res = search(kops, max_steps=max_steps, deadline=deadline)
        keys.append(KeyVerdict(key, len(kops), res.ok, res.steps, time.monotonic() - t0))
        if res.ok is None and verdict.linearizable:
            verdict.linearizable = None
            verdict.explanation = f"key {key!r}: search budget exhausted after {res.steps} steps"
        if res.ok is False and verdict.failing_key is None:
            verdict.linearizable = False
            verdict.failing_key = key
            stuck = kops[res.stuck] if res.stuck is not None else None
            small = minimize(parts[key], stuck) if minimize_witness else parts[key]
            verdict.witness = [by_id[i] for i in sorted({k.op_id for k in small})]
            done = [kops[i] for i in res.best]
            verdict.explanation = (
                f"key {key!r}: no linearization; the longest linearizable prefix has "
                f"{len(res.best)} of {len(kops)} ops"
                + (f" (last #{done[-1].op_id})" if done else "")
                + (f"; stuck at #{stuck.op_id}" if stuck else "")
                + f"; state there: {_state_str(res.best_state)}"
            )
    verdict.horizon = horizon_violations(history)
    if verdict.horizon and verdict.linearizable is not False:
        verdict.linearizable = False
        verdict.explanation = (
            verdict.explanation + "; " if verdict.explanation else ""
        ) + "a read returned a state older than an index already observed (index horizon)"
        if not verdict.witness:
            verdict.witness = verdict.horizon[0]
    verdict.seconds = time.monotonic() - started
    return verdict


def _state_str(state: State) -> str:
    present, value, version, floor = state
    if not present:
        return f"absent (highest index so far {floor})"
    v = "?" if version < 0 else str(version)
    return f"{value!r} v{v}"


def load_history(path: str) -> list[Op]:
    with open(path) as f:
        data = json.load(f)
    ops = data["history"] if isinstance(data, dict) else data
    return [Op.from_json(d) for d in ops]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="check a recorded history (JSON) for linearizability")
    p.add_argument("history")
    p.add_argument("--max-steps", type=int, default=5_000_000)
    args = p.parse_args(argv)
    verdict = check(load_history(args.history), max_steps=args.max_steps)
    print(verdict.report())
    return 0 if verdict.linearizable else 1


if __name__ == "__main__":
    raise SystemExit(main())
