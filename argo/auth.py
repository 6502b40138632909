"""Who calls the coordinator, and what they may do.

Every RPC but health checking and reflection carries ``authorization: Bearer TOKEN``; the handlers
of ``balsam.argo.rpc`` resolve it to a ``Principal`` (``Authenticator.authenticate``) before the
servicer runs, and the servicers ask the principal what it may do (``require_*``).

Tokens are ``argo-<u|s|e>-<43 random url-safe characters>`` (user, site, enrolment); the database
keeps only their sha256 (``auth_tokens``), so a copy of it lets nobody in. Resolved tokens are
cached for ``cache_s`` seconds at most and dropped from the cache at once when revoked through
this server, so a revoked token stops working on its next call and a sync stream using it ends.

Sites enrol: the owner makes a one-time enrolment token (``argo site enrol NAME``); the site
exchanges it (``Enrol``) for its own site credential, which names it, and renews that credential
before it expires (``Refresh``). A used enrolment token is revoked in the same transaction as the
credential it bought is created, so two sites racing with one token cannot both win.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from balsam.argo.db.models import AuthToken
from balsam.errors import BalsamError
from balsam.private_files import check_private, write_private
from balsam.protos import auth_pb2 as apb

if TYPE_CHECKING:
    from balsam.argo.rpc import Call

log = logging.getLogger("balsam.argo.auth")
ROLES = ("owner", "collaborator", "viewer")
PREFIX = {"user": "argo-u-", "site": "argo-s-", "enrol": "argo-e-"}
OWNER_TOKEN_FILE = "owner-token"
# The user of that token, the server's own owner. No other token may take its name: revoking or
# "demoting" a user of that name would otherwise reach the server's own owner token too.
OWNER = "owner"


class Unauthenticated(BalsamError):
    """No token, or one that is unknown, expired or revoked: UNAUTHENTICATED."""


class PermissionDenied(BalsamError):
    """A known caller asked for something its role or identity does not allow: PERMISSION_DENIED."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(kind: str) -> str:
    return PREFIX[kind] + secrets.token_urlsafe(32)


