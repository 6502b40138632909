"""Several people on one site: a PostgreSQL role each, with the rights of their kind of user.

The database enforces the rights; Balsam only creates the roles, grants and explains refusals.
Each site database has three group roles, ``DB_owner``, ``DB_collaborator`` and ``DB_viewer``
(``DB`` is the database's name, since roles belong to the whole server), and every user is a
LOGIN role that is a member of one of them:

=====================  ======================================================================
kind                   rights (on the tables of the site's schema)
=====================  ======================================================================
viewer                 SELECT on every table (``job ls``/``show``/``history``, ``app ls``,
                       ``queue ls``, ``site status``); nothing else.
collaborator           SELECT on every table, and
                       ``jobs``: INSERT and UPDATE of every column but ``created_by`` (nor
                       ``id`` for UPDATE), DELETE;
                       ``job_events``: INSERT; ``job_parents``: INSERT;
                       ``batch_jobs``, ``launchers``, ``transfer_tasks``: INSERT, UPDATE;
                       ``transfer_items``: INSERT, UPDATE, DELETE;
                       ``apps``, ``trigger_rules``: INSERT (and UPDATE for rules: pause/resume),
                       never UPDATE or DELETE of apps, which other people's jobs run;
                       ``argo_raw_events``: INSERT (the ``job_events`` trigger runs with the
                       rights of whoever inserts the event);
                       USAGE on every sequence. So: add, modify, kill, reset and remove jobs,
                       add apps, submit launchers and run them. No DDL: the schema belongs to
                       the site's own role.
owner                  every privilege on every table and sequence (SELECT, INSERT, UPDATE,
                       DELETE, TRUNCATE, ...), except writing ``jobs.created_by``. Still no
                       DDL, no user management and no membership in the site's own role: an
                       embedded site's role is the cluster's superuser, and a superuser can run
                       programs as the Unix user who owns the site (``COPY ... TO PROGRAM``).
                       Migrations and ``balsam site user`` run with the site's own login.
=====================  ======================================================================

``jobs.created_by`` defaults to ``CURRENT_USER`` on the server; as no member may write that
column, it cannot be forged. Tables that later migrations add are covered by default privileges
(SELECT for every kind, everything for owners) and, since ``migrations/env.py`` calls
:func:`apply_rights` after every upgrade, by this table of rights once they are named here.

A user connects with a credentials file (``SITE/users/NAME.toml``, mode 600) that holds their
login, passed as ``$BALSAM_DB_CREDENTIALS`` or ``balsam --db-credentials FILE``; the site's
address still comes from the site's ``balsam-site.toml``.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from balsam.errors import BalsamError
from balsam.private_files import check_private
from balsam.site.settings import CREDENTIALS_ENV, SETTINGS_FILE, SiteSettings, load_credentials
from sqlalchemy import Connection, text

KINDS = ("owner", "collaborator", "viewer")

# Beyond SELECT on everything: what collaborators may do per table. A table not named here
# (including one a later migration adds) is read-only for them until it is named.
COLLABORATOR_RIGHTS: dict[str, tuple[str, ...]] = {
    "jobs": ("INSERT", "UPDATE", "DELETE"),  # INSERT and UPDATE column by column, see _grant_jobs
    "job_events": ("INSERT",),
    "job_parents": ("INSERT",),
    "batch_jobs": ("INSERT", "UPDATE"),
    "launchers": ("INSERT", "UPDATE"),
    "transfer_tasks": ("INSERT", "UPDATE"),
    "transfer_items": ("INSERT", "UPDATE", "DELETE"),
    "apps": ("INSERT",),
    "trigger_rules": ("INSERT", "UPDATE"),
    "argo_raw_events": ("INSERT",),
}
# Filled by the server alone (its DEFAULT is CURRENT_USER): no user may write it.
_SERVER_FILLED = "created_by"

SUMMARY = {
    "viewer": "may list and show the site's jobs, apps and batch jobs, and change nothing",
    "collaborator": "may add, change, kill and remove jobs, add apps and submit launchers, "
    "but not change or remove apps nor change the schema",
    "owner": "may read and change all of the site's data, but not change the schema or manage users",
}

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass
class SiteUser:
    name: str
    kind: str
    can_login: bool
    oid: int = 0


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def groups(conn: Connection) -> dict[str, str]:
    """The group role of each kind of user, for the database ``conn`` is on."""
    db = conn.execute(text("SELECT current_database()")).scalar_one()
    names = {kind: f"{db}_{kind}" for kind in KINDS}
    if any(len(name.encode()) > 63 for name in names.values()):
        raise BalsamError(f"the database name {db!r} is too long for its user groups (role names are at most 63 bytes)")
    return names


def _existing_roles(conn: Connection, names: list[str]) -> set[str]:
    return set(conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:n)"), {"n": names}).scalars())


def apply_rights(conn: Connection) -> None:
    """(Re-)grant the table of rights to the groups; a site that never had users is left alone.

    Idempotent. Run after every migration (env.py), since new columns of ``jobs`` need their
    column grants and newly named tables their rights.
    """
    kinds = groups(conn)
    if _existing_roles(conn, list(kinds.values())) != set(kinds.values()):
        return
    viewer, collab, owner = _q(kinds["viewer"]), _q(kinds["collaborator"]), _q(kinds["owner"])
    tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars())
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {viewer}, {collab}, {owner}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {viewer}, {collab}",
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {owner}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {collab}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {owner}",
        # Tables and sequences created later by this role (the site's own, which migrates).
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {viewer}, {collab}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {owner}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {collab}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {owner}",
    ]
    for table, rights in COLLABORATOR_RIGHTS.items():
        table_wide = [r for r in rights if table != "jobs" or r not in ("INSERT", "UPDATE")]
        if table in tables and table_wide:
            statements.append(f"GRANT {', '.join(table_wide)} ON {_q(table)} TO {collab}")
    for statement in statements:
        conn.execute(text(statement))
    if "jobs" in tables:
        _grant_jobs(conn, [collab, owner])


def _grant_jobs(conn: Connection, grantees: list[str]) -> None:
    """INSERT and UPDATE on ``jobs`` column by column, leaving out ``created_by``.

    A table-wide INSERT would let a client write any name there; PostgreSQL has no column-level
    REVOKE from a table-wide grant, so the table-wide one is revoked (with its column grants)
    and the columns granted again.
    """
    columns = conn.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'jobs' ORDER BY ordinal_position"
    )).scalars().all()  # fmt: skip
    insertable = ", ".join(_q(c) for c in columns if c != _SERVER_FILLED)
    updatable = ", ".join(_q(c) for c in columns if c not in (_SERVER_FILLED, "id"))
    for grantee in grantees:
        conn.execute(text(f"REVOKE INSERT, UPDATE ON jobs FROM {grantee}"))
        conn.execute(text(f"GRANT INSERT ({insertable}), UPDATE ({updatable}) ON jobs TO {grantee}"))


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier (RFC 5802/7677, as PostgreSQL stores it), so the server never sees the password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def add_user(conn: Connection, name: str, kind: str) -> str:
    """Create the LOGIN role ``name`` as a member of the ``kind`` group; its new random password."""
    if kind not in KINDS:
        raise BalsamError(f"--role must be one of {', '.join(KINDS)}, got {kind!r}")
    if not _NAME.fullmatch(name):
        raise BalsamError(f"a user name is 1 to 63 lowercase letters, digits and _, not starting with a digit; got {name!r}")
    kinds = groups(conn)
    if name in kinds.values() or name.startswith("pg_"):
        raise BalsamError(f"{name!r} is reserved; choose another user name")
    if _existing_roles(conn, [name]):
        raise BalsamError(f"a database role named {name!r} already exists on this server; choose another name")
    for group in kinds.values():
        if not _existing_roles(conn, [group]):
            conn.execute(text(f"CREATE ROLE {_q(group)} NOLOGIN"))
    apply_rights(conn)
    password = secrets.token_urlsafe(24)
    # A verifier, not the password: nothing readable reaches the server or its statement log.
    conn.execute(text(f"CREATE ROLE {_q(name)} LOGIN PASSWORD :verifier IN ROLE {_q(kinds[kind])}"),
                 {"verifier": scram_verifier(password)})
    return password


def list_users(conn: Connection) -> list[SiteUser]:
    kinds = groups(conn)
    kind_of = {group: kind for kind, group in kinds.items()}
    rows = conn.execute(text(
        "SELECT m.rolname AS name, g.rolname AS grp, m.rolcanlogin AS login, m.oid FROM pg_auth_members am "
        "JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member "
        "WHERE g.rolname = ANY(:groups) ORDER BY m.rolname"
    ), {"groups": list(kinds.values())}).all()  # fmt: skip
    return [SiteUser(row.name, kind_of[row.grp], row.login, row.oid) for row in rows]


def remove_user(conn: Connection, name: str) -> SiteUser:
    """Drop the role of a user of this site (only one of ours: any other role is refused)."""
    user = next((u for u in list_users(conn) if u.name == name), None)
    if user is None:
        raise BalsamError(f"{name!r} is not a user of this site (see `balsam site user ls`)")
    # DROP OWNED also revokes what was granted to the role here (its default privileges too).
    conn.execute(text(f"DROP OWNED BY {_q(name)}"))
    conn.execute(text(f"DROP ROLE {_q(name)}"))
    return user


def end_sessions(conn: Connection, user: SiteUser) -> int:
    """Close the open connections of a removed role: a dropped role's sessions would go on.

    Run after the drop committed, so no new session can start in between; found by the role's
    oid, since a dropped role no longer has a name in ``pg_stat_activity``.
    """
    return len(conn.execute(
        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = :oid AND pid <> pg_backend_pid()"),
        {"oid": user.oid},
    ).all())  # fmt: skip


# -- credential files ---------------------------------------------------------------------------


def users_dir(settings: SiteSettings) -> Path:
    return settings.path / "users"


def credentials_file(settings: SiteSettings, name: str) -> Path:
    return users_dir(settings) / f"{name}.toml"


def write_credentials(settings: SiteSettings, name: str, kind: str, password: str) -> Path:
    """``SITE/users/NAME.toml`` (folder 700, file 600): the login, for the owner to hand over."""
    folder = users_dir(settings)
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    file = credentials_file(settings, name)
    tmp = file.with_suffix(".toml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"# The database login of {name!r} ({kind}) on Balsam site {settings.name!r} ({settings.path}).\n"
            "# Keep it private (chmod 600). Use it with:\n"
            f"#   export BALSAM_SITE={settings.path}\n"
            f"#   export {CREDENTIALS_ENV}=/path/to/this/file   (or: balsam --db-credentials FILE ...)\n"
            "[database]\n"
            f'user = "{name}"\n'
            f'password = "{password}"\n'
            f'role = "{kind}"\n'
        )
    os.chmod(tmp, 0o600)
    tmp.replace(file)
    return file


# -- secrets at rest ----------------------------------------------------------------------------


def secret_files(settings: SiteSettings) -> list[Path]:
    """The site's files that hold a password, a token or a key (those that exist or may)."""
    files = []
    if settings.database.mode == "embedded":
        files.append(settings.db_dir / "password")
    if settings.holds_password():
        files.append(settings.settings_file)
    files += [settings.globus_tokens_file, settings.argo_credential_file, settings.web_token_file]
    if settings.argo.key_file:
        files.append(Path(settings.argo.key_file))
    if users_dir(settings).is_dir():
        files += sorted(users_dir(settings).glob("*.toml"))
    if settings.credentials is not None:
        files.append(settings.credentials.file)
    return files


