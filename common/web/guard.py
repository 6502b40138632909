"""The dashboards' defences that do not depend on who the user is (docs/web.md, "Security").

- Every response carries ``SECURITY_HEADERS`` (a strict Content-Security-Policy: only this server's
  own script and style, no framing, no sniffing, no caching).
- A browser's token lives in an HttpOnly, SameSite=Strict cookie; a script sends a bearer header.
- A change made with the cookie must carry the page's CSRF value: an HMAC of the session's token,
  which a page of another origin cannot read. A request with a bearer header needs none: a browser
  never adds that header on its own.
- A POST of another Origin is refused outright; after signing in only a path of this server is
  followed (never an open redirect).
"""

from __future__ import annotations

import hashlib
import hmac

CSRF_HEADER = "x-csrf-token"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware: adds ``SECURITY_HEADERS`` to every response (those it does not set itself)."""

    def __init__(self, app) -> None:
        self.app = app
        self.extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *((k, v) for k, v in self.extra if k not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


def csrf_value(token: str) -> str:
    return hmac.new(token.encode(), b"argo-web-csrf", hashlib.sha256).hexdigest()


def csrf_ok(token: str, by_cookie: bool, sent: str) -> bool:
    """Whether a change may go ahead: made with a bearer header, or carrying the session's CSRF value."""
    return not by_cookie or hmac.compare_digest(sent or "", csrf_value(token))


def token_of(headers, cookies, cookie: str) -> tuple[str, bool]:
    """The request's token and whether it came from the cookie ``cookie`` ('' when there is none)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    return cookies.get(cookie, ""), True


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Whether a request's Origin (when the browser sent one) is this server."""
    if not origin:
        return True
    return origin == f"{scheme}://{host}"


def local_target(target: str) -> str:
    """Only a path of this server to go to after signing in (never another site: an open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
