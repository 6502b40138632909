"""The coordinator's dashboard server: ``balsam.web.serving.HttpServer`` with the coordinator's
settings. Off loopback it serves only TLS, with the coordinator's own certificate (``--tls-dir``:
server.pem, server.key; with ``mtls``, client certificates signed by ca.pem), as gRPC does; plain
text there needs ``--insecure``.
"""

from __future__ import annotations

from balsam.argo.auth import Authenticator
from balsam.argo.config import ServerSettings, plaintext_refusal
from balsam.argo.coordinator import Coordinator
from balsam.errors import BalsamError
from balsam.web.serving import HttpServer


def web_address(settings: ServerSettings) -> str:
    """Where the dashboard listens: ``web`` when set, else loopback at the port after gRPC's ('' : off)."""
    if settings.web == "off":
        return ""
    if settings.web:
        return settings.web
    port = int(settings.address.rsplit(":", 1)[1])
    return f"127.0.0.1:{port + 1}"


class WebServer(HttpServer):
    """The dashboard, serving: ``url`` is where a browser on this host finds it."""

    def __init__(self, coordinator: Coordinator, auth: Authenticator, settings: ServerSettings, address: str) -> None:
        from balsam.argo.web.app import make_app

        refusal = plaintext_refusal(address, bool(settings.tls_dir), settings.insecure)
        if refusal:
            raise BalsamError(f"the dashboard: {refusal}")
        app = make_app(coordinator, auth, secure=bool(settings.tls_dir), max_streams=settings.coordinator.max_streams_per_caller)
        super().__init__(app, address, settings.tls_dir, settings.mtls)