# -- the site's folders on disk -------------------------------------------------------------------

# What each kind of site lets others reach (the database, credentials and secret files are
# owner-only in both, whatever these say: db/ 700, users/ 700, secrets 600):
#   private (the default): the site folder, data/, logs/ and batch/ are 700, and everything the site's
#     processes (launchers, their jobs, the agent) create is made under umask 077: job folders,
#     outputs and logs are the owner's alone;
#   shared with a group ([site] group): the site folder is 2750 and data/, logs/, batch/ 2770, all of
#     the group (set-group-id, so what is made inside keeps it), and processes run under umask 007:
#     members read the settings (when they hold no password), read and write job folders, logs and
#     batch scripts, since their own launchers run jobs there. Others reach nothing.
PRIVATE_UMASK = 0o077
SHARED_UMASK = 0o007
SHARED_FOLDERS = ("data", "logs", "batch")


def site_umask(settings: SiteSettings) -> int:
    return SHARED_UMASK if settings.group else PRIVATE_UMASK


def protect_site(settings: SiteSettings) -> None:
    """Give the site folder and its shared folders the modes (and group) of the site's sharing.

    Run when a site is made and whenever its agent or a launcher starts, so a site made private
    stays so and a change of ``[site] group`` takes effect. Only the folders' owner can change
    them; anyone else (a collaborator's launcher) leaves them as they are.
    """
    if os.stat(settings.path).st_uid != os.geteuid():
        return  # a collaborator's launcher: the owner's folders are the owner's to set
    gid = group_id(settings.group) if settings.group else None
    for folder in SHARED_FOLDERS:
        (settings.path / folder).mkdir(exist_ok=True)  # batch/ is missing in sites made before it was made at init
    _set_mode(settings.path, 0o700 if gid is None else 0o2750, gid, settings.group)
    for folder in SHARED_FOLDERS:
        _set_mode(settings.path / folder, 0o700 if gid is None else 0o2770, gid, settings.group)
    if gid is not None and settings.settings_file.exists() and not settings.holds_password():
        _set_mode(settings.settings_file, 0o640, gid, settings.group)


