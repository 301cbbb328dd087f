"""The write path and the read path, top to bottom.

A write: the service builds and validates a Frame -> `write(frame)` proposes
it here, or forwards it to the leader (`Forward`, node/peer_service.py) ->
the replicator commits it -> the applier applies it -> its FrameResult comes
back. A follower that forwarded waits until it applied the frame too, so a
client reads its own writes from the node it wrote to.

What a write's failure says is exact:
- "not proposed" (Rejected with a certain reason, InvalidArgument, a
  ForwardRejection other than OUTCOME_UNKNOWN, a Forward call that never left
  this node): nothing was written; with NOT_LEADER the write looks for the
  leader again, within `leader_wait`.
- "outcome unknown" (OutcomeUnknown, UNAVAILABLE): it may be in the log. It
  is never proposed again here; the caller retries with the same request_id,
  which applies it at most once.

Many writes (MultiWrite): `write_many(frames)` packs the frames into few
entries (node/envelope.py: frames of one shard that share no key commit as
one entry), hands them to the replicator together (ProposeMany: one hand-off,
one wait for the commit of the lot) and answers each frame on its own, with
what `write` would have answered it; a frame refused because this node does
not lead goes through `write` alone (forwarded).

A read: `wait_readable(consistency)` -- ReadIndex for LINEARIZABLE (dissertation
§6.4), nothing for SERIALIZABLE -- then the service reads the shard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import grpc

from shardlite.node import envelope, frames
from shardlite.node.config import NodeConfig
from shardlite.node.errors import InvalidArgument, OutcomeUnknown, StorageError, Unavailable
from shardlite.node.lifecycle import Lifecycle
from shardlite.node.peers import PeerChannels
from shardlite.replication.replicator import (
    Accepted,
    Leadership,
    MemberFeatures,
    ProposeMany,
    Rejected,
    RejectReason,
    Replicator,
)
from shardlite.v1 import frame_pb2, kv_pb2, raft_pb2, raft_pb2_grpc

log = logging.getLogger(__name__)

FORWARDED_BY = "shardlite-forwarded-by"
# A forward waits at most this long for its channel to the leader to connect;
# a channel that never connected sent nothing, so the write can go elsewhere.
CONNECT_WAIT = 1.0
# A follower forwards at most this many frames of one MultiWrite at once.
FORWARD_CONCURRENCY = 64

# Rejections that say for certain the frame was not proposed (replicator.py).
_NOT_PROPOSED = {
    RejectReason.NOT_LEADER,
    RejectReason.SHUTTING_DOWN,
    RejectReason.QUEUE_FULL,
    RejectReason.TOO_LARGE,
    RejectReason.INVALID,
    RejectReason.TRANSFER_IN_PROGRESS,
    RejectReason.CONFLICT,
}
# A leader's answer that sends the follower looking for the leader again.
_LOOK_AGAIN = {
    raft_pb2.ForwardRejection.NOT_LEADER,
    raft_pb2.ForwardRejection.SHUTTING_DOWN,
    raft_pb2.ForwardRejection.TRANSFER_IN_PROGRESS,
}


class Applying(Protocol):
    """What the paths need of the applier (node/applier.py)."""

    def register(self, trace_id: bytes) -> asyncio.Future[frame_pb2.FrameResult]: ...
    def unregister(self, trace_id: bytes) -> None: ...
    async def wait_applied(self, index: int) -> None: ...


class Paths:
    def __init__(
        self,
        config: NodeConfig,
        replicator: Replicator,
        applier: Applying,
        lifecycle: Lifecycle,
        channels: PeerChannels,
    ) -> None:
        self.config = config
        self.replicator = replicator
        self.applier = applier
        self.lifecycle = lifecycle
        self.channels = channels
        self.leadership = replicator if isinstance(replicator, Leadership) else None
        self.proposer = replicator if isinstance(replicator, ProposeMany) else None
        self.features = replicator if isinstance(replicator, MemberFeatures) else None
        self._packing: bool | None = None  # what the last MultiWrite did (for the log)
        self.peer_address = config.peer_address
        self.limits = frames.Limits(config.max_value_bytes, config.max_request_bytes)

    @property
    def closing(self) -> bool:
        return self.lifecycle.closing or self.lifecycle.fatal is not None

    # -- writes ---------------------------------------------------------------

    async def write(self, frame: frame_pb2.Frame) -> frame_pb2.FrameResult:
        """Commit `frame` (here if this node leads, else through the leader), wait
        until it is applied on this node, and return what applying said.

        During an election the write waits up to leader_wait for a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leader_wait
        while True:
            try:
                return await self.propose_here(frame)
            except Rejected as rejected:
                if rejected.reason is not RejectReason.NOT_LEADER or self.leadership is None:
                    raise
                hint, leader = rejected.leader_hint, rejected.leader_peer
            if leader and leader != self.peer_address:
                result = await self._forward(leader, frame, deadline - loop.time())
                if result is not None:
                    return await self._applied_here(result, deadline)
            if loop.time() >= deadline:
                raise Unavailable(
                    f"no leader within {self.config.leader_wait}s (election in progress?); "
                    "retry shortly",
                    leader_hint=hint,
                )
            await self._leader_settles(deadline)

    async def propose_here(self, frame: frame_pb2.Frame) -> frame_pb2.FrameResult:
        """Propose on this node's replicator and wait for the result of applying.

        Raises Rejected (certainly not proposed: NOT_LEADER and the like),
        Unavailable before proposing, or OutcomeUnknown once it may be in the log."""
        self.lifecycle.check()
        waiter = self.applier.register(frame.trace_id)
        try:
            with self.lifecycle.writing():
                # The replicator and the applier fail their own waiters on a
                # fatal fault (their on_fatal contract): no guard on the hot path.
                try:
                    await self.replicator.propose(frame)
                except Rejected as rejected:
                    if rejected.reason in _NOT_PROPOSED:
                        raise
                    raise OutcomeUnknown(str(rejected)) from None
                try:
                    return await self.lifecycle.guard(waiter, outcome_unknown=True)
                except (StorageError, Unavailable) as exc:
                    # Committed; this node cannot say what applying it said.
                    raise OutcomeUnknown(f"committed, but {exc}") from None
        finally:
            self.applier.unregister(frame.trace_id)

    async def write_many(
        self, frames: Sequence[frame_pb2.Frame]
    ) -> list[frame_pb2.FrameResult | Exception]:
        """`write` for each of `frames` (each already through the gate; its own
        entry, or one of an envelope's frames), with one hand-off to the
        replicator and one wait for the lot. Per frame, in order: its
        FrameResult, or the exception `write` would have raised for it alone."""
        if not frames:
            return []
        try:
            outcomes = await self._propose_many_here(frames)
        except (Unavailable, InvalidArgument) as exc:  # before anything was proposed
            return [exc] * len(frames)
        if self.leadership is not None:
            # Certainly not proposed here: each goes to the leader as `write` sends it.
            elsewhere = [
                i
                for i, outcome in enumerate(outcomes)
                if isinstance(outcome, Rejected) and outcome.reason is RejectReason.NOT_LEADER
            ]
            if elsewhere:
                forwarded = await self._write_each([frames[i] for i in elsewhere])
                for i, outcome in zip(elsewhere, forwarded, strict=True):
                    outcomes[i] = outcome
        return outcomes

    async def _propose_many_here(
        self, frames: Sequence[frame_pb2.Frame]
    ) -> list[frame_pb2.FrameResult | Exception]:
        """`propose_here` for many frames: each its waiter, one proposal of the
        lot, one wait for their results. Raises Unavailable (or InvalidArgument
        for a waiter that cannot be registered) before proposing anything."""
        self.lifecycle.check()
        registered = 0
        try:
            waiters = []
            for frame in frames:
                waiters.append(self.applier.register(frame.trace_id))
                registered += 1
            with self.lifecycle.writing():
                proposed = await self._propose_all(frames)
                accepted = [
                    w for w, p in zip(waiters, proposed, strict=True) if isinstance(p, Accepted)
                ]
                unknown: OutcomeUnknown | None = None
                if accepted:
                    try:
                        # One wait for every result (the applier wakes them
                        # together, batch by batch), not one task per frame.
                        await self.lifecycle.guard(_settle(accepted), outcome_unknown=True)
                    except OutcomeUnknown as exc:  # the node failed meanwhile
                        unknown = exc
                return [_outcome(p, w, unknown) for p, w in zip(proposed, waiters, strict=True)]
        finally:
            for frame in frames[:registered]:
                self.applier.unregister(frame.trace_id)

    async def _propose_all(self, frames: Sequence[frame_pb2.Frame]) -> list[Accepted | Rejected]:
        """Propose `frames` packed into as few entries as keeps each its own
        (node/envelope.py); each frame gets its entry's outcome."""
        if self._may_pack():
            groups = envelope.pack(frames, self.limits)
        else:
            groups = [[position] for position in range(len(frames))]
        entries = [envelope.wrap([frames[p] for p in group]) for group in groups]
        proposed = await self._propose_entries(entries)
        # The groups are runs of consecutive positions, in order.
        return [outcome for group, outcome in zip(groups, proposed, strict=True) for _ in group]

    def _may_pack(self) -> bool:
        """Envelopes are on (--no-envelopes turns them off) and every member
        can apply them: a member of an older version, or one not heard from
        yet, holds them back (docs/operations.md, "Upgrade")."""
        if not self.config.envelopes:
            return False
        packing = self.features is None or self.features.every_member_understands(envelope.FEATURE)
        if packing != self._packing:
            if self._packing is not None or not packing:
                log.info(
                    "MultiWrite frames %s",
                    "packed into envelopes again: every member announces them"
                    if packing
                    else "each in its own entry: a member does not announce envelopes yet "
                    "(an older version, or not connected)",
                )
            self._packing = packing
        return packing

    async def _propose_entries(
        self, entries: Sequence[frame_pb2.Frame]
    ) -> list[Accepted | Rejected]:
        if self.proposer is not None:
            return await self.proposer.propose_many(entries)

        # A replicator without ProposeMany (test doubles): one propose per entry.
        async def one(entry: frame_pb2.Frame) -> Accepted | Rejected:
            try:
                return await self.replicator.propose(entry)
            except Rejected as rejected:
                return rejected

        return list(await asyncio.gather(*(one(entry) for entry in entries)))

    async def _write_each(
        self, frames: Sequence[frame_pb2.Frame]
    ) -> list[frame_pb2.FrameResult | Exception]:
        """`write` for each frame on its own (a follower forwards each), at most
        FORWARD_CONCURRENCY at once, and in request order wherever order can
        matter: a frame starts only once every earlier frame that touches one
        of its keys (or carries its request_id) has been answered."""
        gate = asyncio.Semaphore(FORWARD_CONCURRENCY)
        loop = asyncio.get_running_loop()
        last: dict[tuple[str, ...], asyncio.Future[None]] = {}

        async def one(
            frame: frame_pb2.Frame, after: set[asyncio.Future[None]], answered: asyncio.Future[None]
        ) -> frame_pb2.FrameResult | Exception:
            try:
                for earlier in after:
                    await earlier  # never fails: set once that write is answered
                async with gate:
                    return await self.write(frame)
            except Exception as exc:
                return exc
            finally:
                answered.set_result(None)

        runs = []
        for frame in frames:
            answered: asyncio.Future[None] = loop.create_future()
            touched = _touches(frame)
            after = {last[t] for t in touched if t in last}
            for t in touched:
                last[t] = answered
            runs.append(one(frame, after, answered))
        return list(await asyncio.gather(*runs))

    async def run_forwarded(self, frame: frame_pb2.Frame) -> raft_pb2.ForwardResponse:
        """The leader's side of Forward: propose a follower's write here and
        answer with its result, or with why it was not run (a structured
        rejection: only OUTCOME_UNKNOWN leaves open whether it was proposed).
        Only the leader proposes: a node that does not lead says so, no chains."""
        try:
            result = await self.propose_here(frames.gate(frame, self.limits))
        except InvalidArgument as exc:
            return _rejection(raft_pb2.ForwardRejection.INVALID, str(exc))
        except Rejected as rejected:
            reason = _FORWARD_REASON.get(rejected.reason, raft_pb2.ForwardRejection.OUTCOME_UNKNOWN)
            return _rejection(reason, str(rejected), rejected.leader_peer)
        except OutcomeUnknown as exc:
            return _rejection(raft_pb2.ForwardRejection.OUTCOME_UNKNOWN, str(exc))
        except Unavailable as exc:  # refused before proposing: closing or failed
            return _rejection(raft_pb2.ForwardRejection.SHUTTING_DOWN, str(exc))
        except Exception as exc:
            log.exception("forwarded write failed")
            return _rejection(
                raft_pb2.ForwardRejection.OUTCOME_UNKNOWN, f"{type(exc).__name__}: {exc}"
            )
        return raft_pb2.ForwardResponse(result=result)

    async def _applied_here(
        self, result: frame_pb2.FrameResult, deadline: float
    ) -> frame_pb2.FrameResult:
        """A forwarded write committed: answer once this node applied it too
        (read-your-writes on the node the client wrote to)."""
        loop = asyncio.get_running_loop()
        wait = max(deadline - loop.time(), self.config.propose_timeout)
        try:
            await asyncio.wait_for(self.applier.wait_applied(result.index), wait)
        except (TimeoutError, StorageError, Unavailable) as exc:
            reason = "not in time" if isinstance(exc, TimeoutError) else str(exc)
            # It committed: a retry with the same request_id returns its result.
            raise Unavailable(
                f"the write committed at index {result.index}, but this node has not "
                f"applied it ({reason}): retry with the same request_id for its result"
            ) from None
        return result

    def _peer_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.leadership.peer_metadata() if self.leadership is not None else ()

    async def _forward(
        self, address: str, frame: frame_pb2.Frame, budget: float
    ) -> frame_pb2.FrameResult | None:
        """Run the write on the leader at `address`. None: it certainly was not
        proposed there (look for the leader again); raises when it failed or
        its outcome is unknown."""
        if self.leadership is not None and self.leadership.leader_unreachable():
            return None  # partitioned from the leader (fault injection): nothing sent
        channel = self.channels.get(address)
        if not await _connected(channel, min(CONNECT_WAIT, max(budget, 0.05))):
            return None  # never connected: nothing was sent
        stub = raft_pb2_grpc.RaftStub(channel)
        try:
            reply = await stub.Forward(
                raft_pb2.ForwardRequest(frame=frame),
                timeout=max(budget, 1.0),
                metadata=((FORWARDED_BY, self.config.node_id), *self._peer_metadata()),
            )
        except grpc.aio.AioRpcError as exc:
            # The request may have reached the leader, whatever the status.
            raise OutcomeUnknown(
                f"forwarding to the leader at {address} failed ({exc.code().name}: {exc.details()})"
            ) from None
        if reply.WhichOneof("outcome") == "result":
            result: frame_pb2.FrameResult = reply.result
            return result
        if reply.WhichOneof("outcome") != "rejection":
            raise OutcomeUnknown(f"the leader at {address} answered neither result nor rejection")
        self._raise_unless_look_again(address, reply.rejection)
        return None

    def _raise_unless_look_again(self, address: str, rejection: raft_pb2.ForwardRejection) -> None:
        """Return when the follower should look for the leader again (the frame
        certainly was not proposed); raise what the rejection means otherwise."""
        reason = rejection.reason
        if reason in _LOOK_AGAIN:
            log.debug("leader %s: %s", address, rejection.detail)
            return
        if reason == raft_pb2.ForwardRejection.INVALID:
            raise InvalidArgument(rejection.detail)
        if reason == raft_pb2.ForwardRejection.QUEUE_FULL:
            raise Rejected(
                RejectReason.QUEUE_FULL, rejection.detail, leader_peer=rejection.leader_hint
            )
        raise OutcomeUnknown(f"the leader at {address}: {rejection.detail}")

    async def _leader_settles(self, deadline: float) -> None:
        """Wait for the leader to change, at most until `deadline` and at most a
        quarter second (then the caller looks again)."""
        remaining = deadline - asyncio.get_running_loop().time()
        if self.leadership is None or remaining <= 0:
            await asyncio.sleep(min(max(remaining, 0), 0.05))
            return
        await self.lifecycle.guard(self.leadership.leader_changed(min(remaining, 0.25)))

    # -- reads ----------------------------------------------------------------

    async def wait_readable(self, consistency: int) -> None:
        """LINEARIZABLE: wait until this node applied everything committed before
        the read began (ReadIndex, dissertation §6.4). SERIALIZABLE: no wait."""
        check_consistency(consistency)
        self.lifecycle.check()
        if consistency != kv_pb2.LINEARIZABLE or self.config.unsafe_stale_reads:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leader_wait
        while True:
            self.lifecycle.check()
            try:
                index = await self.replicator.read_barrier()
                break
            except Rejected as rejected:
                if rejected.reason is not RejectReason.NOT_LEADER or loop.time() >= deadline:
                    raise Unavailable(
                        f"cannot confirm a linearizable read: {rejected}; retry, or read "
                        "with SERIALIZABLE consistency",
                        leader_hint=rejected.leader_hint,
                    ) from None
            await self._leader_settles(deadline)
        await self.applier.wait_applied(index)


