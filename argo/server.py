"""The Argo server process: the gRPC services, health and reflection, and the coordinator's loop.

``argo server start`` runs ``python -m balsam.argo.server --data DIR`` detached; it holds the pid
file ``DIR/argo.pid`` while it runs and logs to ``DIR/logs/server.log``. The loop places ready tasks
(at once after a submission or a finish, else every ``placement_interval_s``) and marks sites that
fell silent as down, so their tasks are placed again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from balsam import daemon
from balsam.argo import servicers
from balsam.argo.auth import Authenticator, AuthService
from balsam.argo.config import ServerSettings, plaintext_refusal
from balsam.argo.coordinator import Coordinator
from balsam.argo.db.engine import cluster, connect
from balsam.argo.rpc import StreamLimit, service_handler
from balsam.argo.placeworker import PlacementProcess
from balsam.argo.syncworkers import SyncWorkers
from balsam.errors import BalsamError
from balsam.gcpause import settle_for_serving
from balsam.private_files import check_private, read_private
from balsam.protos import argo_pb2 as pb
from balsam.protos import auth_pb2 as apb
from balsam.wire.channel import OPTIONS

log = logging.getLogger("balsam.argo.server")
SERVICES = ("Workflows", "Monitor", "Sites", "Triggers")


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS from ``settings.tls_dir`` (None: plain text); with ``mtls``, clients must show a
    certificate signed by the same authority. Private keys readable by others are refused."""
    if not settings.tls_dir:
        return None
    folder = Path(settings.tls_dir)
    try:
        key = read_private(folder / "server.key").encode()
        cert = (folder / "server.pem").read_bytes()
        ca = (folder / "ca.pem").read_bytes() if settings.mtls else None
    except FileNotFoundError as exc:
        raise BalsamError(f"TLS folder {folder}: {exc.filename} is missing (make them with `argo certs init --dir {folder}`)") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=settings.mtls)


class RpcServer:
    """The gRPC server, started: ``grpc.aio`` on an event loop in a thread of its own, the blocking
    work of calls in a pool of ``workers`` threads (``balsam.argo.rpc``), at most ``max_streams``
    response streams open per caller.

    With ``coordinator.auth``, every call of our services must carry a valid token (health and
    reflection need none). ``port`` is the port it listens on (asked for as 0: any free one)."""

    def __init__(self, coordinator: Coordinator, address: str, credentials: grpc.ServerCredentials | None = None,
                 workers: int = 16, max_streams: int = 64) -> None:  # fmt: skip
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc")
        self.streams = StreamLimit(max_streams)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._thread.start()
        try:
            self.port = self._on_loop(self._start(coordinator, address, credentials))
        except BaseException:
            self._close()
            raise

    def _on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, coordinator: Coordinator, address: str, credentials: grpc.ServerCredentials | None) -> int:
        auth = coordinator.auth
        self._server = server = grpc.aio.server(options=OPTIONS)
        implementations = {"Workflows": servicers.WorkflowsService, "Monitor": servicers.MonitorService,
                           "Sites": servicers.SitesService, "Triggers": servicers.TriggersService}  # fmt: skip
        names = []
        for name in SERVICES:
            descriptor = pb.DESCRIPTOR.services_by_name[name]
            server.add_generic_rpc_handlers((service_handler(descriptor, implementations[name](coordinator), self.pool, auth, self.streams),))
            names.append(descriptor.full_name)
        if auth is not None:
            descriptor = apb.DESCRIPTOR.services_by_name["Auth"]
            server.add_generic_rpc_handlers((service_handler(descriptor, AuthService(auth), self.pool, auth, self.streams),))
            names.append(descriptor.full_name)
        checker = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        for name in ("", *names):
            await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError as exc:
            raise BalsamError(f"cannot listen on {address}: {exc}") from None
        if port == 0:
            raise BalsamError(f"cannot listen on {address} (in use, or not an address of this host)")
        await server.start()
        # The event feed's reader lives on this loop, as long as the server does.
        self._feed = asyncio.create_task(coordinator.feed.run(self.pool), name="event-feed")
        return port

    def stop(self, grace: float = 2.0) -> None:
        """Refuse new calls, give those under way ``grace`` seconds, then end them."""
        try:
            self._on_loop(self._server.stop(grace))
        finally:
            self._close()

    def _close(self) -> None:
        feed = getattr(self, "_feed", None)
        if feed is not None:
            self._loop.call_soon_threadsafe(feed.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)


def watch_health(coordinator: Coordinator, settings: ServerSettings, stop: threading.Event) -> None:
    """Mark sites down or stalled, and give up what they surely never started, until ``stop``
    (placement runs in a process of its own: ``balsam.argo.placeworker``)."""
    timeout_s = settings.coordinator.site_timeout_s
    while not stop.is_set():
        try:
            for change in coordinator.sites.check_health(timeout_s, coordinator.deliveries.overdue(timeout_s)):
                log.warning("%s", change)
        except Exception:  # the database restarting, a bug: log it and keep serving
            log.exception("checking the sites' health failed; retrying")
        stop.wait(min(5.0, timeout_s / 4))


