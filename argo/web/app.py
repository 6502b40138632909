"""The dashboard's Starlette application: server-rendered pages, the JSON API behind them, the live feed.

Pages (HTML, each painted from the server with its data, then kept live by ``static/app.js``):
``/`` the overview, ``/workflows/{id}``, ``/tasks/{WORKFLOW/NAME}``, ``/signin``. The JSON API under
``/api/`` is what the pages fetch and what scripts use (docs/web.md). ``/api/events`` is the live
feed: server-sent events from the coordinator's event feed (``balsam.argo.feed``: one reader of its
event table for every watcher), as the gRPC Watch stream is.

Blocking work (the database) runs in Starlette's thread pool; the feed waits on the loop and holds
no thread while nothing happens.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from balsam.argo.auth import Authenticator, PermissionDenied, Unauthenticated
from balsam.argo.coordinator import Coordinator
from balsam.argo.feed import Entry, watch_filter
from balsam.argo.rpc import StreamLimit, TooManyStreams
from balsam.argo.web import access
from balsam.argo.web.data import DashboardData, event_dict
from balsam.errors import BadRequest, BalsamError, NotFound
from balsam.web.guard import local_target
from balsam.web.pages import dashboard_app, page_environment, query_int, sign_in, signed_out

log = logging.getLogger("balsam.argo.web")
HERE = Path(__file__).parent
FEED_BATCH = 1000  # events per message of the feed
KEEPALIVE_S = 15.0
SIGNIN_HINT = ("With your Argo token: the same one <code>argo</code> uses (<code>argo login</code>, <code>argo user add</code>;"
               " the owner's is <code>DATA/owner-token</code>).")
RECHECK_S = 5.0  # a feed's token is checked again this often: a revoked one ends it


def status_of(exc: BaseException) -> int:
    if isinstance(exc, Unauthenticated):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, TooManyStreams):
        return 429
    if isinstance(exc, BadRequest | ValueError):
        return 400
    if isinstance(exc, BalsamError):
        return 409
    return 500


def make_app(coordinator: Coordinator, auth: Authenticator, secure: bool = False, max_streams: int = 64) -> Starlette:
    """The dashboard over this coordinator, its callers resolved by ``auth``; ``secure``: served over TLS."""
    web = Dashboard(coordinator, auth, secure, max_streams)
    routes = [
        Route("/", web.overview_page),
        Route("/workflows/{workflow_id:int}", web.workflow_page),
        Route("/tasks/{task_id:path}", web.task_page),
        Route("/api/whoami", web.api(web.whoami)),
        Route("/api/overview", web.api(web.overview)),
        Route("/api/sites", web.api(web.sites)),
        Route("/api/workflows", web.api(web.workflows)),
        Route("/api/workflows/{workflow_id:int}", web.api(web.workflow)),
        Route("/api/workflows/{workflow_id:int}/tasks", web.api(web.tasks)),
        Route("/api/workflows/{workflow_id:int}/dag", web.api(web.dag)),
        Route("/api/workflows/{workflow_id:int}/plots", web.api(web.plots)),
        Route("/api/workflows/{workflow_id:int}/cancel", web.api(web.cancel, write=True), methods=["POST"]),
        Route("/api/tasks/{task_id:path}/kill", web.api(web.kill, write=True), methods=["POST"]),
        Route("/api/tasks/{task_id:path}", web.api(web.task)),
        Route("/api/events", web.events),
    ]
    return dashboard_app(web, routes, HERE / "static")


class Dashboard:
    def __init__(self, coordinator: Coordinator, auth: Authenticator, secure: bool, max_streams: int) -> None:
        self.data = DashboardData(coordinator)
        self.store = coordinator.workflows
        self.db = coordinator.db
        self.feed = coordinator.feed
        self.auth = auth
        self.secure = secure
        self.streams = StreamLimit(max_streams)  # this loop's own count (StreamLimit is touched by one loop only)
        self.templates = page_environment(HERE / "templates", "Argo", "app.js", SIGNIN_HINT)

    # -- who asks -----------------------------------------------------------------------------

    async def visitor(self, request: Request, what: str) -> access.Visitor:
        token, by_cookie = access.token_of(request.headers, request.cookies)
        return await run_in_threadpool(access.resolve, self.auth, token, by_cookie, what)

    def _check_write_request(self, request: Request, visitor: access.Visitor, form_csrf: str = "") -> None:
        if not access.same_origin(request.headers.get("origin"), request.headers.get("host"), request.url.scheme):
            raise PermissionDenied(f"a request from another origin ({request.headers.get('origin')}) is refused")
        access.check_csrf(visitor, request.headers.get(access.CSRF_HEADER, "") or form_csrf)

    def _see_workflow(self, visitor: access.Visitor, workflow_id: int, what: str = "see this workflow") -> str:
        project = self.store.workflow_project(workflow_id)
        visitor.principal.require_see(project, what)
        return project

    def _see_task(self, visitor: access.Visitor, task_id: str, what: str = "see this task") -> tuple[int, str]:
        workflow_id = self.store.task(task_id)[0].workflow_id
        return workflow_id, self._see_workflow(visitor, workflow_id, what)

    # -- the JSON API -------------------------------------------------------------------------

    def api(self, fn, write: bool = False):
        """An endpoint: the visitor resolved (and for a change, CSRF and origin checked), then ``fn``
        in the thread pool; errors of ours as JSON ``{"error": ...}`` with their HTTP status."""

        async def endpoint(request: Request) -> Response:
            try:
                visitor = await self.visitor(request, request.url.path)
                if write:
                    self._check_write_request(request, visitor)
                result = await run_in_threadpool(fn, visitor, request)
                return JSONResponse(result)
            except Exception as exc:  # noqa: BLE001 (each kind becomes its status)
                return self._refusal(request, exc, json_reply=True)

        return endpoint

    def _refusal(self, request: Request, exc: BaseException, json_reply: bool) -> Response:
        status = status_of(exc)
        if status == 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            message = f"internal error ({type(exc).__name__}); see the server log"
        else:
            message = str(exc)
            if status in (401, 403):
                log.warning("web %s %s refused (%d): %s", request.method, request.url.path, status, message[:300])
        if json_reply:
            return JSONResponse({"error": message, "status": status}, status_code=status)
        if status == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        return self._render("error.html", None, status=status, title=f"{status}", message=message)

    @staticmethod
    def whoami(visitor: access.Visitor, request: Request) -> dict[str, Any]:
        p = visitor.principal
        return {"name": p.name, "role": p.role, "projects": list(p.projects), "owner": p.owner, "may_write": visitor.may_write}

    def overview(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        return {"sites": self.data.sites(), "workflows": self.data.workflows(visitor.projects, query_int(request, "limit", 100))}

    def sites(self, visitor: access.Visitor, request: Request) -> list[dict[str, Any]]:
        return self.data.sites()

    def workflows(self, visitor: access.Visitor, request: Request) -> list[dict[str, Any]]:
        return self.data.workflows(visitor.projects, query_int(request, "limit", 100))

    def workflow(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        workflow_id = request.path_params["workflow_id"]
        self._see_workflow(visitor, workflow_id)
        return self.data.workflow(workflow_id)

    def tasks(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        workflow_id = request.path_params["workflow_id"]
        self._see_workflow(visitor, workflow_id)
        q = request.query_params
        return self.data.tasks_page(workflow_id, state=q.get("state", ""), site=q.get("site", ""), app=q.get("app", ""),
                                    search=q.get("q", ""), sort=q.get("sort", "id"), descending=q.get("order", "asc") == "desc",
                                    page=query_int(request, "page", 1), per_page=query_int(request, "per_page", 50))  # fmt: skip

    def dag(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        workflow_id = request.path_params["workflow_id"]
        self._see_workflow(visitor, workflow_id)
        return self.data.dag(workflow_id)

    def plots(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        workflow_id = request.path_params["workflow_id"]
        self._see_workflow(visitor, workflow_id)
        return self.data.plots(workflow_id)

    def task(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        task_id = request.path_params["task_id"]
        _, project = self._see_task(visitor, task_id)
        return {**self.data.task(task_id), "may_kill": visitor.may_write_project(project)}

    def kill(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        task_id = request.path_params["task_id"]
        self._see_task(visitor, task_id, "kill this task")
        project = self.store.workflow_project(self.store.task(task_id)[0].workflow_id)
        visitor.principal.require_write(project, "kill this task")
        task = self.store.kill_task(task_id, f"killed by {visitor.principal.name} from the dashboard")
        log.info("task %s killed by %s from the dashboard", task_id, visitor.principal)
        return {"id": task.id, "state": task.state}

    def cancel(self, visitor: access.Visitor, request: Request) -> dict[str, Any]:
        workflow_id = request.path_params["workflow_id"]
        visitor.principal.require_write(self._see_workflow(visitor, workflow_id), "cancel this workflow")
        killed = self.store.cancel(workflow_id)
        log.info("workflow %d cancelled by %s from the dashboard: %d task(s) killed", workflow_id, visitor.principal, killed)
        return {"workflow_id": workflow_id, "killed": killed}

    # -- the live feed ------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """Server-sent events: each message (``event: events``) a JSON list of up to ``FEED_BATCH``
        events after ``after`` (or the Last-Event-ID a reconnecting browser sends), of one workflow
        (``workflow``) or of every workflow the visitor may see; the site's own news (health) too."""
        try:
            visitor = await self.visitor(request, "events")
            workflow_id = query_int(request, "workflow", 0)
            after = int(request.headers.get("last-event-id") or query_int(request, "after", 0))
            projects = visitor.projects
            if workflow_id:
                await run_in_threadpool(self._see_workflow, visitor, workflow_id, "watch this workflow")
                projects = None
            hold = self.streams.hold(SimpleNamespace(caller=str(visitor.principal)))  # counts streams by caller, as gRPC's does
            hold.__enter__()
        except Exception as exc:  # noqa: BLE001
            return self._refusal(request, exc, json_reply=True)

        async def stream():
            checked = written = time.monotonic()
            which = watch_filter(workflow_id, projects=projects)
            try:
                yield "retry: 1000\n\n"
                # The coordinator's one reader of the event log (argo/feed.py), as gRPC's Watch follows.
                async for found in self.feed.follow(after, which, run_in_threadpool, FEED_BATCH, idle_s=RECHECK_S):
                    if found:
                        body = json.dumps([e.made("web", event_dict) if isinstance(e, Entry) else event_dict(e) for e in found])
                        yield f"id: {max(e.id for e in found)}\nevent: events\ndata: {body}\n\n"
                        written = time.monotonic()
                    if time.monotonic() - checked > RECHECK_S:
                        try:
                            await run_in_threadpool(self.auth.authenticate, visitor.token, "web events")
                        except Unauthenticated as exc:
                            yield f"event: ended\ndata: {json.dumps(str(exc))}\n\n"
                            return
                        checked = time.monotonic()
                    if time.monotonic() - written > KEEPALIVE_S:
                        yield ": keep-alive\n\n"
                        written = time.monotonic()
            finally:
                hold.__exit__(None, None, None)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})

    def last_event_id(self) -> int:
        with self.db.session() as session:
            return int(session.scalar(text("SELECT coalesce(max(id), 0) FROM task_events")))

    # -- pages --------------------------------------------------------------------------------

    def _render(self, name: str, visitor: access.Visitor | None, status: int = 200, **values: Any) -> HTMLResponse:
        page = self.templates.get_template(name).render(
            visitor=visitor, me=visitor.principal if visitor else None, csrf=visitor.csrf if visitor else "", **values,
        )  # fmt: skip
        return HTMLResponse(page, status_code=status)

    async def _page(self, request: Request, build) -> Response:
        try:
            visitor = await self.visitor(request, request.url.path)
            name, values = await run_in_threadpool(build, visitor, request)
            return self._render(name, visitor, **values)
        except Exception as exc:  # noqa: BLE001
            return self._refusal(request, exc, json_reply=False)

    async def overview_page(self, request: Request) -> Response:
        def build(visitor, request):
            after = self.last_event_id()  # before the data: an event between the two is sent, not lost
            return "overview.html", {"title": "Overview", "data": self.overview(visitor, request), "after": after}

        return await self._page(request, build)

    async def workflow_page(self, request: Request) -> Response:
        def build(visitor, request):
            after = self.last_event_id()
            project = self._see_workflow(visitor, request.path_params["workflow_id"])
            workflow = self.data.workflow(request.path_params["workflow_id"])
            page = self.tasks(visitor, request)
            return "workflow.html", {"title": f"Workflow {workflow['id']} {workflow['name']}", "workflow": workflow, "page": page,
                                     "after": after, "may_write": visitor.may_write_project(project)}  # fmt: skip

        return await self._page(request, build)

    async def task_page(self, request: Request) -> Response:
        def build(visitor, request):
            after = self.last_event_id()
            task = self.task(visitor, request)
            return "task.html", {"title": f"Task {task['id']}", "task": task, "after": after}

        return await self._page(request, build)

    async def signin_page(self, request: Request) -> Response:
        return self._render("signin.html", None, title="Sign in", next=local_target(request.query_params.get("next", "/")), error="")

    async def signin(self, request: Request) -> Response:
        def check(token: str) -> str:
            try:
                access.resolve(self.auth, token, True, "sign-in")
            except (Unauthenticated, PermissionDenied) as exc:
                log.warning("web sign-in refused: %s", exc)
                return str(exc)
            return ""

        def render(status: int, target: str, error: str) -> Response:
            return self._render("signin.html", None, status=status, title="Sign in", next=target, error=error)

        return await sign_in(request, check, render, access.COOKIE, self.secure)

    async def signout(self, request: Request) -> Response:
        try:
            visitor = await self.visitor(request, "sign-out")
            form = await request.form()
            self._check_write_request(request, visitor, str(form.get("csrf", "")))
        except Exception as exc:  # noqa: BLE001
            return self._refusal(request, exc, json_reply=False)
        return signed_out(access.COOKIE)