def _touches(frame: frame_pb2.Frame) -> set[tuple[str, ...]]:
    """What orders a frame against others: the keys it writes or checks, and its request_id."""
    where = (frame.org, frame.namespace)
    touched: set[tuple[str, ...]] = {
        (*where, op.put.key if op.HasField("put") else op.delete.key) for op in frame.ops
    }
    touched.update((*where, condition.key) for condition in frame.conditions)
    if frame.request_id.client_id:
        touched.add(("request_id", frame.request_id.client_id, str(frame.request_id.seq)))
    return touched


# Built once: EnumTypeWrapper.values() makes a new list on every call, and
# every read asks.
CONSISTENCIES = frozenset(kv_pb2.Consistency.values())


def check_consistency(consistency: int) -> None:
    if consistency not in CONSISTENCIES:
        raise InvalidArgument(
            f"unknown consistency {consistency}: use LINEARIZABLE (0) or SERIALIZABLE (1)"
        )


async def _settle(futures: list[asyncio.Future[frame_pb2.FrameResult]]) -> None:
    """Return once every future is done (their outcomes stay in them). Awaiting
    them in turn costs one wake-up per apply batch: the ones after the first
    are mostly done by then."""
    for future in futures:
        if future.done():
            continue
        try:
            await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not future.cancelled() or (task is not None and task.cancelling()):
                raise  # this wait was cancelled, not only that waiter
        except Exception:
            pass  # its outcome stays in the future


