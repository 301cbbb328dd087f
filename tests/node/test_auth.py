"""Tokens scoped to orgs on the client API (issue 13, "Authentication and org
isolation"): with `--auth-tokens`, a call without a valid token is
UNAUTHENTICATED; an org outside the token, a write with a read-only token, an
admin RPC without an admin token are PERMISSION_DENIED -- with the same answer
whether the org, its namespaces or the key exist or not. Health and
reflection stay open; the tokens file is reread when it changes; no token is
ever written to the node's log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shardlite.node import auth, certs
from shardlite.node.async_client import AsyncClient
from shardlite.node.bearer import metadata
from shardlite.node.client import Client, ClientError, tls_credentials
from shardlite.v1 import frame_pb2, kv_pb2, raft_pb2
from tests.harness import NodeProcess, wait_until
from tests.node.auth_tokens import Tokens, standard_tokens

KV = kv_pb2.DESCRIPTOR.services_by_name["KV"]
MAINTENANCE = kv_pb2.DESCRIPTOR.services_by_name["Maintenance"]
CLUSTER = raft_pb2.DESCRIPTOR.services_by_name["Cluster"]
CLIENT_SERVICES = (KV, MAINTENANCE, CLUSTER)
ADMIN_METHODS = [(s, m.name) for s in (MAINTENANCE, CLUSTER) for m in s.methods]

Answer = tuple[grpc.StatusCode, str]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Tokens]]:
    """One node with auth on; orgs a, b and c each hold ns/k."""
    base = tmp_path_factory.mktemp("auth")
    tokens = standard_tokens(base / "tokens.json")
    node = NodeProcess(
        data_dir=base / "n1",
        args=["--auth-tokens", str(tokens.path)],
        log_path=base / "n1.log",
    )
    try:
        node.start()
        with Client(node.endpoint, token=tokens["admin"], namespace="ns") as admin:
            for org in ("a", "b", "c"):
                admin.put("k", b"v-" + org.encode(), org=org)
        yield node, tokens
    finally:
        node.kill()


def call(
    endpoint: str,
    service: Any,
    method: str,
    request: Message | None = None,
    *,
    token: str | None = None,
    header: str | None = None,
) -> Answer | Message:
    """One call by its descriptor: its first response, or (status, details)."""
    descriptor = service.methods_by_name[method]
    response_type = GetMessageClass(descriptor.output_type)
    if request is None:
        request = GetMessageClass(descriptor.input_type)()
    md = metadata(token) if header is None else (("authorization", header),)
    path = f"/{service.full_name}/{method}"
    with grpc.insecure_channel(endpoint) as channel:
        try:
            if descriptor.client_streaming:
                stream_unary = channel.stream_unary(
                    path, type(request).SerializeToString, response_type.FromString
                )
                answer: Message = stream_unary(iter([request]), metadata=md, timeout=10)
                return answer
            if descriptor.server_streaming:
                unary_stream = channel.unary_stream(
                    path, type(request).SerializeToString, response_type.FromString
                )
                for first in unary_stream(request, metadata=md, timeout=10):
                    return first  # type: ignore[no-any-return]
                return response_type()
            unary = channel.unary_unary(
                path, type(request).SerializeToString, response_type.FromString
            )
            return unary(request, metadata=md, timeout=10)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            if not isinstance(exc, grpc.Call):
                raise
            return exc.code(), exc.details() or ""


def failure(*args: Any, **kwargs: Any) -> Answer:
    """`call`'s answer, which must be a failure."""
    answer = call(*args, **kwargs)
    assert isinstance(answer, tuple), f"the call succeeded: {answer}"
    return answer


def status_of(answer: Answer | Message) -> grpc.StatusCode:
    return answer[0] if isinstance(answer, tuple) else grpc.StatusCode.OK