def bearer(metadata) -> str:
    """The bearer token of a call's metadata, its (key, value) pairs ('' when there is none)."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


@dataclass(frozen=True)
class Principal:
    kind: str  # user | site | enrol
    name: str
    role: str  # owner | collaborator | viewer | site
    projects: tuple[str, ...] = ()
    expires_at: float | None = None  # epoch seconds; None: never
    token_hash: str = field(default="", repr=False)

    @property
    def owner(self) -> bool:
        return self.kind == "user" and self.role == "owner"

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}" + (f" ({self.role})" if self.kind == "user" else "")

    def visible_projects(self) -> list[str] | None:
        """The projects whose workflows it may see; None: all of them (the owner)."""
        return None if self.owner else list(self.projects)

    def require_user(self, what: str) -> None:
        if self.kind != "user":
            raise PermissionDenied(f"{self} may not {what}: only users may")

    def require_owner(self, what: str) -> None:
        if not self.owner:
            raise PermissionDenied(f"{self} may not {what}: only the owner may")

    def require_see(self, project: str, what: str) -> None:
        self.require_user(what)
        if not self.owner and project not in self.projects:
            raise PermissionDenied(f"{self} may not {what}: the workflow belongs to project {project or '(none)'!r}, not one of theirs")

    def require_write(self, project: str, what: str) -> None:
        self.require_see(project, what)
        if self.role == "viewer":
            raise PermissionDenied(f"{self} may not {what}: viewers can watch, not change")

    def project_for_submit(self, asked: str) -> str:
        """The project a new workflow of this user belongs to."""
        self.require_user("submit workflows")
        if self.role == "viewer":
            raise PermissionDenied(f"{self} may not submit workflows: viewers can watch, not change")
        if self.owner:
            return asked
        if not asked:
            if len(self.projects) != 1:
                raise PermissionDenied(f"{self} belongs to projects {list(self.projects)}: name one to submit to")
            return self.projects[0]
        if asked not in self.projects:
            raise PermissionDenied(f"{self} may not submit to project {asked!r}: not one of theirs ({', '.join(self.projects) or 'none'})")
        return asked

    def require_site(self, site: str) -> None:
        """A site may speak only as itself; the owner may speak as any (an operator's tool, and tests)."""
        if self.owner or (self.kind == "site" and self.name == site):
            return
        raise PermissionDenied(f"{self} may not act as site {site!r}" + (": its credential names it otherwise" if self.kind == "site" else ""))


@dataclass
class AuthPolicy:
    site_token_ttl_s: float = 24 * 3600.0  # renewed by the site's agent at half its life
    user_token_ttl_s: float = 30 * 24 * 3600.0
    enrol_token_ttl_s: float = 24 * 3600.0
    cache_s: float = 5.0  # how long a resolved token is trusted before the database is asked again

    def check(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise BalsamError(f"auth.{name} must be a positive number, got {value!r}")


class Authenticator:
    """Tokens: issued, resolved (with a short cache), refreshed, revoked."""

    def __init__(self, engine: Engine, policy: AuthPolicy | None = None) -> None:
        self._sessions = sessionmaker(engine)
        self.policy = policy or AuthPolicy()
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    # -- resolving ---------------------------------------------------------------------

    def authenticate(self, token: str, method: str = "", enrol: bool = False) -> Principal:
        """The principal of ``token``; Unauthenticated when it is missing, unknown, expired or revoked.

        Enrolment tokens are accepted only for ``Enrol`` (``enrol=True``), and only there.
        """
        if not token:
            # Sites and people get tokens in different ways: name the one that fits the caller.
            how = ("a site enrols: `argo site enrol NAME` by the owner, then `balsam site start --enrol-token TOKEN`"
                   if method.startswith("Sites.") else "see `argo login`")  # fmt: skip
            raise Unauthenticated(f"{method or 'this call'}: no token; send 'authorization: Bearer TOKEN' ({how})")
        digest = token_hash(token)
        now = time.time()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None or now - cached[0] > self.policy.cache_s:
            principal = self._lookup(digest)
            with self._lock:
                if principal is None:
                    self._cache.pop(digest, None)
                else:
                    self._cache[digest] = (now, principal)
        else:
            principal = cached[1]
        if principal is None:
            raise Unauthenticated(f"{method or 'this call'}: unknown or revoked token")
        if principal.expires_at is not None and now >= principal.expires_at:
            raise Unauthenticated(f"{method or 'this call'}: the token of {principal} expired; refresh it or ask for a new one")
        if (principal.kind == "enrol") != enrol:
            what = "an enrolment token can only be exchanged (Enrol)" if principal.kind == "enrol" else "Enrol takes an enrolment token"
            raise Unauthenticated(f"{method or 'this call'}: {what}")
        return principal

    def _lookup(self, digest: str) -> Principal | None:
        with self._sessions() as session:
            row = session.get(AuthToken, digest)
            if row is None or row.revoked_at is not None:
                return None
            expires = row.expires_at.timestamp() if row.expires_at else None
            return Principal(row.kind, row.name, row.role, tuple(row.projects or ()), expires, digest)

    def invalidate(self, kind: str | None = None, name: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._cache.clear()
                return
            for digest, (_, p) in list(self._cache.items()):
                if p.name == name and (p.kind == kind or (kind == "site" and p.kind == "enrol")):
                    del self._cache[digest]

    # -- issuing -----------------------------------------------------------------------

    def issue(self, kind: str, name: str, role: str, projects=(), ttl_s: float | None = None, session=None) -> tuple[str, float | None]:
        """A new token (returned once, its hash stored) and its expiry (epoch seconds, None: never)."""
        token = new_token(kind)
        expires = None if ttl_s is None else datetime.now(UTC) + timedelta(seconds=ttl_s)
        values = {"h": token_hash(token), "k": kind, "n": name, "r": role, "p": _json(list(projects)), "e": expires}
        statement = text("INSERT INTO auth_tokens (token_hash, kind, name, role, projects, expires_at) VALUES (:h, :k, :n, :r, CAST(:p AS jsonb), :e)")
        if session is not None:
            session.execute(statement, values)
        else:
            with self._sessions.begin() as own:
                own.execute(statement, values)
        return token, None if expires is None else expires.timestamp()

    def add_user(self, name: str, role: str, projects=(), ttl_s: float = 0) -> tuple[str, float | None]:
        if role not in ROLES:
            raise BalsamError(f"role {role!r} must be one of {', '.join(ROLES)}")
        _check_name(name, "user")
        if name == OWNER:
            raise PermissionDenied(f"{OWNER!r} is the server's own owner (its token is DATA/{OWNER_TOKEN_FILE}); give the new user another name")
        if role == "collaborator" and not projects:
            raise BalsamError("a collaborator needs at least one project (--project)")
        return self.issue("user", name, role, sorted(set(projects)), ttl_s or self.policy.user_token_ttl_s)

    def enrolment(self, site: str) -> tuple[str, float | None]:
        _check_name(site, "site")
        return self.issue("enrol", site, "site", (), self.policy.enrol_token_ttl_s)

    def enrol(self, principal: Principal, site: str) -> tuple[str, float | None]:
        """Exchange a (verified) enrolment token for the site's credential, using the token up."""
        if site and site != principal.name:
            raise PermissionDenied(f"this enrolment token is for site {principal.name!r}, not {site!r}")
        with self._sessions.begin() as session:
            used = session.execute(
                text("UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = :h AND revoked_at IS NULL RETURNING name"),
                {"h": principal.token_hash},
            ).scalar()
            if used is None:  # another call used it first
                raise Unauthenticated("this enrolment token has been used already")
            token, expires = self.issue("site", principal.name, "site", (), self.policy.site_token_ttl_s, session=session)
        self.invalidate("enrol", principal.name)
        return token, expires

    def refresh(self, principal: Principal) -> tuple[str, float | None]:
        """A new token for the same caller. The old one works on until its own expiry, so a stream
        opened with it is not cut before the caller has switched."""
        ttl = self.policy.site_token_ttl_s if principal.kind == "site" else self.policy.user_token_ttl_s
        return self.issue(principal.kind, principal.name, principal.role, principal.projects, ttl)

    def revoke(self, kind: str, name: str) -> int:
        if kind == "user" and name == OWNER:
            raise PermissionDenied(f"the server's own owner ({OWNER!r}, DATA/{OWNER_TOKEN_FILE}) cannot be revoked")
        kinds = ["site", "enrol"] if kind == "site" else [kind]
        with self._sessions.begin() as session:
            count = session.execute(
                text("UPDATE auth_tokens SET revoked_at = now() WHERE kind = ANY(:k) AND name = :n AND revoked_at IS NULL"),
                {"k": kinds, "n": name},
            ).rowcount
        self.invalidate(kind, name)
        log.warning("revoked %d token(s) of %s %r", count, kind, name)
        return count

    def ensure_owner_token(self, data: Path) -> Path:
        """DATA/owner-token: the first owner's token, for the local operator (made once, kept across
        restarts while it is valid; refused when others can read it)."""
        path = Path(data) / OWNER_TOKEN_FILE
        if path.exists():
            check_private(path)
            token = path.read_text().strip()
            try:
                if self.authenticate(token).owner:
                    return path
            except Unauthenticated:
                pass
            log.warning("%s held no valid owner token: making a new one", path)
        token, _ = self.issue("user", OWNER, "owner", (), None)
        write_private(path, token + "\n")
        return path


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > 200 or "/" in name or ":" in name or name.strip() != name:
        raise BalsamError(f"{what} name {name!r} must be 1-200 characters without '/', ':' or surrounding spaces")


def _json(value) -> str:
    import json

    return json.dumps(value)


def _token_reply(token: str, expires: float | None, kind: str, name: str) -> apb.Token:
    reply = apb.Token(token=token, kind=kind, name=name)
    if expires is not None:
        reply.expires_at.FromSeconds(int(expires))
    return reply


class AuthService:
    """The ``Auth`` gRPC service: users, site enrolment, refresh."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.auth = authenticator

    def AddUser(self, request: apb.AddUserRequest, call: Call) -> apb.Token:
        call.principal.require_owner("add users")
        token, expires = self.auth.add_user(request.name, request.role, list(request.projects), request.ttl_s)
        log.info("user %r added (%s, projects %s)", request.name, request.role, list(request.projects))
        return _token_reply(token, expires, "user", request.name)

    def RevokeUser(self, request: apb.RevokeRequest, call: Call) -> apb.RevokeReply:
        call.principal.require_owner("revoke users")
        return apb.RevokeReply(revoked=self.auth.revoke("user", request.name))

    def EnrolSite(self, request: apb.EnrolSiteRequest, call: Call) -> apb.Token:
        call.principal.require_owner("enrol sites")
        token, expires = self.auth.enrolment(request.name)
        log.info("enrolment token made for site %r", request.name)
        return _token_reply(token, expires, "enrol", request.name)

    def RevokeSite(self, request: apb.RevokeRequest, call: Call) -> apb.RevokeReply:
        call.principal.require_owner("revoke sites")
        return apb.RevokeReply(revoked=self.auth.revoke("site", request.name))

    def Enrol(self, request: apb.EnrolRequest, call: Call) -> apb.Token:
        caller = call.principal
        token, expires = self.auth.enrol(caller, request.site)
        log.info("site %r enrolled", caller.name)
        return _token_reply(token, expires, "site", caller.name)

    def Refresh(self, request: apb.RefreshRequest, call: Call) -> apb.Token:
        caller = call.principal
        token, expires = self.auth.refresh(caller)
        return _token_reply(token, expires, caller.kind, caller.name)

    def WhoAmI(self, request: apb.WhoAmIRequest, call: Call) -> apb.Identity:
        caller = call.principal
        reply = apb.Identity(kind=caller.kind, name=caller.name, role=caller.role, projects=list(caller.projects))
        if caller.expires_at is not None:
            reply.expires_at.FromSeconds(int(caller.expires_at))
        return reply
