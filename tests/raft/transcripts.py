"""Golden transcripts for scenario tests (in the manner of etcd-io/raft's
``testdata/*.txt`` interaction tests).

A transcript is a text file of blocks separated by blank lines. Each block is
optional ``#`` comment lines, one command, a ``----`` line, and the output the
command must produce::

    campaign 1
    ----

    stabilize
    ----
    > 1 handling Ready
      soft: role=pre-candidate lead=0
      send: 1->2 PRE_VOTE term=1 log=0/0
    ...

Commands (node ids are ints):

    cluster voters=1,2,3 [learners=4] [bootstrap=true] [pre-vote=false] [check-quorum=false]
            [election-tick=10] [max-inflight=256] [max-size=1048576]
    campaign N | tick N [n=K] | propose N DATA... | read-index N CTX
    conf-change N add-voter|add-learner|remove M | transfer-leader N to=M
    process-ready N... | deliver-msgs N... | stabilize | isolate N | recover
    status N | raft-log N | compact N | report-snapshot N to=M ok=true|false

``python -m tests.raft.transcripts --rewrite [FILE...]`` rewrites the expected
output from what the commands now produce; review the diff before committing.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shardlite.replication.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftCore,
    Ready,
)
from tests.raft.network import NULL_LOGGER

MT = MessageType
TESTDATA = Path(__file__).parent / "testdata"


def fmt_entry(e: Entry) -> str:
    head = f"{e.term}/{e.index}"
    if e.type is EntryType.EMPTY:
        return f"{head} EMPTY"
    if e.type is EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{head} {cc.type.name.lower().replace('_', '-')}({cc.node_id})"
    return f"{head} {e.data.decode(errors='replace')!r}"


def fmt_entries(ents: list[Entry] | tuple[Entry, ...]) -> str:
    return "[" + ", ".join(fmt_entry(e) for e in ents) + "]"


def fmt_msg(m: Message) -> str:
    t = m.type
    out = [f"{m.frm}->{m.to} {t.name} term={m.term}"]
    if t in (MT.APP,):
        out.append(f"log={m.log_term}/{m.index} commit={m.commit}")
        if m.entries:
            out.append(f"entries={fmt_entries(m.entries)}")
    elif t is MT.APP_RESP:
        out.append(f"index={m.index}")
        if m.reject:
            out.append(f"rejected hint={m.log_term}/{m.reject_hint}")
    elif t in (MT.VOTE, MT.PRE_VOTE):
        out.append(f"log={m.log_term}/{m.index}")
    elif t in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
        out.append("rejected" if m.reject else "granted")
    elif t is MT.HEARTBEAT:
        out.append(f"commit={m.commit}")
    elif t is MT.SNAP and m.snapshot is not None:
        s = m.snapshot.meta
        out.append(f"snapshot={s.term}/{s.index} voters={sorted(s.conf_state.voters)}")
    elif t in (MT.READ_INDEX_RESP,):
        out.append(f"index={m.index}")
    if m.context:
        out.append(f"ctx={m.context.decode(errors='replace')}")
    return " ".join(out)


@dataclass
class TNode:
    core: RaftCore
    storage: MemoryStorage
    applied: int = 0


@dataclass
class Env:
    nodes: dict[int, TNode] = field(default_factory=dict)
    pending: list[Message] = field(default_factory=list)
    isolated: set[int] = field(default_factory=set)
    out: list[str] = field(default_factory=list)

    def p(self, line: str) -> None:
        self.out.append(line)

    # -- commands --------------------------------------------------------
    def cmd_cluster(self, args: list[str], kw: dict[str, str]) -> None:
        voters = [int(x) for x in kw["voters"].split(",")]
        learners = [int(x) for x in kw["learners"].split(",")] if "learners" in kw else []
        for nid in voters + learners:
            if kw.get("bootstrap") == "true":
                # The first configuration as log entries: needed when nodes
                # join later, so they can rebuild it from the log.
                st = MemoryStorage.bootstrap(voters)
            else:
                st = MemoryStorage(ConfState(frozenset(voters), frozenset(learners)))
            cfg = Config(
                id=nid,
                storage=st,
                election_tick=int(kw.get("election-tick", "10")),
                heartbeat_tick=1,
                pre_vote=kw.get("pre-vote", "true") == "true",
                check_quorum=kw.get("check-quorum", "true") == "true",
                max_inflight_msgs=int(kw.get("max-inflight", "256")),
                max_size_per_msg=int(kw.get("max-size", str(1 << 20))),
                logger=NULL_LOGGER,
            )
            self.nodes[nid] = TNode(RaftCore(cfg, random.Random(nid)), st)

    def cmd_campaign(self, args: list[str], kw: dict[str, str]) -> None:
        self.nodes[int(args[0])].core.campaign()

    def cmd_tick(self, args: list[str], kw: dict[str, str]) -> None:
        for _ in range(int(kw.get("n", "1"))):
            self.nodes[int(args[0])].core.tick()

    def cmd_propose(self, args: list[str], kw: dict[str, str]) -> None:
        try:
            p = self.nodes[int(args[0])].core.propose([a.encode() for a in args[1:]])
        except ProposalDroppedError as e:
            self.p(f"dropped: {e}")
        else:
            self.p(f"proposed term={p.term} index={p.first_index}..{p.last_index}")

    def cmd_conf_change(self, args: list[str], kw: dict[str, str]) -> None:
        kind = {
            "add-voter": ConfChangeType.ADD_VOTER,
            "add-learner": ConfChangeType.ADD_LEARNER,
            "remove": ConfChangeType.REMOVE_NODE,
        }[args[1]]
        nid, target = int(args[0]), int(args[2])
        try:
            p = self.nodes[nid].core.propose_conf_change(ConfChange(kind, target))
        except ProposalDroppedError as e:
            self.p(f"dropped: {e}")
            return
        self.p(f"proposed term={p.term} index={p.last_index}")
        if target not in self.nodes:
            st = MemoryStorage()
            cfg = Config(id=target, storage=st, logger=NULL_LOGGER)
            self.nodes[target] = TNode(RaftCore(cfg, random.Random(target)), st)

    def cmd_transfer_leader(self, args: list[str], kw: dict[str, str]) -> None:
        self.nodes[int(args[0])].core.transfer_leader(int(kw["to"]))

    def cmd_read_index(self, args: list[str], kw: dict[str, str]) -> None:
        try:
            self.nodes[int(args[0])].core.read_index(args[1].encode())
        except ProposalDroppedError as e:
            self.p(f"dropped: {e}")

    def cmd_report_snapshot(self, args: list[str], kw: dict[str, str]) -> None:
        self.nodes[int(args[0])].core.report_snapshot(int(kw["to"]), kw.get("ok") == "true")

    def cmd_compact(self, args: list[str], kw: dict[str, str]) -> None:
        nd = self.nodes[int(args[0])]
        i = nd.core.log.applied
        nd.storage.create_snapshot(i, nd.core.conf_state_at(i), f"state@{i}".encode())
        nd.storage.compact(i)
        self.p(f"compacted to {i}")

    def cmd_isolate(self, args: list[str], kw: dict[str, str]) -> None:
        self.isolated.add(int(args[0]))

    def cmd_recover(self, args: list[str], kw: dict[str, str]) -> None:
        self.isolated.clear()

    def cmd_status(self, args: list[str], kw: dict[str, str]) -> None:
        s = self.nodes[int(args[0])].core.status()
        self.p(
            f"{s.id}: {s.role.value} term={s.term} vote={s.vote} lead={s.leader} "
            f"commit={s.commit} applied={s.applied} last={s.last_index} "
            f"voters={sorted(s.voters)} learners={sorted(s.learners)}"
        )
        for nid, pr in sorted(s.progress.items()):
            flags = " paused" if pr.paused else ""
            self.p(
                f"  {nid}: {pr.state.value} match={pr.match} next={pr.next} "
                f"inflight={pr.inflight}{flags}"
            )

    def cmd_raft_log(self, args: list[str], kw: dict[str, str]) -> None:
        log = self.nodes[int(args[0])].core.log
        ents = log.slice(log.first_index(), log.last_index() + 1)
        self.p(fmt_entries(ents) if ents else "[] (log empty)")

    def cmd_process_ready(self, args: list[str], kw: dict[str, str]) -> None:
        for a in args:
            self._process_ready(int(a))

    def cmd_deliver_msgs(self, args: list[str], kw: dict[str, str]) -> None:
        for a in args:
            self._deliver(int(a))

    def cmd_stabilize(self, args: list[str], kw: dict[str, str]) -> None:
        for _ in range(1000):
            busy = False
            for nid in sorted(self.nodes):
                if self.nodes[nid].core.has_ready():
                    self._process_ready(nid)
                    busy = True
            for nid in sorted({m.to for m in self.pending}):
                self._deliver(nid)
                busy = True
            if not busy:
                return
        raise AssertionError("stabilize did not converge")

    # -- mechanics -------------------------------------------------------
    def _process_ready(self, nid: int) -> None:
        nd = self.nodes[nid]
        if not nd.core.has_ready():
            return
        rd: Ready = nd.core.ready()
        self.p(f"> {nid} handling Ready")
        if rd.soft_state is not None:
            self.p(f"  soft: role={rd.soft_state.role.value} lead={rd.soft_state.leader}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            sync = " (sync)" if rd.must_sync else ""
            self.p(f"  hard: term={hs.term} vote={hs.vote} commit={hs.commit}{sync}")
        if rd.snapshot is not None:
            s = rd.snapshot.meta
            self.p(f"  snapshot: {s.term}/{s.index} voters={sorted(s.conf_state.voters)}")
            nd.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.p(f"  entries: {fmt_entries(rd.entries)}")
            nd.storage.append(rd.entries)
        if rd.hard_state is not None:
            nd.storage.set_hard_state(rd.hard_state)
        if rd.committed_entries:
            self.p(f"  apply: {fmt_entries(rd.committed_entries)}")
        for m in rd.messages:
            self.p(f"  send: {fmt_msg(m)}")
        for m in rd.persisted_messages:
            self.p(f"  send after persist: {fmt_msg(m)}")
        for rs in rd.read_states:
            self.p(f"  read: index={rs.index} ctx={rs.context.decode(errors='replace')}")
        self.pending.extend(rd.messages)
        self.pending.extend(rd.persisted_messages)
        nd.core.advance(rd)

    def _deliver(self, nid: int) -> None:
        mine = [m for m in self.pending if m.to == nid]
        self.pending = [m for m in self.pending if m.to != nid]
        for m in mine:
            if m.to in self.isolated or m.frm in self.isolated or m.to not in self.nodes:
                self.p(f"{fmt_msg(m)} DROPPED")
                continue
            self.p(fmt_msg(m))
            self.nodes[nid].core.step(m)

    def run(self, command: str) -> list[str]:
        self.out = []
        words = command.split()
        name, rest = words[0], words[1:]
        args = [w for w in rest if "=" not in w]
        kw = dict(w.split("=", 1) for w in rest if "=" in w)
        getattr(self, "cmd_" + name.replace("-", "_"))(args, kw)
        return self.out


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: list[str]


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        comments = []
        while i < len(lines) and lines[i].startswith("#"):
            comments.append(lines[i])
            i += 1
        if i >= len(lines) or not lines[i].strip():
            blocks.append(Block(comments, "", []))
            continue
        command = lines[i]
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"expected ---- after {command!r}")
        i += 1
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append(Block(comments, command, expected))
    return blocks


def run_file(path: Path) -> tuple[list[Block], list[list[str]]]:
    env = Env()
    blocks = parse(path.read_text())
    return blocks, [env.run(b.command) if b.command else [] for b in blocks]


def render(blocks: list[Block], outputs: list[list[str]]) -> str:
    parts = []
    for b, out in zip(blocks, outputs, strict=True):
        lines = list(b.comments)
        if b.command:
            lines += [b.command, "----", *out]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.raft.transcripts")
    ap.add_argument("--rewrite", action="store_true", help="rewrite expected output in place")
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    files = args.files or sorted(TESTDATA.glob("*.txt"))
    bad = 0
    for f in files:
        blocks, outputs = run_file(f)
        new = render(blocks, outputs)
        if new != f.read_text():
            if args.rewrite:
                f.write_text(new)
                print(f"rewrote {f}")
            else:
                bad += 1
                print(f"differs: {f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
