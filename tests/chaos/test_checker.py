"""The linearizability checker against hand-written histories (and generated
ones from a store that is linearizable by construction)."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.chaos import NAMESPACE, _replay_log
from scripts.checker import FAIL, INF, INFO, OK, Op, Write, check
from shardlite.v1 import frame_pb2

_ids = itertools.count(1)


def read(key: str, t0: float, t1: float, value: str | None, version: int = 0, p: int = 0) -> Op:
    return Op(
        next(_ids),
        p,
        "read",
        t0,
        t1,
        OK,
        key=key,
        found=value is not None,
        value=value,
        version=version,
    )


def put(
    key: str,
    value: str,
    t0: float,
    t1: float = INF,
    index: int = 0,
    *,
    cond: int | None = None,
    status: str | None = None,
    p: int = 0,
) -> Op:
    status = status or (OK if t1 != INF else INFO)
    return Op(
        next(_ids),
        p,
        "write",
        t0,
        t1,
        status,
        writes=(Write(key, value),),
        conditions=((key, cond),) if cond is not None else (),
        index=index if status == OK else 0,
        deleted=(None,),
    )


def delete(
    key: str,
    t0: float,
    t1: float = INF,
    index: int = 0,
    *,
    deleted: bool = True,
    cond: int | None = None,
    p: int = 0,
) -> Op:
    status = OK if t1 != INF else INFO
    return Op(
        next(_ids),
        p,
        "write",
        t0,
        t1,
        status,
        writes=(Write(key, None),),
        conditions=((key, cond),) if cond is not None else (),
        index=index if status == OK else 0,
        deleted=(deleted,) if status == OK else (),
    )


def batch(
    writes: dict[str, str | None],
    t0: float,
    t1: float = INF,
    index: int = 0,
    *,
    conditions: dict[str, int] | None = None,
    status: str | None = None,
) -> Op:
    status = status or (OK if t1 != INF else INFO)
    return Op(
        next(_ids),
        0,
        "write",
        t0,
        t1,
        status,
        writes=tuple(Write(k, v) for k, v in writes.items()),
        conditions=tuple((conditions or {}).items()),
        index=index if status == OK else 0,
        deleted=tuple(False if v is None else None for v in writes.values()),
    )


def lin(history: list[Op]) -> bool | None:
    return check(history).linearizable


# -- plain registers ------------------------------------------------------------


def test_empty_and_sequential() -> None:
    assert lin([]) is True
    assert lin([read("k", 0, 1, None)]) is True
    assert lin([put("k", "a", 0, 1, 5), read("k", 2, 3, "a", 5)]) is True


def test_stale_read_after_acknowledged_overwrite() -> None:
    h = [
        put("k", "a", 0, 1, 5),
        put("k", "b", 2, 3, 6),
        read("k", 4, 5, "a", 5),
    ]
    verdict = check(h)
    assert verdict.linearizable is False
    assert verdict.failing_key == "k"
    assert {op.id for op in verdict.witness} == {op.id for op in h}
    assert "stuck" in verdict.explanation
    assert "read k -> 'a' v5" in verdict.report()


def test_concurrent_read_may_see_old_or_new() -> None:
    w = put("k", "b", 2, 6, 6)
    base = put("k", "a", 0, 1, 5)
    assert lin([base, w, read("k", 3, 4, "a", 5)]) is True
    assert lin([base, w, read("k", 3, 4, "b", 6)]) is True
    # ... but not new then old
    assert lin([base, w, read("k", 3, 4, "b", 6), read("k", 4.5, 5, "a", 5)]) is False


def test_read_of_never_written_value() -> None:
    assert lin([put("k", "a", 0, 1, 5), read("k", 2, 3, "zzz", 5)]) is False
    assert lin([read("k", 0, 1, "a", 3)]) is False


def test_read_must_report_the_writes_version() -> None:
    assert lin([put("k", "a", 0, 1, 5), read("k", 2, 3, "a", 4)]) is False


def test_versions_strictly_increase_per_key() -> None:
    # Sequential puts acknowledged with decreasing versions: impossible.
    assert lin([put("k", "a", 0, 1, 5), put("k", "b", 2, 3, 4)]) is False
    # Concurrent ones are fine in either order of versions.
    assert lin([put("k", "a", 0, 3, 5), put("k", "b", 1, 2, 4), read("k", 4, 5, "a", 5)]) is True


# -- indeterminate operations -----------------------------------------------------


def test_indeterminate_put_may_not_have_happened() -> None:
    h = [put("k", "a", 0, 1, 5), put("k", "x", 2), read("k", 3, 4, "a", 5)]
    assert lin(h) is True


def test_indeterminate_put_may_take_effect_much_later() -> None:
    h = [
        put("k", "x", 0),  # times out at once, commits after the next two
        put("k", "a", 1, 2, 5),
        read("k", 3, 4, "a", 5),
        read("k", 10, 11, "x", 9),
    ]
    assert lin(h) is True


def test_indeterminate_put_cannot_take_effect_before_its_invocation() -> None:
    h = [read("k", 0, 1, "x", 3), put("k", "x", 2)]
    assert lin(h) is False


def test_observed_indeterminate_put_is_then_permanent_until_overwritten() -> None:
    h = [
        put("k", "a", 0, 1, 5),
        put("k", "x", 2),
        read("k", 3, 4, "x", 7),
        read("k", 5, 6, "a", 5),  # went back to before x: impossible
    ]
    assert lin(h) is False


def test_indeterminate_delete() -> None:
    h = [put("k", "a", 0, 1, 5), delete("k", 2), read("k", 3, 4, None)]
    assert lin(h) is True
    h = [put("k", "a", 0, 1, 5), delete("k", 2), read("k", 3, 4, "a", 5)]
    assert lin(h) is True
    h = [
        put("k", "a", 0, 1, 5),
        delete("k", 2),
        read("k", 3, 4, None),
        read("k", 5, 6, "a", 5),
    ]
    assert lin(h) is False


def test_indeterminate_cas_with_a_false_condition_has_no_effect() -> None:
    h = [
        put("k", "a", 0, 1, 5),
        put("k", "x", 2, cond=3),  # condition can never hold
        read("k", 3, 4, "a", 5),
    ]
    assert lin(h) is True
    h = [put("k", "a", 0, 1, 5), put("k", "x", 2, cond=3), read("k", 3, 4, "x", 8)]
    assert lin(h) is False


def test_many_indeterminate_ops_stay_cheap() -> None:
    h = [put("k", "a0", 0, 0.5, 1)]
    for i in range(1, 200):
        h.append(put("k", f"lost{i}", i))  # never seen
        h.append(put("k", f"a{i}", i + 0.1, i + 0.5, 10 * i))
        h.append(read("k", i + 0.6, i + 0.9, f"a{i}", 10 * i))
    verdict = check(h)
    assert verdict.linearizable is True
    assert sum(k.steps for k in verdict.keys) < 200_000


# -- compare-and-set and deletes ---------------------------------------------------


def test_cas() -> None:
    base = put("k", "a", 0, 1, 5)
    assert lin([base, put("k", "b", 2, 3, 6, cond=5), read("k", 4, 5, "b", 6)]) is True
    # Two sequential CAS from the same version cannot both succeed.
    assert lin([base, put("k", "b", 2, 3, 6, cond=5), put("k", "c", 4, 5, 7, cond=5)]) is False
    # A definite failure needs the condition to be false at some point.
    assert lin([base, put("k", "b", 2, 3, cond=5, status=FAIL)]) is False
    assert lin([base, put("k", "b", 2, 3, cond=4, status=FAIL)]) is True
    # version 0 = must not exist
    assert lin([put("k", "a", 0, 1, 5, cond=0), put("k", "b", 2, 3, cond=0, status=FAIL)]) is True
    assert lin([put("k", "a", 0, 1, 5, cond=0), put("k", "b", 2, 3, 6, cond=0)]) is False


def test_delete() -> None:
    base = put("k", "a", 0, 1, 5)
    assert lin([base, delete("k", 2, 3, 6), read("k", 4, 5, None)]) is True
    assert lin([base, delete("k", 2, 3, 6), read("k", 4, 5, "a", 5)]) is False
    # `deleted` must say whether the key existed
    assert lin([base, delete("k", 2, 3, 6, deleted=False)]) is False
    assert lin([delete("k", 0, 1, 3, deleted=False)]) is True
    # after a delete, a new put needs a higher version than the delete's index
    assert lin([base, delete("k", 2, 3, 8), put("k", "b", 4, 5, 7)]) is False
    # CAS "must not exist" holds again after a delete
    assert lin([base, delete("k", 2, 3, 6), put("k", "b", 4, 5, 7, cond=0)]) is True


# -- batches ------------------------------------------------------------------------


def test_batch_is_atomic_within_a_key() -> None:
    h = [
        batch({"a": "a1", "b": "b1"}, 0, 1, 5),
        read("a", 2, 3, "a1", 5),
        read("b", 2, 3, "b1", 5),
    ]
    assert lin(h) is True


def test_batch_seen_half_applied_is_caught_by_the_index_horizon() -> None:
    h = [
        put("b", "b0", 0, 1, 2),
        batch({"a": "a1", "b": "b1"}, 2, 20),  # indeterminate
        read("a", 3, 4, "a1", 5),  # saw the batch: frames <= 5 are applied
        read("b", 5, 6, "b0", 2),  # ...so b must be at >= 5
    ]
    # Per key each read alone is fine; with the batch's index known from the
    # log the horizon sees the stale read of b.
    h[1].happened = True
    h[1].index = 5
    verdict = check(h)
    assert verdict.linearizable is False
    assert verdict.horizon
    assert "index horizon" in verdict.report()


def test_stale_read_of_another_key_after_an_acknowledged_write() -> None:
    h = [
        put("a", "a1", 0, 1, 4),
        put("b", "b1", 2, 3, 9),  # acknowledged at index 9
        read("a", 4, 5, "a1", 4),  # fine: a was last written at 4
        put("a", "a2", 6, 7, 12),
        read("b", 8, 9, None),  # b was written at 9 <= 12 seen before: stale
    ]
    assert lin(h) is False


def test_failed_batch_conditions() -> None:
    base = put("k", "a", 0, 1, 5)
    # one condition: it definitely failed
    assert lin([base, batch({"k": "b"}, 2, 3, conditions={"k": 5}, status=FAIL)]) is False
    # two conditions: one of them failed, we cannot say which
    h = [base, batch({"k": "b", "j": "c"}, 2, 3, conditions={"k": 5, "j": 0}, status=FAIL)]
    assert lin(h) is True


def test_batch_condition_on_an_unwritten_key() -> None:
    h = [
        put("c", "c1", 0, 1, 3),
        batch({"k": "x"}, 2, 3, 5, conditions={"c": 3}),
        read("k", 4, 5, "x", 5),
    ]
    assert lin(h) is True
    h[1] = batch({"k": "x"}, 2, 3, 5, conditions={"c": 2})
    assert lin(h) is False


# -- the report -----------------------------------------------------------------------


def test_witness_is_small_in_a_long_history() -> None:
    rng = random.Random(7)
    h: list[Op] = []
    t = 0.0
    for i in range(1, 400):
        key = rng.choice("abc")
        h.append(put(key, f"v{i}", t, t + 0.5, 2 * i, p=i % 4))
        h.append(read(key, t + 0.6, t + 0.9, f"v{i}", 2 * i, p=i % 4))
        t += 1
        if i == 300:
            h.append(read(key, t, t + 0.1, f"v{i - 3}" if key == "a" else "nope", 1, p=9))
            t += 1
    verdict = check(h)
    assert verdict.linearizable is False
    assert 1 <= len(verdict.witness) <= 4, verdict.report()


def test_budget_exhaustion_is_unknown_not_pass() -> None:
    h = [put("k", f"v{i}", 0, 10, i + 1) for i in range(12)]
    h.append(read("k", 11, 12, "nope", 99))
    verdict = check(h, max_steps=50)
    assert verdict.linearizable is None
    assert verdict.label == "unknown"


def test_history_round_trips_through_json() -> None:
    h = [put("k", "a", 0, 1, 5), put("k", "x", 2), delete("k", 3, 4, 9), read("k", 5, 6, None)]
    again = [Op.from_json(op.to_json()) for op in h]
    assert again == h


# -- generated histories of a store that is linearizable by construction --------------


def _simulate(seed: int, n: int, processes: int) -> list[Op]:
    """Each op takes effect at one instant inside its interval (or, if it is
    indeterminate, possibly at none); results come from a real store."""
    rng = random.Random(seed)
    clocks = [0.0] * processes
    planned = []
    for i in range(n):
        p = rng.randrange(processes)
        t0 = clocks[p] + rng.random()
        point = t0 + rng.random() * 2
        t1 = point + rng.random() * 2
        clocks[p] = t1
        planned.append((point, i, p, t0, t1))
    planned.sort()
    store: dict[str, tuple[str, int]] = {}
    index = 0
    ops = []
    for _point, i, p, t0, t1 in planned:
        key = rng.choice("ab")
        kind = rng.random()
        indeterminate = rng.random() < 0.15
        happens = not indeterminate or rng.random() < 0.5
        end = INF if indeterminate else t1
        if kind < 0.4:
            cur = store.get(key)
            op = Op(i, p, "read", t0, t1, OK, key=key, found=cur is not None)
            if cur:
                op.value, op.version = cur
            ops.append(op)
            continue
        index += 1
        if kind < 0.8:
            writes: dict[str, str | None] = {key: f"v{i}"}
            if kind > 0.7:
                writes["b" if key == "a" else "a"] = f"w{i}" if rng.random() < 0.7 else None
            cond: dict[str, int] = {}
            if rng.random() < 0.3:
                cur = store.get(key)
                cond[key] = rng.choice([0, cur[1] if cur else 0, index - 1])
            holds = all(
                (v == 0 and k not in store) or (k in store and store[k][1] == v)
                for k, v in cond.items()
            )
            deleted = tuple(None if v is not None else (k in store) for k, v in writes.items())
            if happens and holds:
                for k, v in writes.items():
                    if v is None:
                        store.pop(k, None)
                    else:
                        store[k] = (v, index)
            status = INFO if indeterminate else (OK if holds else FAIL)
            ops.append(
                Op(
                    i,
                    p,
                    "write",
                    t0,
                    end,
                    status,
                    writes=tuple(Write(k, v) for k, v in writes.items()),
                    conditions=tuple(cond.items()),
                    index=index if status == OK else 0,
                    deleted=deleted if status == OK else (),
                )
            )
        else:
            existed = key in store
            if happens:
                store.pop(key, None)
            ops.append(
                Op(
                    i,
                    p,
                    "write",
                    t0,
                    end,
                    INFO if indeterminate else OK,
                    writes=(Write(key, None),),
                    index=0 if indeterminate else index,
                    deleted=() if indeterminate else (existed,),
                )
            )
    return sorted(ops, key=lambda o: o.invoke)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 60), processes=st.integers(1, 5))
def test_linearizable_executions_always_pass(seed: int, n: int, processes: int) -> None:
    verdict = check(_simulate(seed, n, processes))
    assert verdict.linearizable is True, verdict.report()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_read_moved_into_the_future_is_caught(seed: int) -> None:
    """Take a read that saw an older version than the key's final one and
    re-issue it strictly after everything: it must be flagged."""
    h = _simulate(seed, 40, 3)
    end = max(o.complete for o in h if o.complete != INF) + 1
    stale = [
        o
        for o in h
        if o.f == "read"
        and o.found
        and any(
            w.status == OK
            and w.index > o.version
            and any(x.key == o.key and x.value for x in w.writes)
            for w in h
        )
    ]
    if not stale:
        return
    r = stale[0]
    h.append(
        Op(
            10_000,
            9,
            "read",
            end,
            end + 1,
            OK,
            key=r.key,
            found=True,
            value=r.value,
            version=r.version,
        )
    )
    assert check(h).linearizable is False


def test_a_compacted_log_does_not_judge_conditions_on_older_state() -> None:
    """The log from index 50 (a snapshot took the rest) cannot say what k held
    before: a CAS on it is not judged; a later plain put makes k known again."""

    def put(seq: int, key: str, if_version: int | None = None) -> frame_pb2.Frame:
        f = frame_pb2.Frame(namespace=NAMESPACE)
        f.request_id.client_id, f.request_id.seq = "c", seq
        f.ops.add(put=frame_pb2.PutOp(key=key, value=b"v"))
        if if_version is not None:
            f.conditions.add(key=key, version=if_version)
        return f

    log = [(50, put(1, "k", if_version=40)), (51, put(2, "k")), (52, put(3, "k", if_version=51))]
    assert _replay_log(log, start=50) == {"c/1": (50, None), "c/2": (51, True), "c/3": (52, True)}
    # From index 1 nothing is unknown: the CAS on a key never written fails.
    assert _replay_log(log, start=1)["c/1"] == (50, False)