def _outcome(
    proposed: Accepted | Rejected,
    waiter: asyncio.Future[frame_pb2.FrameResult],
    unknown: OutcomeUnknown | None,
) -> frame_pb2.FrameResult | Exception:
    """What `propose_here` would have returned or raised for one frame."""
    if isinstance(proposed, Rejected):
        if proposed.reason in _NOT_PROPOSED:
            return proposed
        return OutcomeUnknown(str(proposed))
    if not waiter.done() or waiter.cancelled():
        # Committed; the node failed before it could say what applying said.
        return unknown or OutcomeUnknown("committed, but no result was reported")
    error = waiter.exception()
    if error is None:
        return waiter.result()
    if isinstance(error, StorageError | Unavailable):
        return OutcomeUnknown(f"committed, but {error}")
    return error if isinstance(error, Exception) else OutcomeUnknown(str(error))


_FORWARD_REASON = {
    RejectReason.NOT_LEADER: raft_pb2.ForwardRejection.NOT_LEADER,
    RejectReason.SHUTTING_DOWN: raft_pb2.ForwardRejection.SHUTTING_DOWN,
    RejectReason.QUEUE_FULL: raft_pb2.ForwardRejection.QUEUE_FULL,
    RejectReason.TOO_LARGE: raft_pb2.ForwardRejection.INVALID,
    RejectReason.INVALID: raft_pb2.ForwardRejection.INVALID,
    RejectReason.TRANSFER_IN_PROGRESS: raft_pb2.ForwardRejection.TRANSFER_IN_PROGRESS,
    # CONFLICT (a membership change pending) never answers a frame's proposal;
    # the wire has no reason for it, so it would travel as OUTCOME_UNKNOWN.
}


def _rejection(
    reason: raft_pb2.ForwardRejection.Reason.ValueType, detail: str, leader_hint: str = ""
) -> raft_pb2.ForwardResponse:
    return raft_pb2.ForwardResponse(
        rejection=raft_pb2.ForwardRejection(reason=reason, detail=detail, leader_hint=leader_hint)
    )


async def _connected(channel: grpc.aio.Channel, within: float) -> bool:
    """Whether the channel is connected (trying for at most `within` seconds)."""
    state = channel.get_state(try_to_connect=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while state is not grpc.ChannelConnectivity.READY:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True
