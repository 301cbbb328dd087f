"""The one translation point between gRPC and the node.

Builds every service's method handlers from its descriptor (KV, Maintenance,
Cluster, the peer service, Faults). Requests arrive as raw bytes and are
parsed here, so a malformed request is INVALID_ARGUMENT with a message (grpc's
own deserializer would answer a bare INTERNAL). Our exceptions become
statuses here and nowhere else -- the status of a call, or one op's OpError
inside a MultiWrite or MultiGet (`op_error`), with the same code and message
the unary RPC would end with; a status relayed from another node (a request
passed on to the leader) keeps its code and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from shardlite.node import errors, logs
from shardlite.replication.replicator import MalformedPeerMessage, Rejected, RejectReason
from shardlite.v1 import kv_pb2

log = logging.getLogger(__name__)

LEADER_METADATA_KEY = "shardlite-leader"

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StorageError, grpc.StatusCode.INTERNAL),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (MalformedPeerMessage, grpc.StatusCode.INVALID_ARGUMENT),
]

_REJECTED: dict[RejectReason, grpc.StatusCode] = {
    RejectReason.NOT_LEADER: grpc.StatusCode.UNAVAILABLE,
    RejectReason.LEADERSHIP_LOST: grpc.StatusCode.UNAVAILABLE,
    RejectReason.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    RejectReason.TRANSFER_IN_PROGRESS: grpc.StatusCode.UNAVAILABLE,
    RejectReason.QUEUE_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectReason.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    RejectReason.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    # The node's disk failed: it fail-stops; another node can serve.
    RejectReason.STORAGE_FAILED: grpc.StatusCode.UNAVAILABLE,
    RejectReason.CONFLICT: grpc.StatusCode.ABORTED,
}


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str, str]:
    """(status, message, leader hint) for an exception raised by a handler."""
    if isinstance(exc, Rejected):
        return _REJECTED[exc.reason], f"replicator refused: {exc}", exc.leader_hint
    if isinstance(exc, grpc.aio.AioRpcError):  # relayed from the node we asked
        trailers: dict[str, Any] = dict(exc.trailing_metadata() or ())  # type: ignore[arg-type]
        return exc.code(), exc.details() or "", str(trailers.get(LEADER_METADATA_KEY, ""))
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            hint = exc.leader_hint if isinstance(exc, errors.Unavailable) else ""
            return code, str(exc), hint
    log.exception("unexpected error in a handler", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", ""


def op_error(exc: Exception) -> kv_pb2.OpError:
    """One op's failure inside a multi call: what the unary RPC's status would say."""
    code, message, hint = status_for(exc)
    error = kv_pb2.OpError(code=code.value[0], message=message, leader_hint=hint)
    if isinstance(exc, errors.ConditionFailed):
        error.failed_key = exc.key
        error.failed_expected = exc.expected
        error.failed_actual = exc.actual
    return error


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    code, message, hint = status_for(exc)
    trailers: list[tuple[str, str | bytes]] = [(LEADER_METADATA_KEY, hint)] if hint else []
    if isinstance(exc, errors.ConditionFailed):
        # Which condition, so a client can say it without parsing the message.
        # Metadata text must be printable ASCII (a key with a control character
        # or a non-ASCII letter made the whole answer INTERNAL "Invalid
        # metadata"): the key always goes as UTF-8 bytes in the -bin trailer,
        # and as text too when it can.
        trailers.append(("shardlite-condition-key-bin", exc.key.encode("utf-8")))
        if _printable_ascii(exc.key):
            trailers.append(("shardlite-condition-key", exc.key))
        trailers += [
            ("shardlite-condition-expected", str(exc.expected)),
            ("shardlite-condition-actual", str(exc.actual)),
        ]
    if trailers:
        context.set_trailing_metadata(tuple(trailers))
    await context.abort(code, message)


def _printable_ascii(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def _parse(message_type: type[Message], raw: bytes) -> Message | None:
    try:
        message = message_type.FromString(raw)
    except DecodeError:
        return None
    logs.note_request(message)  # its org, namespace, request id on the call's log lines
    return message


# Runs around each request (a stream: until it ends); may refuse it by raising.
Admit = Callable[[], contextlib.AbstractContextManager[None]]
# (service, method, status code name, seconds) of every call served: node/metrics.py.
Observe = Callable[[str, str, str, float], None]
# (method full name, the parsed request -- None for a client stream -- and the
# call's context): raises to refuse the call (node/auth.py).
Authorize = Callable[[str, Message | None, Any], None]


def _admit_all() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def generic_handler(
    service: ServiceDescriptor,
    servicer: object,
    admit: Admit = _admit_all,
    observe: Observe | None = None,
    authorize: Authorize | None = None,
    stall_seconds: float | None = None,
) -> grpc.GenericRpcHandler[Any, Any]:
    """Method handlers for every method of `service`, implemented by the
    servicer's method of the same name. `admit` holds each request's place and
    may refuse it (a node that fail-stopped refuses everything at once, an
    overloaded one what is beyond its limit); `authorize`, when given, runs
    before it with the parsed request; `observe` hears every call's status and
    duration. A server stream whose caller takes no message for
    `stall_seconds` is ended RESOURCE_EXHAUSTED (a stalled reader holds its
    slot, not the node's memory)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type = _message_class(method.input_type)
        serialize = _message_class(method.output_type).SerializeToString
        impl = getattr(servicer, method.name)
        gate = _gate(method.full_name, admit, authorize)
        if method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                _observed(
                    service.name, method.name, observe, _client_streaming(impl, request_type, gate)
                ),
                response_serializer=serialize,
            )
        elif method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: bidirectional streams")
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _observed(
                    service.name,
                    method.name,
                    observe,
                    _streaming(impl, request_type, gate, stall_seconds),
                ),
                response_serializer=serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _observed(service.name, method.name, observe, _unary(impl, request_type, gate)),
                response_serializer=serialize,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _observed(service: str, method: str, observe: Observe | None, handle: Handler) -> Handler:
    """`handle` with the call's log context bound (node/logs.py) while it runs;
    its status and duration told to `observe`, and a failure logged."""
    name = f"{service}/{method}"

    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = "UNKNOWN"
        with logs.request_context(name):
            try:
                result = await handle(request, context)
                code = _code_name(context)
                return result
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code_name(context, "UNKNOWN")  # an abort carries its status
                raise
            finally:
                seconds = time.perf_counter() - started
                if code != "OK":
                    _log_failure(code, context, seconds)
                if observe is not None:
                    observe(service, method, code, seconds)

    return observed


