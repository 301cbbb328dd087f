"""The client side of node/auth.py: a bearer token sent on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

METADATA_KEY = "authorization"  # node/auth.py's, repeated: clients need not import the node

Metadata = tuple[tuple[str, str], ...]


def metadata(token: str | None) -> Metadata:
    """The metadata that carries `token` (none without one)."""
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


def _with_token(details: grpc.ClientCallDetails, extra: Metadata) -> grpc.ClientCallDetails:
    return _CallDetails(
        details.method,
        details.timeout,
        (*(details.metadata or ()), *extra),
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the token's metadata to every call of a sync channel, whatever
    stub makes it (grpc.intercept_channel)."""

    def __init__(self, token: str) -> None:
        self._metadata = metadata(token)

    def _go(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._metadata), request)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._go(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._go(continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._go(continuation, details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._go(continuation, details, requests)


def channel_with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """`channel`, sending `token` on every call (the channel itself without one)."""
    return grpc.intercept_channel(channel, BearerInterceptor(token)) if token else channel


def _with_token_aio(details: grpc.aio.ClientCallDetails, extra: Metadata) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AsyncBearer:
    def __init__(self, token: str) -> None:
        self._metadata = metadata(token)


class _AsyncUnaryUnary(_AsyncBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token_aio(details, self._metadata), request)


class _AsyncUnaryStream(_AsyncBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token_aio(details, self._metadata), request)


class _AsyncStreamUnary(_AsyncBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token_aio(details, self._metadata), requests)


class _AsyncStreamStream(_AsyncBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token_aio(details, self._metadata), requests)


def aio_interceptors(token: str | None) -> list[Any] | None:
    """Interceptors that add `token` to every call of a grpc.aio channel
    (None without a token: no interception, no cost)."""
    if not token:
        return None
    return [
        _AsyncUnaryUnary(token),
        _AsyncUnaryStream(token),
        _AsyncStreamUnary(token),
        _AsyncStreamStream(token),
    ]
