"""Serving protobuf services with clear statuses for bad requests and for our errors.

The generated ``add_*Servicer_to_server`` helpers let gRPC parse requests, and a request that does
not parse then fails as INTERNAL ("Exception deserializing request"), which blames the server. Here
each method receives raw bytes and parses them itself: a malformed request is INVALID_ARGUMENT,
naming the expected message. Errors of ours map to statuses by kind (``status_of``).

Each call is authenticated here too (``balsam.argo.auth``), so every service served through
``service_handler`` is covered; the caller's principal is on ``context.argo_principal``. A unary
request is parsed first: a malformed one is refused the same way whoever sent it, and nothing is
looked up for it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from balsam.argo.auth import Authenticator, PermissionDenied, Unauthenticated, bearer
from balsam.errors import BadRequest, BalsamError, NotFound, SpecError

log = logging.getLogger("balsam.argo.rpc")


def status_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, SpecError | BadRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, BalsamError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    code = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
        context.abort(code, f"{method}: internal error ({type(exc).__name__}: {exc}); see the server log")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        who = getattr(context, "argo_principal", None)
        log.warning("%s refused (%s) for %s from %s: %s", method, code.name, who or "an unauthenticated caller", context.peer(), exc)
    context.abort(code, str(exc))


def _parser(kind: type[protobuf_message.Message], context: grpc.ServicerContext) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return kind.FromString(raw)
        except protobuf_message.DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: not a valid {kind.DESCRIPTOR.full_name} ({exc})")

    return parse


def service_handler(service: ServiceDescriptor, servicer: object, auth: Authenticator | None = None) -> grpc.GenericRpcHandler:
    """A handler for every method of ``service``, implemented by the servicer's method of that name
    (after authenticating the caller with ``auth``; None: no authentication, for embedding in tests)."""
    handlers = {}
    for method in service.methods:
        impl = getattr(servicer, method.name)
        if auth is not None:
            impl = _authenticated(impl, auth, method.name, enrol=service.name == "Auth" and method.name == "Enrol")
        kind = message_factory.GetMessageClass(method.input_type)
        name = f"{service.name}.{method.name}"
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(_stream_in(_stream_out(impl, name), kind), response_serializer=_serialize)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(_stream_in(_unary_out(impl, name), kind), response_serializer=_serialize)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(_unary_in(_stream_out(impl, name), kind), response_serializer=_serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary_in(_unary_out(impl, name), kind), response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _authenticated(impl: Callable, auth: Authenticator, name: str, enrol: bool) -> Callable:
    @functools.wraps(impl)
    def handler(request: Any, context: grpc.ServicerContext):
        context.argo_principal = auth.authenticate(bearer(context), name, enrol=enrol)  # type: ignore[attr-defined]
        return impl(request, context)

    return handler


def _serialize(reply: protobuf_message.Message) -> bytes:
    return reply.SerializeToString()


def _unary_in(impl: Callable, kind: type) -> Callable:
    @functools.wraps(impl)
    def handler(raw: bytes, context: grpc.ServicerContext):
        return impl(_parser(kind, context)(raw), context)

    return handler


def _stream_in(impl: Callable, kind: type) -> Callable:
    @functools.wraps(impl)
    def handler(raw_requests: Iterator[bytes], context: grpc.ServicerContext):
        parse = _parser(kind, context)
        return impl((parse(raw) for raw in raw_requests), context)

    return handler


def _unary_out(impl: Callable, name: str) -> Callable:
    @functools.wraps(impl)
    def handler(request: Any, context: grpc.ServicerContext):
        try:
            return impl(request, context)
        except Exception as exc:  # noqa: BLE001 (each kind becomes its status)
            _abort(context, name, exc)

    return handler


def _stream_out(impl: Callable, name: str) -> Callable:
    @functools.wraps(impl)
    def handler(request: Any, context: grpc.ServicerContext):
        try:
            yield from impl(request, context)
        except Exception as exc:  # noqa: BLE001
            _abort(context, name, exc)

    return handler
