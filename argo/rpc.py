"""Serving protobuf services on a ``grpc.aio`` server: clear statuses, and no thread held by waiting.

An idle stream must cost the server nothing but memory: a watcher waiting for the next event, or a
site's sync stream between heartbeats, holds no thread (a threaded server gives each open call a
worker, so a viewer's idle streams once used up the pool and every other call waited). The server
runs on one event loop; a method's database work runs in a bounded pool of threads (``Call.run``),
which a call holds only while it queries. Methods written as plain functions (the unary ones, and
``Submit``, which reads its request stream) run whole in that pool; streaming methods are async
generators and wait on the loop. What a method knows of its call is a ``Call``, plain values that
are safe to read in a worker thread, never the aio context (which belongs to the loop).

The generated ``add_*Servicer_to_server`` helpers let gRPC parse requests, and a request that does
not parse then fails as INTERNAL ("Exception deserializing request"), which blames the server. Here
each method receives raw bytes and parses them itself, then checks them at the input boundary
(``balsam.inputs.check_message``: text lengths, NUL, numbers, enum values, sequence numbers). A
request refused there is INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for its size, naming the field.
Errors of ours map to statuses by kind (``status_of``). Every message a caller gets back is bounded
(``MAX_DETAILS``), since it travels in a header; and a refusal is logged as one line, with no
traceback: only an error of our own (INTERNAL) logs one.

Each call is authenticated here too (``balsam.argo.auth``), so every service served through
``service_handler`` is covered; the caller's principal is ``call.principal``. A unary request is
parsed first: a malformed one is refused the same way whoever sent it, and nothing is looked up
for it. A streamed request is authenticated first and its messages parsed as they come, each
refusal naming the message ("message 2 of the stream: ..."); a method marked ``checks_its_stream``
checks its stream's messages itself. A caller may hold at most
``max_streams`` response streams open at once (``StreamLimit``); the next is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from sqlalchemy.exc import DataError

from balsam.argo.auth import Authenticator, PermissionDenied, Principal, Unauthenticated, bearer
from balsam.errors import BadRequest, BalsamError, NotFound, SpecError
from balsam.inputs import InputError, InputTooLarge, check_message

log = logging.getLogger("balsam.argo.rpc")
MAX_DETAILS = 4000  # bytes of a status message (gRPC refuses headers over 8 KiB by default)
READ_TIMEOUT_S = 120.0  # the longest a method reading its request stream in a thread waits for a message


class MalformedRequest(InputError):
    """Bytes that are not the message the method takes."""


class RequestEnded(Exception):
    """The request stream a method reads in a worker thread ended under it: cancelled, or silent too long."""


class TooManyStreams(BalsamError):
    """A caller asked for one more response stream than it may hold open: RESOURCE_EXHAUSTED."""


@dataclass
class Call:
    """One call as its method sees it: who made it, with which token, from where."""

    method: str
    peer: str
    token: str
    pool: Executor = field(repr=False)
    principal: Principal | None = None  # None: the server runs without authentication

    @property
    def caller(self) -> str:
        """Whom limits count: the principal, else (no authentication) the peer's host."""
        if self.principal is not None:
            return str(self.principal)
        return self.peer.rpartition(":")[0] or self.peer

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, for the blocking work (the database) of an async method."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


class StreamLimit:
    """How many response streams each caller has open, and the most it may (only the loop's thread
    touches it, so it needs no lock)."""

    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self.open: Counter[str] = Counter()

    @contextmanager
    def hold(self, call: Call) -> Iterator[None]:
        who = call.caller
        if self.open[who] >= self.per_caller:
            raise TooManyStreams(f"{who} already has {self.open[who]} streams open, the most one caller may "
                                 f"(coordinator.max_streams_per_caller); end some first (each argo watch holds one)")  # fmt: skip
        self.open[who] += 1
        try:
            yield
        finally:
            self.open[who] -= 1
            if not self.open[who]:
                del self.open[who]


def status_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InputTooLarge | TooManyStreams):
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


async def _abort(context: grpc.aio.ServicerContext, call: Call, exc: BaseException) -> None:
    method = call.method
    code = status_of(exc)
    who = call.principal or "an unauthenticated caller"
    if isinstance(exc, grpc.RpcError | RequestEnded):  # the caller's request stream broke off: it cancelled, or its deadline passed
        log.info("%s ended by %s before its request was complete", method, who)
        await context.abort(grpc.StatusCode.CANCELLED, f"{method}: the request stream ended early")
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed", method, exc_info=exc)
        await context.abort(code, bounded(f"{method}: internal error ({type(exc).__name__}: {exc}); see the server log"))
    if isinstance(exc, DataError):
        # Validation should have refused the value first; the database's own refusal is still the caller's input.
        reason = (str(exc.orig).strip().splitlines() or ["?"])[0]
        exc = BadRequest(f"the database refused a value of the request: {reason}")
    message = bounded(str(exc))
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        log.warning("%s refused (%s) for %s from %s: %s", method, code.name, who, call.peer, message[:500])
    else:
        log.info("%s refused (%s) for %s: %s", method, code.name, who, message[:500])
    await context.abort(code, message)