def group_id(group: str) -> int:
    """The id of a group given by name or number."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise BalsamError(f"no group named {group!r} on this machine (see `getent group`)") from None


def _set_mode(path: Path, mode: int, gid: int | None, group: str) -> None:
    info = os.stat(path)
    if info.st_uid != os.geteuid():
        return
    if gid is not None and info.st_gid != gid:
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            raise BalsamError(f"cannot give {path} to group {group!r}: you are not a member of it (see `id`)") from None
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


@dataclass(frozen=True)
class PrivateFolder:
    kind: str  # "Balsam site" | "Argo coordinator"
    path: Path
    readable: str  # what of it others' jobs may read, for the refusal


def private_folder(path: Path) -> PrivateFolder | None:
    """The site or coordinator folder whose private files ``path`` (a real path) is among, if any.

    A site folder is known by its settings file: all of it but its ``data/`` folder is private (the
    database and its password, settings, credentials, tokens, logs, batch scripts). A coordinator's
    folder is known by ``argo.toml``: all of it is private (its database, owner token, keys).
    """
    for folder in (path, *path.parents):
        if (folder / SETTINGS_FILE).is_file():
            if folder / "data" in (path, *path.parents):
                return None
            return PrivateFolder("Balsam site", folder, "only its data/ folder may be staged in")
        if (folder / "argo.toml").is_file():
            return PrivateFolder("Argo coordinator", folder, "none of it may be staged in")
    return None


def check_site_secrets(settings: SiteSettings) -> None:
    """Refuse to serve a site whose secret files other users may read (names the file and the fix)."""
    for file in secret_files(settings):
        if file.exists():
            check_private(file)


def refusal_message(reason: str) -> str:
    """A database permission refusal, explained with who we are and what that login may do."""
    file = os.environ.get(CREDENTIALS_ENV)
    who = "the site's own database login"
    rights = ""
    if file:
        try:
            creds = load_credentials(file)
        except BalsamError:
            creds = None
        if creds is not None:
            who = f"database role {creds.user or '(from url)'!r}"
            if creds.role in SUMMARY:
                who += f" (a {creds.role} of this site)"
                rights = f"; a {creds.role} {SUMMARY[creds.role]}"
    return f"permission denied: {who} may not do this{rights}. The database said: {reason}"
