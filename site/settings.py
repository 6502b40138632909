"""A site's folder and its settings file, and how the active site is found.

A site folder holds ``balsam-site.toml`` (the settings), ``logs/``, ``data/`` (job working
folders) and, for an embedded database, ``db/`` (the PostgreSQL cluster and its password file).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from balsam.errors import BalsamError

SETTINGS_FILE = "balsam-site.toml"
SITE_ENV = "BALSAM_SITE"


@dataclass
class DatabaseSettings:
    # "embedded": a private cluster in SITE/db, started on demand; "external": the server at `url`.
    mode: str = "embedded"
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    user: str = "balsam"
    name: str = "balsam"


@dataclass
class SiteSettings:
    path: Path
    name: str
    database: DatabaseSettings = field(default_factory=DatabaseSettings)

    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def db_dir(self) -> Path:
        return self.path / "db"

    def save(self) -> None:
        db = self.database
        doc = {
            "site": {"name": self.name},
            "database": {"mode": db.mode, "url": db.url}
            if db.mode == "external"
            else {"mode": db.mode, "host": db.host, "port": db.port, "user": db.user, "name": db.name},
        }
        # Owner-only: with an external server the file holds the database password.
        tmp = self.settings_file.with_suffix(".toml.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(tomli_w.dumps(doc))
        tmp.replace(self.settings_file)

    @classmethod
    def load(cls, path: Path) -> SiteSettings:
        path = Path(path).resolve()
        file = path / SETTINGS_FILE
        if not file.is_file():
            raise BalsamError(f"{path} is not a Balsam site (no {SETTINGS_FILE}); create one with `balsam init {path}`")
        try:
            doc = tomllib.loads(file.read_text())
            site = doc["site"]
            db = DatabaseSettings(**doc.get("database", {}))
            return cls(path=path, name=str(site["name"]), database=db)
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise BalsamError(f"{file} is malformed: {exc}") from None


def find_site(start: Path | None = None) -> Path:
    """The active site: ``$BALSAM_SITE``, else the nearest site folder enclosing ``start`` (the cwd)."""
    env = os.environ.get(SITE_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / SETTINGS_FILE).is_file():
            raise BalsamError(f"{SITE_ENV}={env} is not a Balsam site (no {SETTINGS_FILE} there)")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    raise BalsamError(
        f"no Balsam site here: {here} is not inside a site folder and {SITE_ENV} is not set. "
        "Create a site with `balsam init PATH`, then work inside it or set BALSAM_SITE=PATH."
    )