def checks_its_stream(method: Callable) -> Callable:
    """Marks a method that checks the messages of its request stream itself (``check_message``),
    before anything of them is used: they reach it parsed but not checked. For ``Sites.Sync``, whose
    envelopes of events are checked by the process that applies them (``balsam.argo.syncworkers``),
    not on the server's event loop."""
    method.checks_its_stream = True
    return method


def _parser(kind: type[protobuf_message.Message], stream: bool, check: bool = True) -> Callable[[bytes], Any]:
    """Bytes -> a message of ``kind``, checked unless ``check`` is False; for a stream, each message is named by its place."""
    count = 0

    def parse(raw: bytes) -> Any:
        nonlocal count
        count += 1
        where = f"message {count} of the stream" if stream else ""
        try:
            message = kind.FromString(raw)
        except protobuf_message.DecodeError as exc:
            raise MalformedRequest(f"malformed request: not a valid {kind.DESCRIPTOR.full_name} ({exc})", where) from None
        if check:
            check_message(message, where)
        return message

    return parse


async def _parsed(raw: AsyncIterator[bytes], parse: Callable[[bytes], Any]) -> AsyncIterator[Any]:
    async for message in raw:
        yield parse(message)


def _blocking(raw: AsyncIterator[bytes], parse: Callable[[bytes], Any], loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """The request stream read from a worker thread: each next message fetched on the loop. A
    message is waited for at most ``READ_TIMEOUT_S``, so that a thread never waits for ever on a
    loop that has stopped (the process could not exit)."""
    end = object()
    while True:
        pending = asyncio.run_coroutine_threadsafe(anext(raw, end), loop)
        try:
            message = pending.result(READ_TIMEOUT_S)
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            raise RequestEnded("cancelled") from None
        except TimeoutError:
            pending.cancel()
            raise RequestEnded(f"no message for {READ_TIMEOUT_S:.0f} s") from None
        if message is end:
            return
        yield parse(message)


def service_handler(service: ServiceDescriptor, servicer: object, pool: Executor, auth: Authenticator | None = None,
                    streams: StreamLimit | None = None) -> grpc.GenericRpcHandler:  # fmt: skip
    """A handler for every method of ``service``, implemented by the servicer's method of that name
    (after authenticating the caller with ``auth``; None: no authentication, for embedding in tests).
    Plain methods run in ``pool``; async generators on the loop, counted against ``streams``."""
    handlers = {}
    for method in service.methods:
        impl = getattr(servicer, method.name)
        kind = message_factory.GetMessageClass(method.input_type)
        name = f"{service.name}.{method.name}"
        enrol = service.name == "Auth" and method.name == "Enrol"
        authenticate = None if auth is None else functools.partial(auth.authenticate, method=name, enrol=enrol)
        method_call = functools.partial(_new_call, name, pool)
        if method.server_streaming:
            if not inspect.isasyncgenfunction(impl):
                raise TypeError(f"{name} streams its replies: it must be an async generator")
            handler = _streaming(impl, kind, method_call, authenticate, method.client_streaming, streams or StreamLimit(1 << 30),
                                 check=not getattr(impl, "checks_its_stream", False))  # fmt: skip
            make = grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_stream_rpc_method_handler
        else:
            handler = _unary(impl, kind, method_call, authenticate, method.client_streaming)
            make = grpc.stream_unary_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(handler, response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _new_call(method: str, pool: Executor, context: grpc.aio.ServicerContext) -> Call:
    return Call(method=method, peer=context.peer(), token=bearer(context.invocation_metadata()), pool=pool)


async def _authenticate(call: Call, authenticate: Callable | None) -> None:
    if authenticate is not None:  # a cached lookup, else one query: in the pool
        call.principal = await call.run(authenticate, call.token)


def _serialize(reply: protobuf_message.Message | bytes) -> bytes:
    # A method may hand over a reply already encoded (Watch: the same events go to many watchers).
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def _unary(impl: Callable, kind: type, new_call: Callable, authenticate: Callable | None, streaming: bool) -> Callable:
    """A method with one reply: parse, check and authenticate, then ``impl`` in the pool."""

    async def handler(raw: Any, context: grpc.aio.ServicerContext):
        call = new_call(context)
        parse = _parser(kind, streaming)
        try:
            if streaming:
                await _authenticate(call, authenticate)
                request = _blocking(raw, parse, asyncio.get_running_loop())
            else:
                request = parse(raw)
                await _authenticate(call, authenticate)
            return await call.run(impl, request, call)
        except Exception as exc:  # noqa: BLE001 (each kind becomes its status)
            await _abort(context, call, exc)

    return handler


def _streaming(impl: Callable, kind: type, new_call: Callable, authenticate: Callable | None, streaming: bool,
               streams: StreamLimit, check: bool = True) -> Callable:  # fmt: skip
    """A method that streams its replies: an async generator, its stream counted against the caller's limit."""

    async def handler(raw: Any, context: grpc.aio.ServicerContext):
        call = new_call(context)
        parse = _parser(kind, streaming, check or not streaming)
        try:
            if streaming:
                await _authenticate(call, authenticate)
                request = _parsed(raw, parse)
            else:
                request = parse(raw)
                await _authenticate(call, authenticate)
            with streams.hold(call):
                async for reply in impl(request, call):
                    yield reply
        except Exception as exc:  # noqa: BLE001
            await _abort(context, call, exc)

    return handler
