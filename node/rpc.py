"""The one translation point between gRPC and the node.

Builds the KV service's method handlers from its descriptor. Requests arrive
as raw bytes and are parsed here, so a malformed request is INVALID_ARGUMENT
with a message (grpc's own deserializer would answer a bare INTERNAL). Our
exceptions become statuses here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from node import errors
from replication.replicator import Rejected, RejectReason

log = logging.getLogger(__name__)

LEADER_METADATA_KEY = "shardlite-leader"

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConditionFailedRemote, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StorageError, grpc.StatusCode.INTERNAL),
]

_REJECTED: dict[RejectReason, grpc.StatusCode] = {
    RejectReason.NOT_LEADER: grpc.StatusCode.UNAVAILABLE,
    RejectReason.LEADERSHIP_LOST: grpc.StatusCode.UNAVAILABLE,
    RejectReason.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    RejectReason.TRANSFER_IN_PROGRESS: grpc.StatusCode.UNAVAILABLE,
    RejectReason.QUEUE_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectReason.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    RejectReason.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    RejectReason.STORAGE_FAILED: grpc.StatusCode.INTERNAL,
    RejectReason.CONFLICT: grpc.StatusCode.ABORTED,
}


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str, str]:
    """(status, message, leader hint) for an exception raised by a handler."""
    if isinstance(exc, Rejected):
        return _REJECTED[exc.reason], f"write rejected: {exc}", exc.leader_hint
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            hint = exc.leader_hint if isinstance(exc, errors.Unavailable) else ""
            return code, str(exc), hint
    log.exception("unexpected error in a handler", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", ""


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    code, message, hint = status_for(exc)
    if hint:
        context.set_trailing_metadata(((LEADER_METADATA_KEY, hint),))
    await context.abort(code, message)


def _parse(message_type: type[Message], raw: bytes) -> Message | None:
    try:
        return message_type.FromString(raw)
    except DecodeError:
        return None


def generic_handler(
    service: ServiceDescriptor, servicer: object, message_types: Mapping[str, type[Message]]
) -> grpc.GenericRpcHandler[Any, Any]:
    """Method handlers for every method of `service`, implemented by the
    servicer's method of the same name."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type = message_types[method.input_type.name]
        response_type = message_types[method.output_type.name]
        impl = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(impl, request_type),
                response_serializer=response_type.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(impl, request_type),
                response_serializer=response_type.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _unary(
    impl: Callable[[Any, Any], Awaitable[Message]], request_type: type[Message]
) -> Callable[[bytes, Any], Awaitable[Message | None]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message | None:
        request = _parse(request_type, raw)
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed request: not a valid {request_type.DESCRIPTOR.full_name}",
            )
        try:
            return await impl(request, context)
        except Exception as exc:
            error = exc
        await _abort(context, error)
        return None

    return handle


def _streaming(
    impl: Callable[[Any, Any], AsyncIterator[Message]], request_type: type[Message]
) -> Callable[[bytes, Any], AsyncIterator[Message]]:
    async def handle(
        raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Message]:
        request = _parse(request_type, raw)
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed request: not a valid {request_type.DESCRIPTOR.full_name}",
            )
        try:
            async for response in impl(request, context):
                yield response
            return
        except Exception as exc:
            error = exc
        await _abort(context, error)

    return handle
