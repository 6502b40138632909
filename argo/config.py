"""Where the coordinator keeps its files and how clients find it.

``argo server start --data DIR`` keeps in DIR: ``argo.toml`` (its settings), ``db/`` (its embedded
PostgreSQL), ``logs/`` (server log, database log) and ``argo.pid``. DIR defaults to ``$ARGO_DATA``,
else ``~/.argo``. Clients (``argo ...``, site agents) use ``--address``, else ``$ARGO_ADDRESS``, else
the default loopback address.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from balsam.errors import BalsamError
from balsam.postgres import DatabaseSettings

DEFAULT_ADDRESS = "127.0.0.1:50551"
ADDRESS_ENV = "ARGO_ADDRESS"
DATA_ENV = "ARGO_DATA"
SETTINGS_FILE = "argo.toml"
# The largest message the server accepts: a Submit chunk of the client's size fits many times over.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def client_address(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".argo").expanduser()


@dataclass
class CoordinatorPolicy:
    # A site silent (no heartbeat, no message) for longer is marked down and its tasks placed again.
    site_timeout_s: float = 60.0
    placement_interval_s: float = 1.0  # placement also runs at once after a submission or a finish
    max_place_per_round: int = 50_000

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise BalsamError(f"coordinator.{f.name} must be a positive number, got {value!r}")


@dataclass
class ServerSettings:
    data: Path
    address: str = DEFAULT_ADDRESS
    database: DatabaseSettings = field(default_factory=lambda: DatabaseSettings(user="argo", name="argo"))
    coordinator: CoordinatorPolicy = field(default_factory=CoordinatorPolicy)

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
        try:
            doc = tomllib.loads((data / SETTINGS_FILE).read_text())
            policy = CoordinatorPolicy(**doc.get("coordinator", {}))
            policy.check()
            return cls(data=data, address=str(doc["address"]), database=DatabaseSettings(**doc["database"]), coordinator=policy)
        except FileNotFoundError:
            raise BalsamError(f"{data} holds no Argo server (no {SETTINGS_FILE}); start one with `argo server start --data {data}`") from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise BalsamError(f"{data / SETTINGS_FILE} is malformed: {exc}") from None
