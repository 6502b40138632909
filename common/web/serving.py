"""A dashboard's HTTP server: uvicorn on an event loop in a thread of its own, beside the process's
own work (the coordinator's gRPC server, a site's agent).

It listens on a socket bound here, so that an address in use is one clear error at start-up (and a
port asked as 0 is known). With a TLS folder it serves only TLS (``server.pem``, ``server.key``;
with ``mtls``, client certificates signed by ``ca.pem`` are required). Whether plain text is
allowed on an address is the caller's decision (it knows its settings), made before this starts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from pathlib import Path

import uvicorn

from balsam.errors import BalsamError

log = logging.getLogger("balsam.web")


def bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port_number = int(port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except ValueError:
        raise BalsamError(f"the web address must be HOST:PORT, got {address!r}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port_number))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BalsamError(f"the dashboard cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


class HttpServer:
    """``app`` serving on ``address`` (TLS with the certificates in ``tls_dir`` when given) until
    ``stop``; ``url`` is where a browser on this host finds it."""

    def __init__(self, app, address: str, tls_dir: str = "", mtls: bool = False) -> None:
        self.sock = bind(address)
        self.port = self.sock.getsockname()[1]
        host = address.rpartition(":")[0] or "127.0.0.1"
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]", "::") else host
        self.url = f"{'https' if tls_dir else 'http'}://{shown}:{self.port}/"
        options = {}
        if tls_dir:
            folder = Path(tls_dir)
            options = {"ssl_certfile": str(folder / "server.pem"), "ssl_keyfile": str(folder / "server.key")}
            if mtls:
                options.update(ssl_ca_certs=str(folder / "ca.pem"), ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2, access_log=False,
                                proxy_headers=False, server_header=False, **options)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.02)
        if not self._server.started:
            self.sock.close()
            raise BalsamError(f"the dashboard did not start on {address}: {self._failed or 'see the log'}")

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self.sock]))
        except BaseException as exc:  # noqa: BLE001 (reported by the constructor, or logged)
            self._failed = exc
            log.exception("the dashboard stopped")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()