def start_web(coordinator: Coordinator, auth: Authenticator, settings: ServerSettings):
    """The web dashboard beside the gRPC server (``balsam.argo.web``), or None when it is off.

    An address given (``--web``) that cannot be served stops the server with that error; the
    default one (the port after gRPC's) may be taken by something else: then a warning, and gRPC
    serves alone."""
    from balsam.argo.web.serve import WebServer, web_address

    address = web_address(settings)
    if not address:
        return None
    try:
        web = WebServer(coordinator, auth, settings, address)
    except BalsamError as exc:
        if settings.web:
            raise
        log.warning("%s; the dashboard is off (give --web HOST:PORT to choose its address)", exc)
        return None
    (settings.data / WEB_URL_FILE).write_text(web.url + "\n")
    log.info("web dashboard on %s", web.url)
    return web


WEB_URL_FILE = "web-url"  # where the running server's dashboard is (read by `argo server start` and status)


def serve(settings: ServerSettings, stop: threading.Event, ready=None) -> None:
    refusal = plaintext_refusal(settings.address, bool(settings.tls_dir), settings.insecure)
    if refusal:
        raise BalsamError(refusal)
    credentials = server_credentials(settings)  # before the database: a bad key fails fast
    if settings.owner_token_file.exists():
        check_private(settings.owner_token_file)
    from balsam.argo.web.serve import web_address

    if web_address(settings):
        refusal = plaintext_refusal(web_address(settings), bool(settings.tls_dir), settings.insecure)
        if refusal:
            raise BalsamError(f"the dashboard (--web): {refusal}")
    (settings.data / WEB_URL_FILE).unlink(missing_ok=True)
    engine = connect(settings)
    auth = Authenticator(engine, settings.auth)
    auth.ensure_owner_token(settings.data)
    # A site's lease lasts as long as it may stay silent before it is down: by the time we give up on
    # it, its launchers have stopped starting Argo tasks.
    coordinator = Coordinator(engine, auth, lease_s=settings.coordinator.site_timeout_s,
                              batches_at_once=settings.coordinator.sync_batches_at_once, feed_events=settings.coordinator.feed_events)
    coordinator.sites.forgive_downtime()
    policy = settings.coordinator
    coordinator.sync_workers = SyncWorkers(coordinator.db, engine.url.render_as_string(hide_password=False), policy.site_timeout_s,
                                           policy.sync_batches_at_once, _log_file())  # fmt: skip
    coordinator.placement = PlacementProcess(coordinator.db, engine.url.render_as_string(hide_password=False), coordinator.sync.instance,
                                             policy.max_place_per_round, policy.placement_interval_s, _log_file())  # fmt: skip
    server = RpcServer(coordinator, settings.address, credentials, workers=policy.rpc_workers, max_streams=policy.max_streams_per_caller)
    log.info("Argo server listening on %s (port %d), data in %s", settings.address, server.port, settings.data)
    web = start_web(coordinator, auth, settings)
    loop = threading.Thread(target=watch_health, args=(coordinator, settings, stop), name="site-health", daemon=True)
    loop.start()
    # Filesystem triggers (argo/triggers.py): folders on this host whose new files become tasks.
    from balsam.argo.triggers import TriggerService

    threading.Thread(target=TriggerService(coordinator.workflows).run, args=(stop,), name="argo-triggers", daemon=True).start()
    settle_for_serving()
    if ready:
        ready()
    try:
        stop.wait()
    finally:
        if web is not None:
            web.stop()
        server.stop(grace=2)
        coordinator.sync_workers.close()
        coordinator.placement.close()
        loop.join(timeout=10)
        engine.dispose()
        log.info("Argo server stopped")


def _log_file() -> str | None:
    """The file this process logs to (``daemon.run_daemon``), for its workers to log to as well."""
    return next((h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)


# -- the daemon ----------------------------------------------------------------------------------


def start_server(settings: ServerSettings, wait_s: float = 60.0) -> int:
    """Start the server detached (creating its database on first use); its pid once it serves."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.save()
    try:
        return daemon.start_daemon(
            [sys.executable, "-m", "balsam.argo.server", "--data", str(settings.data)], settings.pid_file,
            settings.logs_dir / "server.out", settings.data, f"the Argo server in {settings.data}", lambda: _tail(settings), wait_s,
        )  # fmt: skip
    except BalsamError:
        # A server that failed to start leaves nothing running: the database it started goes too.
        if settings.database.mode == "embedded" and server_pid(settings.data) is None:
            cluster(settings).stop()
        raise


def stop_server(data: Path, wait_s: float = 30.0) -> int | None:
    settings = ServerSettings.load(data)
    pid = daemon.stop_daemon(settings.pid_file, wait_s)
    if settings.database.mode == "embedded":
        cluster(settings).stop()
    return pid


def server_pid(data: Path) -> int | None:
    return daemon.daemon_pid(Path(data) / "argo.pid")


def _tail(settings: ServerSettings) -> str:
    return daemon.tail_files([settings.logs_dir / "server.out", settings.logs_dir / "server.log"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m balsam.argo.server", description="Run the Argo server in the foreground.")
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = ServerSettings.load(args.data)
    return daemon.run_daemon(settings.pid_file, settings.logs_dir / "server.log", f"an Argo server with data {settings.data}",
                             lambda stop, ready: serve(settings, stop, ready))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
