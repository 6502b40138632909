"""The dashboards' pages: a Jinja2 environment over a dashboard's own templates and the shared
ones (``templates/frame.html``: the page frame; ``_macros.html``: progress bars, durations), and
the static files (its own script beside the shared ``common.js`` and ``style.css``)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import markupsafe
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from balsam import __version__
from balsam.errors import BadRequest
from balsam.states import FINAL_STATES, JobState
from balsam.web.guard import SecurityHeaders, local_target, same_origin

HERE = Path(__file__).parent
STATES = [s.value for s in JobState]
FINAL = sorted(s.value for s in FINAL_STATES)


def page_environment(templates: Path, product: str, script: str, signin_hint: str) -> jinja2.Environment:
    """Templates of ``templates`` first, then the shared ones; autoescaped, strict about missing values.
    ``product`` names the dashboard in its title and header; ``script`` is its own file in /static;
    ``signin_hint`` (HTML of ours, never data) says on the sign-in page which token to give."""
    env = jinja2.Environment(loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(templates), jinja2.FileSystemLoader(HERE / "templates")]),
                             autoescape=True, undefined=jinja2.StrictUndefined)  # fmt: skip
    env.globals.update(states=STATES, final=FINAL, version=__version__, product=product, script=script,
                       signin_hint=markupsafe.Markup(signin_hint))  # fmt: skip
    return env


def static_files(folder: Path) -> StaticFiles:
    """``/static``: the dashboard's own files, then the shared ones."""
    return StaticFiles(directory=folder, packages=[("balsam.web", "static")])


def dashboard_app(web, routes: list, static: Path) -> Starlette:
    """A dashboard's application: its ``routes``, the sign-in ones (``web.signin_page``, ``web.signin``,
    ``web.signout``), ``/static`` (``static`` beside the shared files), every response with the
    security headers."""
    signing = [Route("/signin", web.signin_page, methods=["GET"]), Route("/signin", web.signin, methods=["POST"]),
               Route("/signout", web.signout, methods=["POST"])]  # fmt: skip
    return Starlette(routes=[*signing, *routes, Mount("/static", static_files(static), name="static")], middleware=[Middleware(SecurityHeaders)])


async def sign_in(request: Request, check, render, cookie: str, secure: bool) -> Response:
    """The sign-in form posted: the token checked by ``check(token)`` (in the thread pool; it returns
    '' when the token may sign in, else why not), then the cookie set and a redirect to where the
    visitor was going (a path of this server only). ``render(status, next, error)`` draws the form again."""
    form = await request.form()
    token = str(form.get("token", "")).strip()
    target = local_target(str(form.get("next", "/")))
    if not same_origin(request.headers.get("origin"), request.headers.get("host"), request.url.scheme):
        return render(403, target, "a sign-in from another origin is refused")
    refused = await run_in_threadpool(check, token)
    if refused:
        return render(401, target, refused)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(cookie, token, httponly=True, samesite="strict", secure=secure, path="/")
    return response


def signed_out(cookie: str) -> Response:
    """Back to the sign-in page, the session cookie gone (the caller has checked CSRF and origin)."""
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(cookie, path="/")
    return response


def query_int(request: Request, name: str, default: int) -> int:
    """A whole-number query parameter (``default`` when absent); a bad one is a ``BadRequest`` naming it."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {value[:50]!r}") from None


def check_table_query(sort: str, sorts, state: str, page: int, per_page: int, most: int) -> None:
    """A table page's parameters: a known sort, a known state (or none), a page from 1, a page size
    from 1 to ``most``; each bad one a ``BadRequest`` naming it and what is allowed."""
    if sort not in sorts:
        raise BadRequest(f"sort must be one of {', '.join(sorts)}, got {sort!r}")
    if state and state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}, got {state!r}")
    if not 1 <= per_page <= most:
        raise BadRequest(f"per_page must be from 1 to {most}, got {per_page}")
    if page < 1:
        raise BadRequest(f"page must be 1 or more, got {page}")