# A failed call's line: a fault of ours is a warning; the node unable to serve
# now (an election, shutting down) is worth a line; a caller's mistake or an
# overload (shed by the thousand) only at debug -- the metrics count them all.
_FAILURE_LEVELS = {
    "INTERNAL": logging.WARNING,
    "UNKNOWN": logging.WARNING,
    "DATA_LOSS": logging.WARNING,
    "UNAVAILABLE": logging.INFO,
}


def _log_failure(code: str, context: grpc.aio.ServicerContext[Any, Any], seconds: float) -> None:
    level = _FAILURE_LEVELS.get(code, logging.DEBUG)
    if log.isEnabledFor(level):
        details = context.details()
        text = details.decode(errors="replace") if isinstance(details, bytes) else details
        log.log(
            level,
            "request failed",
            extra={"code": code, "details": (text or "")[:300], "duration_s": round(seconds, 4)},
        )


def _code_name(context: grpc.aio.ServicerContext[Any, Any], default: str = "OK") -> str:
    code: Any = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(code, str(code))  # grpc versions differ: an int or a tuple


_CODE_NAMES: dict[Any, str] = {
    **{c.value[0]: c.name for c in grpc.StatusCode},
    **{c.value: c.name for c in grpc.StatusCode},
}


# What runs around a handler: (the request or None, the context) -> its place.
Gate = Callable[[Message | None, Any], contextlib.AbstractContextManager[None]]


def _gate(method: str, admit: Admit, authorize: Authorize | None) -> Gate:
    if authorize is None:
        return lambda request, context: admit()

    def gate(request: Message | None, context: Any) -> contextlib.AbstractContextManager[None]:
        authorize(method, request, context)  # who may ask comes before what the node can do
        return admit()

    return gate


def _message_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = GetMessageClass(descriptor)
    return cls


async def _malformed(
    context: grpc.aio.ServicerContext[Any, Any], request_type: type[Message]
) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"malformed request: not a valid {request_type.DESCRIPTOR.full_name}",
    )


def _unary(
    impl: Callable[[Any, Any], Awaitable[Message]], request_type: type[Message], gate: Gate
) -> Callable[[bytes, Any], Awaitable[Message | None]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message | None:
        request = _parse(request_type, raw)
        if request is None:
            await _malformed(context, request_type)
        try:
            with gate(request, context):
                return await impl(request, context)
        except Exception as exc:
            error = exc
        await _abort(context, error)
        return None

    return handle


def _client_streaming(
    impl: Callable[[Any, Any], Awaitable[Message]], request_type: type[Message], gate: Gate
) -> Callable[[AsyncIterator[bytes], Any], Awaitable[Message | None]]:
    async def handle(
        raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message | None:
        async def requests() -> AsyncIterator[Message]:
            async for raw in raw_requests:
                request = _parse(request_type, raw)
                if request is None:
                    raise errors.InvalidArgument(
                        f"malformed request: not a valid {request_type.DESCRIPTOR.full_name}"
                    )
                yield request

        try:
            with gate(None, context):
                return await impl(requests(), context)
        except Exception as exc:
            error = exc
        await _abort(context, error)
        return None

    return handle


def _streaming(
    impl: Callable[[Any, Any], AsyncIterator[Message]],
    request_type: type[Message],
    gate: Gate,
    stall_seconds: float | None,
) -> Callable[[bytes, Any], Awaitable[None]]:
    """A server stream written with context.write, not handed to grpc as an
    async generator: grpc logs an ERROR traceback (ExecuteBatchError) for every
    message a generator yields after the caller cancelled or its deadline
    passed. Here such a write ends the stream quietly."""

    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        request = _parse(request_type, raw)
        if request is None:
            await _malformed(context, request_type)
        place = contextlib.ExitStack()
        try:
            place.enter_context(gate(request, context))
        except Exception as exc:
            await _abort(context, exc)
            return
        responses = impl(request, context)
        try:
            async for response in responses:
                if _caller_gone(context):
                    return  # nothing to answer, nothing to log
                try:
                    await asyncio.wait_for(context.write(response), stall_seconds)
                except TimeoutError:
                    raise errors.ResourceExhausted(
                        f"the stream's reader took no message for {stall_seconds:g}s (the "
                        "node's bound on a stalled stream): resume after the last one received"
                    ) from None
                except Exception as exc:
                    # A send fails only once the call is over (cancelled, its
                    # deadline passed, the connection dropped), sometimes before
                    # the server side has noticed: nobody is left to answer.
                    log.debug("stream ended by the caller: %s", exc)
                    return
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        finally:
            place.close()
            await _close(responses)
        await _abort(context, error)

    return handle


def _caller_gone(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """The caller cancelled, or its deadline passed: the stream is over."""
    if context.done() or context.cancelled():
        return True
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


async def _close(responses: AsyncIterator[Message]) -> None:
    aclose = getattr(responses, "aclose", None)
    if aclose is not None:
        await aclose()
