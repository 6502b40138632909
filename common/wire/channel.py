"""One way to open a channel to the coordinator, for the site's agent and for every client.

Both ends use the same message limit (``MAX_MESSAGE_BYTES``): a channel that receives less than the
other end may send jams on the first large message, for good, since the sender resends it after
every reconnection. TLS when a CA file is given (with a client certificate for mutual TLS), and the
caller's token on every call as ``authorization: Bearer TOKEN``.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from balsam.errors import BalsamError
from balsam.private_files import read_private

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


def bearer(token: str) -> list[tuple[str, str]]:
    """The call metadata that carries ``token`` (none for an empty one)."""
    return [("authorization", f"Bearer {token}")] if token else []


def credentials(ca_file: str | Path, cert_file: str | Path | None = None, key_file: str | Path | None = None) -> grpc.ChannelCredentials:
    """TLS trusting ``ca_file``, with a client certificate when both ``cert_file`` and ``key_file`` are
    given; a private key that others can read is refused."""
    try:
        ca = Path(ca_file).read_bytes()
        cert = Path(cert_file).read_bytes() if cert_file else None
        key = read_private(Path(key_file)).encode() if key_file else None
    except FileNotFoundError as exc:
        raise BalsamError(f"TLS file {exc.filename} not found") from None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def open_channel(address: str, *, ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None, token: str = "") -> grpc.Channel:  # fmt: skip
    """A channel to ``address``: TLS with ``ca_file`` (plain text without), ``token`` sent with every call."""
    if ca_file:
        channel = grpc.secure_channel(address, credentials(ca_file, cert_file, key_file), options=OPTIONS)
    else:
        channel = grpc.insecure_channel(address, options=OPTIONS)
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor,
              grpc.StreamStreamClientInterceptor):  # fmt: skip
    """Adds the token to every call on the channel, the stubs' and raw ones alike."""

    def __init__(self, token: str) -> None:
        self.metadata = bearer(token)

    def _details(self, details):
        metadata = [*(details.metadata or ()), *self.metadata]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata) -> None:
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready, self.compression, self.metadata = getattr(details, "wait_for_ready", None), getattr(details, "compression", None), metadata


def unreachable_hint(details: str, tls: bool) -> str:
    """What a user can do about a call that found no coordinator: gRPC's own detail rarely says.

    A plain-text client at a TLS server sees only "Socket closed" (the server drops the bytes it
    cannot read as a handshake); a TLS client at the wrong authority sees an SSL error."""
    low = (details or "").lower()
    if any(word in low for word in ("ssl", "handshake", "certificate")):
        return (" (a TLS failure: is the CA given the authority that signed the server's certificate, is that certificate "
                "valid now, and does the server require a client certificate?)")  # fmt: skip
    if not tls and any(word in low for word in ("socket closed", "connection reset", "end of file", "eof")):
        return (" (this client speaks plain text; if the server serves TLS (`argo server start --tls-dir DIR`), trust its CA: "
                "--ca DIR/ca.pem, $ARGO_CA or `argo login --ca`; for a site, `balsam site start --argo-ca DIR/ca.pem`)")  # fmt: skip
    return ""