def org_requests(org: str, key: str = "k") -> dict[str, Message]:
    """Every KV call naming `org`, by method."""
    put = kv_pb2.PutRequest(org=org, namespace="ns", key=key, value=b"x")
    return {
        "Put": put,
        "Delete": kv_pb2.DeleteRequest(org=org, namespace="ns", key=key),
        "Batch": kv_pb2.BatchRequest(
            org=org, namespace="ns", ops=[frame_pb2.Op(put=frame_pb2.PutOp(key=key, value=b"x"))]
        ),
        "Get": kv_pb2.GetRequest(org=org, namespace="ns", key=key),
        "List": kv_pb2.ListRequest(org=org, namespace="ns", prefix=key),
        "ListNamespaces": kv_pb2.ListNamespacesRequest(org=org),
        "Subscribe": kv_pb2.SubscribeRequest(from_index=1, orgs=[org]),
    }


# -- who are you ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "method"),
    [(s, m.name) for s in CLIENT_SERVICES for m in s.methods],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_every_client_rpc_without_a_token_is_unauthenticated(
    secured: tuple[NodeProcess, Tokens], service: Any, method: str
) -> None:
    node, _ = secured
    code, details = failure(node.endpoint, service, method)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in details


@pytest.mark.parametrize(
    "header",
    ["Bearer slt_not-a-token-of-this-node", "Bearer ", "Basic dXNlcjpwYXNz", "slt_bare"],
)
def test_a_bad_token_is_unauthenticated_with_what_to_fix(
    secured: tuple[NodeProcess, Tokens], header: str
) -> None:
    node, tokens = secured
    for method in ("Get", "Put", "Status"):
        request = org_requests("a").get(method)
        code, details = failure(node.endpoint, KV, method, request, header=header)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "token is not valid" in details or "must read 'Bearer <token>'" in details
    # A token's digest is not the token.
    digest = auth.token_digest(tokens["alpha"]).hex()
    code, _ = failure(node.endpoint, KV, "Status", header=f"Bearer {digest}")
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_stay_open(secured: tuple[NodeProcess, Tokens]) -> None:
    node, _ = secured
    with grpc.insecure_channel(node.endpoint) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        listed = {s.name for s in next(answers).list_services_response.service}
    assert "shardlite.v1.KV" in listed


# -- what may you do --------------------------------------------------------------


def test_own_org_works_for_every_kv_call(secured: tuple[NodeProcess, Tokens]) -> None:
    node, tokens = secured
    for method, request in org_requests("a", key="own").items():
        answer = call(node.endpoint, KV, method, request, token=tokens["alpha"])
        assert status_of(answer) == grpc.StatusCode.OK, (method, answer)
    assert status_of(call(node.endpoint, KV, "Status", token=tokens["alpha"])) == (
        grpc.StatusCode.OK
    )


@pytest.mark.parametrize("method", list(org_requests("x")))
def test_a_foreign_org_is_denied_the_same_whether_it_exists_or_not(
    secured: tuple[NodeProcess, Tokens], method: str
) -> None:
    """Org b exists (ns/k is there), org nob never did, and b/ns/missing is no
    key: the same status and the same words (but the org's name) each time."""
    node, tokens = secured
    answers = {
        case: call(node.endpoint, KV, method, org_requests(org, key)[method], token=tokens[who])
        for case, (org, key, who) in {
            "exists": ("b", "k", "alpha"),
            "missing key": ("b", "missing", "alpha"),
            "no such org": ("nob", "k", "alpha"),
            "pair, exists": ("b", "k", "pair"),
        }.items()
    }
    for answer in answers.values():
        assert status_of(answer) == grpc.StatusCode.PERMISSION_DENIED, answers
    words = {
        case: answer[1].replace("'nob'", "'b'").replace("'pair'", "'alpha'")  # type: ignore[index]
        for case, answer in answers.items()
    }
    assert len(set(words.values())) == 1, words
    assert "may not use org 'b'" in words["exists"]


