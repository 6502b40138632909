"""Serving protobuf services with clear statuses for bad requests and for our errors.

The generated ``add_*Servicer_to_server`` helpers let gRPC parse requests, and a request that does
not parse then fails as INTERNAL ("Exception deserializing request"), which blames the server. Here
each method receives raw bytes and parses them itself, then checks them at the input boundary
(``balsam.inputs.check_message``: text lengths, NUL, numbers, enum values, sequence numbers). A
request refused there is INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for its size, naming the field.
Errors of ours map to statuses by kind (``status_of``). Every message a caller gets back is bounded
(``MAX_DETAILS``), since it travels in a header; and a refusal is logged as one line, with no
traceback: only an error of our own (INTERNAL) logs one.

Each call is authenticated here too (``balsam.argo.auth``), so every service served through
``service_handler`` is covered; the caller's principal is on ``context.argo_principal``. A unary
request is parsed first: a malformed one is refused the same way whoever sent it, and nothing is
looked up for it. A streamed request is authenticated first and its messages parsed as they come,
each refusal naming the message ("message 2 of the stream: ...").
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
from sqlalchemy.exc import DataError

from balsam.argo.auth import Authenticator, PermissionDenied, Unauthenticated, bearer
from balsam.errors import BadRequest, BalsamError, NotFound, SpecError
from balsam.inputs import InputError, InputTooLarge, check_message

log = logging.getLogger("balsam.argo.rpc")
MAX_DETAILS = 4000  # bytes of a status message (gRPC refuses headers over 8 KiB by default)


class MalformedRequest(InputError):
    """Bytes that are not the message the method takes."""


def status_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InputTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, SpecError | BadRequest | InputError | DataError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, BalsamError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def bounded(message: str, limit: int = MAX_DETAILS) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary."""
    data = message.encode("utf-8", "replace")
    if len(data) <= limit:
        return message
    return data[: limit - 40].decode("utf-8", "ignore") + f"... ({len(data)} bytes in all)"


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    code = status_of(exc)
    who = getattr(context, "argo_principal", None) or "an unauthenticated caller"
    if isinstance(exc, grpc.RpcError):  # the caller's request stream broke off: it cancelled, or its deadline passed
        log.info("%s ended by %s before its request was complete", method, who)
        context.abort(grpc.StatusCode.CANCELLED, f"{method}: the request stream ended early")
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
        context.abort(code, bounded(f"{method}: internal error ({type(exc).__name__}: {exc}); see the server log"))
    if isinstance(exc, DataError):
        # Validation should have refused the value first; the database's own refusal is still the caller's input.
        reason = (str(exc.orig).strip().splitlines() or ["?"])[0]
        exc = BadRequest(f"the database refused a value of the request: {reason}")
    message = bounded(str(exc))
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        log.warning("%s refused (%s) for %s from %s: %s", method, code.name, who, context.peer(), message[:500])
    else:
        log.info("%s refused (%s) for %s: %s", method, code.name, who, message[:500])
    context.abort(code, message)


def _parser(kind: type[protobuf_message.Message], stream: bool) -> Callable[[bytes], Any]:
    """Bytes -> a checked message of ``kind``; for a stream, each message is named by its place."""
    count = 0

    def parse(raw: bytes) -> Any:
        nonlocal count
        count += 1
        where = f"message {count} of the stream" if stream else ""
        try:
            message = kind.FromString(raw)
        except protobuf_message.DecodeError as exc:
            raise MalformedRequest(f"malformed request: not a valid {kind.DESCRIPTOR.full_name} ({exc})", where) from None
        check_message(message, where)
        return message

    return parse


def service_handler(service: ServiceDescriptor, servicer: object, auth: Authenticator | None = None) -> grpc.GenericRpcHandler:
    """A handler for every method of ``service``, implemented by the servicer's method of that name
    (after authenticating the caller with ``auth``; None: no authentication, for embedding in tests)."""
    handlers = {}
    for method in service.methods:
        impl = getattr(servicer, method.name)
        kind = message_factory.GetMessageClass(method.input_type)
        name = f"{service.name}.{method.name}"
        enrol = service.name == "Auth" and method.name == "Enrol"
        call = _call(impl, kind, name, None if auth is None else functools.partial(auth.authenticate, method=name, enrol=enrol),
                     method.client_streaming)  # fmt: skip
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(_stream_out(call, name), response_serializer=_serialize)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(_unary_out(call, name), response_serializer=_serialize)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(_stream_out(call, name), response_serializer=_serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary_out(call, name), response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _call(impl: Callable, kind: type, name: str, authenticate: Callable | None, streaming: bool) -> Callable:
    """Parse, check and authenticate, then run ``impl``: every refusal raised where ``_unary_out``
    or ``_stream_out`` turns it into its status (an abort raised inside a parsing generator would be
    caught again, as INTERNAL, by the method that iterates it)."""

    def call(raw: bytes | Iterator[bytes], context: grpc.ServicerContext):
        parse = _parser(kind, streaming)
        if streaming:
            _authenticate(context, authenticate)
            request = map(parse, raw)
        else:
            request = parse(raw)
            _authenticate(context, authenticate)
        return impl(request, context)

    return call


def _authenticate(context: grpc.ServicerContext, authenticate: Callable | None) -> None:
    if authenticate is not None:
        context.argo_principal = authenticate(bearer(context))  # type: ignore[attr-defined]


def _serialize(reply: protobuf_message.Message) -> bytes:
    return reply.SerializeToString()


def _unary_out(call: Callable, name: str) -> Callable:
    def handler(raw: Any, context: grpc.ServicerContext):
        try:
            return call(raw, context)
        except Exception as exc:  # noqa: BLE001 (each kind becomes its status)
            _abort(context, name, exc)

    return handler


def _stream_out(call: Callable, name: str) -> Callable:
    def handler(raw: Any, context: grpc.ServicerContext):
        try:
            yield from call(raw, context)
        except Exception as exc:  # noqa: BLE001
            _abort(context, name, exc)

    return handler
