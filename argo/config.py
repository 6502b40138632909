"""Where the coordinator keeps its files and how clients find it.

``argo server start --data DIR`` keeps in DIR: ``argo.toml`` (its settings), ``db/`` (its embedded
PostgreSQL), ``logs/`` (server log, database log) and ``argo.pid``. DIR defaults to ``$ARGO_DATA``,
else ``~/.argo``. Clients (``argo ...``, site agents) use ``--address``, else ``$ARGO_ADDRESS``, else
the default loopback address.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from balsam.argo.auth import AuthPolicy
from balsam.errors import BalsamError
from balsam.inputs import read_text
from balsam.postgres import DatabaseSettings
from balsam.private_files import check_private, write_private

DEFAULT_ADDRESS = "127.0.0.1:50551"
ADDRESS_ENV = "ARGO_ADDRESS"
DATA_ENV = "ARGO_DATA"
SETTINGS_FILE = "argo.toml"


CA_ENV = "ARGO_CA"
TOKEN_ENV = "ARGO_TOKEN"
CLIENT_CONFIG_ENV = "ARGO_CLIENT_CONFIG"


def client_address(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ADDRESS_ENV) or client_config().get("address") or DEFAULT_ADDRESS


def client_config_file() -> Path:
    """The client's own settings (address, ca, cert, key, token), written by `argo login`, mode 600."""
    return Path(os.environ.get(CLIENT_CONFIG_ENV) or Path.home() / ".config" / "argo" / "client.toml").expanduser()


def client_config() -> dict:
    path = client_config_file()
    if not path.exists():
        return {}
    try:
        check_private(path)  # it may hold a token
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise BalsamError(f"{path} is malformed: {exc}") from None


def save_client_config(values: dict) -> Path:
    path = client_config_file()
    doc = {**client_config(), **{k: v for k, v in values.items() if v is not None}}
    write_private(path, tomli_w.dumps(doc))
    return path


def local_servers_file() -> Path:
    """Where `argo server start` notes the data folder of each server it started on this machine
    (its address -> its folder), so that clients here find its owner token whatever --data was."""
    return client_config_file().with_name("local-servers.json")


def remember_local_server(address: str, data: Path) -> None:
    import json

    path = local_servers_file()
    known = _local_servers(path)
    known[address] = str(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(known, indent=1))


def local_server_data(address: str) -> Path | None:
    """The data folder of the server `argo server start` last started on ``address`` here, if any."""
    found = _local_servers(local_servers_file()).get(address)
    return Path(found) if found else None


def _local_servers(path: Path) -> dict[str, str]:
    import json

    if not path.exists():
        return {}
    try:
        check_private(path)
        known = json.loads(read_text(path))
    except (ValueError, BalsamError):
        return {}  # a damaged note only costs the convenience; ARGO_DATA still works
    return {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else {}


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names only this machine (a wildcard such as 0.0.0.0 does not)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_refusal(address: str, tls: bool, insecure: bool) -> str | None:
    """Why the server must not listen on ``address`` as configured (None: it may)."""
    if tls or insecure or is_loopback(address):
        return None
    return (f"refusing to serve without TLS on {address}, which is reachable from other machines: tokens would cross the "
            "network in clear. Give --tls-dir DIR (make one with `argo certs init --dir DIR --host NAME`), or --insecure "
            "if this network is trusted")  # fmt: skip


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".argo").expanduser()


@dataclass
class CoordinatorPolicy:
    # A site silent (no heartbeat, no message) for longer is marked down and its tasks placed again.
    site_timeout_s: float = 60.0
    placement_interval_s: float = 1.0  # placement also runs at once after a submission or a finish
    max_place_per_round: int = 50_000
    # Threads doing the database work of calls; an idle stream holds none (balsam.argo.rpc).
    rpc_workers: int = 16
    # Response streams (argo watch, a dashboard's feed, a site's sync) one caller may hold open at once.
    max_streams_per_caller: int = 64
    # Sites' batches of messages applied at once (those of different workflows need not wait for each
    # other), each by a worker process of the server (argo/syncworkers.py): about the cores the server
    # and its database have (docs/scaling.md).
    sync_batches_at_once: int = 2
    # Events the feed keeps in memory for its watchers (argo/feed.py); one further behind reads the database.
    feed_events: int = 50_000

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise BalsamError(f"coordinator.{f.name} must be a positive number, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise BalsamError(f"coordinator.{f.name} must be a whole number, got {value!r}")


@dataclass
class ServerSettings:
    data: Path
    address: str = DEFAULT_ADDRESS
    database: DatabaseSettings = field(default_factory=lambda: DatabaseSettings(user="argo", name="argo"))
    coordinator: CoordinatorPolicy = field(default_factory=CoordinatorPolicy)
    auth: AuthPolicy = field(default_factory=AuthPolicy)
    tls_dir: str = ""  # server.pem, server.key, ca.pem (`argo certs init`); empty: plain text
    mtls: bool = False  # require a client certificate signed by ca.pem
    insecure: bool = False  # plain text on a non-loopback address, explicitly
    # The web dashboard's HOST:PORT; '' : loopback at the port after gRPC's; "off": none (docs/web.md).
    web: str = ""

    @property
    def owner_token_file(self) -> Path:
        return self.data / "owner-token"

    @property
    def ca_file(self) -> Path | None:
        return Path(self.tls_dir) / "ca.pem" if self.tls_dir else None

    @property
    def file(self) -> Path:
        return self.data / SETTINGS_FILE

    @property
    def db_dir(self) -> Path:
        return self.data / "db"

    @property
    def logs_dir(self) -> Path:
        return self.data / "logs"

    @property
    def pid_file(self) -> Path:
        return self.data / "argo.pid"

    def save(self) -> None:
        db = self.database
        doc = {
            "address": self.address,
            "database": {"mode": db.mode, "url": db.url}
            if db.mode == "external"
            else {"mode": db.mode, "host": db.host, "port": db.port, "user": db.user, "name": db.name},
            "coordinator": asdict(self.coordinator),
            "auth": asdict(self.auth),
            "tls": {"dir": self.tls_dir, "mtls": self.mtls, "insecure": self.insecure},
            "web": {"address": self.web},
        }
        self.data.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold a database password
        with os.fdopen(fd, "w") as handle:
            handle.write(tomli_w.dumps(doc))
        tmp.replace(self.file)

    @classmethod
    def load(cls, data: Path) -> ServerSettings:
        data = Path(data).expanduser().resolve()
        if not (data / SETTINGS_FILE).exists():
            raise BalsamError(f"{data} holds no Argo server (no {SETTINGS_FILE}); start one with `argo server start --data {data}`")
        text = read_text(data / SETTINGS_FILE)
        try:
            doc = tomllib.loads(text)
            policy = CoordinatorPolicy(**doc.get("coordinator", {}))
            policy.check()
            auth = AuthPolicy(**doc.get("auth", {}))
            auth.check()
            tls = doc.get("tls", {})
            return cls(data=data, address=str(doc["address"]), database=DatabaseSettings(**doc["database"]), coordinator=policy,
                       auth=auth, tls_dir=str(tls.get("dir", "")), mtls=bool(tls.get("mtls", False)),
                       insecure=bool(tls.get("insecure", False)), web=str(doc.get("web", {}).get("address", "")))  # fmt: skip
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise BalsamError(f"{data / SETTINGS_FILE} is malformed: {exc}") from None