def test_the_default_org_is_an_org_like_any_other(secured: tuple[NodeProcess, Tokens]) -> None:
    node, tokens = secured
    code, details = failure(
        node.endpoint, KV, "Get", org_requests("")["Get"], token=tokens["alpha"]
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "the default org" in details
    ok = call(node.endpoint, KV, "Get", org_requests("")["Get"], token=tokens["wide"])
    assert status_of(ok) == grpc.StatusCode.OK


def test_a_read_only_token_reads_and_never_writes(secured: tuple[NodeProcess, Tokens]) -> None:
    node, tokens = secured
    requests = org_requests("a")
    for method in ("Put", "Delete", "Batch"):
        code, details = failure(node.endpoint, KV, method, requests[method], token=tokens["reader"])
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "read-only" in details
    put = kv_pb2.PutRequest(org="a", namespace="ns", key="k", value=b"x")
    multi = kv_pb2.MultiWriteRequest(writes=[kv_pb2.WriteRequest(put=put)])
    code, _ = failure(node.endpoint, KV, "MultiWrite", multi, token=tokens["reader"])
    assert code == grpc.StatusCode.PERMISSION_DENIED
    with Client(node.endpoint, token=tokens["reader"], org="a", namespace="ns") as reader:
        entry = reader.get("k")
        assert entry is not None
        assert entry.value == b"v-a"
        assert reader.namespaces() == ["ns"]
        assert [e.key for e in reader.list("")][:1] == ["k"]


@pytest.mark.parametrize(
    ("service", "method"), ADMIN_METHODS, ids=lambda v: v if isinstance(v, str) else v.name
)
def test_admin_rpcs_need_an_admin_token(
    secured: tuple[NodeProcess, Tokens], service: Any, method: str
) -> None:
    node, tokens = secured
    for who in ("alpha", "wide", "reader"):
        code, details = failure(node.endpoint, service, method, token=tokens[who])
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "admin RPC" in details
        assert f"{service.full_name}.{method}" in details
    # Past the check, the admin token gets the RPC's own answer: a single node
    # has no cluster (FAILED_PRECONDITION); Backup streams its manifest.
    answer = call(node.endpoint, service, method, token=tokens["admin"])
    if service is CLUSTER:
        assert status_of(answer) == grpc.StatusCode.FAILED_PRECONDITION, answer
    else:
        assert isinstance(answer, kv_pb2.BackupChunk)
        assert answer.manifest


def test_multi_calls_deny_each_foreign_op_alone(secured: tuple[NodeProcess, Tokens]) -> None:
    """Each op outside the token fails alone with PERMISSION_DENIED (the same
    whether its org or key exists); the token's own ops are served."""
    node, tokens = secured
    puts = [
        kv_pb2.PutRequest(org=org, namespace="multi", key="m", value=b"x")
        for org in ("a", "b", "nob")
    ]
    written = call(
        node.endpoint,
        KV,
        "MultiWrite",
        kv_pb2.MultiWriteRequest(writes=[kv_pb2.WriteRequest(put=p) for p in puts]),
        token=tokens["alpha"],
    )
    assert isinstance(written, kv_pb2.MultiWriteResponse)
    assert written.results[0].WhichOneof("result") == "put"
    denied = [r.error for r in written.results[1:]]
    assert [e.code for e in denied] == [grpc.StatusCode.PERMISSION_DENIED.value[0]] * 2
    with Client(node.endpoint, token=tokens["admin"], namespace="multi") as admin:
        assert admin.get("m", org="b") is None  # nothing written for the foreign ops
        assert admin.namespaces(org="nob") == []
    gets = [("a", "k"), ("b", "k"), ("b", "missing"), ("nob", "k")]
    read = call(
        node.endpoint,
        KV,
        "MultiGet",
        kv_pb2.MultiGetRequest(
            gets=[kv_pb2.GetRequest(org=o, namespace="ns", key=k) for o, k in gets]
        ),
        token=tokens["alpha"],
    )
    assert isinstance(read, kv_pb2.MultiGetResponse)
    assert read.results[0].get.value == b"v-a"
    errors = [r.error for r in read.results[1:]]
    assert {e.code for e in errors} == {grpc.StatusCode.PERMISSION_DENIED.value[0]}
    assert errors[0] == errors[1]  # key there or not: the same error
    assert errors[2].message.replace("'nob'", "'b'") == errors[0].message


def test_the_async_client_sends_its_token_on_every_call(
    secured: tuple[NodeProcess, Tokens],
) -> None:
    node, tokens = secured

    async def run() -> None:
        async with AsyncClient(
            node.endpoint, org="a", namespace="async", token=tokens["alpha"]
        ) as kv:
            written = await asyncio.gather(*(kv.put(f"k{i}", b"v") for i in range(20)))
            assert all(w.version == w.index > 0 for w in written)  # each written
            entry = await kv.get("k3")
            assert entry is not None
            assert entry.version == written[3].version
            assert (await kv.status()).node_id == "n1"
            # Coalesced with the token's own ops, a foreign op fails alone.
            mine, foreign = await asyncio.gather(
                kv.put("mine", b"v"), kv.put("theirs", b"v", org="b"), return_exceptions=True
            )
            assert not isinstance(mine, BaseException)
            assert isinstance(foreign, ClientError)
            assert foreign.code == grpc.StatusCode.PERMISSION_DENIED
        async with AsyncClient(node.endpoint, org="a", namespace="async") as anonymous:
            with pytest.raises(ClientError) as refused:
                await anonymous.put("k", b"v")
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(run())


def test_the_cli_sends_the_token_from_its_flag_or_the_environment(
    secured: tuple[NodeProcess, Tokens],
) -> None:
    node, tokens = secured
    base = [sys.executable, "-m", "shardlite.node.cli"]
    where = ["--endpoint", node.endpoint, "--org", "a", "-n", "cli"]
    put = subprocess.run(
        [*base, "put", *where, "--token", tokens["alpha"], "key", "value"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0, put.stderr
    got = subprocess.run(
        [*base, "get", *where, "key"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), "SHARDLITE_TOKEN": tokens["reader"]},
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == "value"
    refused = subprocess.run(
        [*base, "get", *where, "key"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert refused.returncode == 2
    assert "UNAUTHENTICATED" in refused.stderr


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SHARDLITE_TOKEN"}


# -- the tokens file ----------------------------------------------------------------


def test_tokens_are_added_and_revoked_without_a_restart(
    secured: tuple[NodeProcess, Tokens],
) -> None:
    node, tokens = secured
    made = subprocess.run(
        [
            sys.executable, "-m", "shardlite.node.cli", "token", "create",
            "--name", "late", "--orgs", "c", "--auth-tokens", str(tokens.path),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    late = made.stdout.strip()
    assert late.startswith(auth.TOKEN_PREFIX)
    assert late not in tokens.path.read_text()

    def answers(token: str) -> grpc.StatusCode:
        return status_of(call(node.endpoint, KV, "Get", org_requests("c")["Get"], token=token))

    wait_until(lambda: answers(late) == grpc.StatusCode.OK, 10, "the new token to be accepted")
    # A file that no longer parses is not taken: the tokens in force stay.
    good = tokens.path.read_text()
    tokens.path.write_text(good[: len(good) // 2])

    def refused() -> bool:
        assert answers(late) == grpc.StatusCode.OK  # a call makes the node look at the file
        return "not reloaded" in node.log_tail(200)

    wait_until(refused, 10, "the broken file to be refused")
    tokens.path.write_text(good)
    revoked = subprocess.run(
        [
            sys.executable, "-m", "shardlite.node.cli", "token", "revoke",
            "--name", "late", "--auth-tokens", str(tokens.path),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    wait_until(
        lambda: answers(late) == grpc.StatusCode.UNAUTHENTICATED, 10, "the token to be revoked"
    )
    assert answers(tokens["pair"]) == grpc.StatusCode.OK


def test_token_create_prints_the_token_once_and_an_entry_of_its_digest(tmp_path: Path) -> None:
    made = subprocess.run(
        [
            sys.executable, "-m", "shardlite.node.cli", "token", "create",
            "--name", "ops", "--orgs", "*", "--admin",
        ],
        capture_output=True, text=True, timeout=60, env=_env_without_tokens_file(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token, line = made.stdout.splitlines()
    entry = json.loads(line)
    assert entry == {
        "name": "ops",
        "sha256": auth.token_digest(token).hex(),
        "orgs": ["*"],
        "read_only": False,
        "admin": True,
    }
    assert token not in line
    (tmp_path / "t.json").write_text(json.dumps({"tokens": [entry]}))
    file = auth.TokenFile(tmp_path / "t.json")
    assert file.authenticate([("authorization", f"Bearer {token}")]).admin


def _env_without_tokens_file() -> dict[str, str]:
    return {k: v for k, v in _env().items() if k != "SHARDLITE_AUTH_TOKENS"}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"tokens": [{"name": "x", "sha256": "abc", "orgs": ["a"]}]}', "64 hex digits"),
        ('{"tokens": [{"name": "x", "sha256": "' + "0" * 64 + '", "orgs": ["a/b"]}]}', "invalid"),
        (
            '{"tokens": [{"name": "x", "sha256": "'
            + "0" * 64
            + '", "orgs": [], "readonly": true}]}',
            "unknown fields ['readonly']",
        ),
    ],
)
def test_a_node_refuses_a_tokens_file_it_cannot_use(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    started = subprocess.run(
        [
            sys.executable, "-m", "shardlite.node.cli", "node", "--data", str(tmp_path / "n1"),
            "--listen", "127.0.0.1:0", "--auth-tokens", str(path),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 2
    assert says in started.stderr
    assert str(path) in started.stderr


def test_no_token_ever_reaches_the_log(secured: tuple[NodeProcess, Tokens]) -> None:
    node, tokens = secured
    wrong = auth.new_token()
    call(node.endpoint, KV, "Get", org_requests("b")["Get"], token=tokens["alpha"])
    call(node.endpoint, KV, "Get", org_requests("a")["Get"], token=wrong)
    log = node.log_path.read_text(errors="replace")
    for token in [*tokens.tokens.values(), wrong]:
        assert token not in log
        assert token[len(auth.TOKEN_PREFIX) :][:12] not in log


def test_tokens_travel_over_tls_too(tmp_path: Path) -> None:
    """Tokens and TLS together: TLS says who the node is and hides the token
    on the wire; the token says what the caller may do."""
    pki = tmp_path / "pki"
    certs.issue(pki, "n1", ["127.0.0.1"])
    tokens = standard_tokens(tmp_path / "tokens.json")
    node = NodeProcess(
        data_dir=tmp_path / "n1",
        args=[
            "--auth-tokens", str(tokens.path),
            "--tls-cert", str(pki / "n1.pem"), "--tls-key", str(pki / "n1.key"),
        ],
        log_path=tmp_path / "n1.log",
    )  # fmt: skip
    try:
        node.start()
        credentials = tls_credentials(pki / "ca.pem")
        with Client(node.endpoint, credentials=credentials, token=tokens["alpha"], org="a") as c:
            assert c.put("k", b"tls").version > 0
            with pytest.raises(ClientError) as denied:
                c.get("k", org="b")
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        with Client(node.endpoint, credentials=credentials, org="a") as anonymous:
            with pytest.raises(ClientError) as refused:
                anonymous.get("k")
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED

        async def run() -> None:
            async with AsyncClient(
                node.endpoint, credentials=credentials, token=tokens["reader"], org="a"
            ) as kv:
                entry = await kv.get("k")
                assert entry is not None
                assert entry.value == b"tls"

        asyncio.run(run())
    finally:
        node.kill()
