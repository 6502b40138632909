"""Who is asking the dashboard, and what they may do: the same tokens and roles as gRPC.

A browser signs in with its token once: the token goes into a cookie (HttpOnly, SameSite=Strict,
Secure under TLS) and every request is resolved through the coordinator's ``Authenticator``, so a
revoked or expired token stops working at once (within its cache time), exactly as on gRPC. A
script sends ``Authorization: Bearer TOKEN`` instead. Only users may look (sites and enrolment
tokens are refused); what a user sees is its projects (the owner: all); viewers change nothing.

CSRF: a request authenticated by the cookie that changes something (POST) must carry the page's
CSRF value in ``X-CSRF-Token`` (or a form field ``csrf``); requests of another Origin are refused
outright (``balsam.web.guard``, shared with a site's dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass

from balsam.argo.auth import Authenticator, PermissionDenied, Principal, Unauthenticated
from balsam.web import guard
from balsam.web.guard import CSRF_HEADER, csrf_value, same_origin

COOKIE = "argo_session"


@dataclass(frozen=True)
class Visitor:
    principal: Principal
    token: str
    by_cookie: bool

    @property
    def projects(self) -> list[str] | None:
        return self.principal.visible_projects()

    @property
    def csrf(self) -> str:
        return csrf_value(self.token)

    @property
    def may_write(self) -> bool:
        """Whether it gets buttons at all (a viewer never does; others only in their projects)."""
        return self.principal.role != "viewer"

    def may_write_project(self, project: str) -> bool:
        try:
            self.principal.require_write(project, "change")
        except PermissionDenied:
            return False
        return True


def token_of(headers, cookies) -> tuple[str, bool]:
    """The request's token and whether it came from the cookie ('' when there is none)."""
    return guard.token_of(headers, cookies, COOKIE)


def resolve(auth: Authenticator, token: str, by_cookie: bool, what: str) -> Visitor:
    """The visitor of ``token``: Unauthenticated without a valid one, PermissionDenied for a site's."""
    principal = auth.authenticate(token, f"web {what}")
    principal.require_user("use the dashboard")
    return Visitor(principal, token, by_cookie)


def check_csrf(visitor: Visitor, sent: str) -> None:
    if not guard.csrf_ok(visitor.token, visitor.by_cookie, sent):
        raise PermissionDenied("this action needs the page's CSRF value (X-CSRF-Token): reload the page and try again")


__all__ = ["COOKIE", "CSRF_HEADER", "Visitor", "check_csrf", "csrf_value", "resolve", "same_origin", "token_of", "Unauthenticated"]
