"""A lone site's dashboard: its jobs by state, the job table, a job's page (every event, the tail of
its output), kept live from the site's own event log (``job_events``), never a copy of it.

Pages: ``/`` the jobs (counts by state, a filterable, sortable, paginated table), ``/jobs/{id}``,
``/signin``. The JSON API under ``/api/`` is what the pages fetch and what scripts use
(docs/web.md). Who may look: whoever holds the site's dashboard token (``SITE/web-token``, mode
0600, so the site's owner); the same cookie, CSRF and origin rules as the coordinator's dashboard
(``balsam.web``). The feed (``/api/events``) reads the events after the last one sent every
``FEED_POLL_S`` (the site's database has no change signal for every event, and one indexed query
twice a second costs nothing beside the launchers' writes).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from balsam.errors import BadRequest, BalsamError
from balsam.site.api import Site
from balsam.site.db.models import App, Job, JobEvent, JobParent
from balsam.site.workdir import workdir
from balsam.tails import output_tails
from balsam.web.guard import CSRF_HEADER, csrf_ok, csrf_value, local_target, same_origin, token_of
from balsam.web.pages import FINAL, STATES, check_table_query, dashboard_app, page_environment, query_int, sign_in, signed_out

log = logging.getLogger("balsam.site.web")
HERE = Path(__file__).parent
COOKIE = "balsam_site_session"
FEED_POLL_S = 0.5
FEED_BATCH = 1000
KEEPALIVE_S = 15.0
MAX_PER_PAGE = 500
HISTORY_LIMIT = 2000
SORTS = {"id": Job.id, "name": Job.name, "workflow": Job.workflow, "app": App.name, "state": Job.state, "updated": Job.updated_at,
         "return_code": Job.return_code}  # fmt: skip
SIGNIN_HINT = "With the site's dashboard token: the file <code>SITE/web-token</code> (readable by the site's owner only)."


class Refused(BalsamError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None


def make_app(site: Site, token: str, secure: bool = False) -> Starlette:
    """The dashboard over ``site``, for whoever presents ``token``; ``secure``: served over TLS."""
    web = SiteDashboard(site, token, secure)
    routes = [
        Route("/", web.jobs_page),
        Route("/jobs/{job_id:int}", web.job_page),
        Route("/api/summary", web.api(web.summary)),
        Route("/api/jobs", web.api(web.jobs)),
        Route("/api/jobs/{job_id:int}", web.api(web.job)),
        Route("/api/jobs/{job_id:int}/kill", web.api(web.kill, write=True), methods=["POST"]),
        Route("/api/events", web.events),
    ]
    return dashboard_app(web, routes, HERE / "static")


class SiteDashboard:
    def __init__(self, site: Site, token: str, secure: bool) -> None:
        if len(token) < 32:
            raise BalsamError("the site's dashboard token is too short (32 characters at least)")
        self.site = site
        self.token = token
        self.secure = secure
        self.templates = page_environment(HERE / "templates", f"Balsam site {site.settings.name}", "site.js", SIGNIN_HINT)

    # -- who asks -----------------------------------------------------------------------------

    def _check(self, token: str) -> str:
        """'' when ``token`` is the site's, else why not."""
        if not token:
            return "no token: sign in with the site's dashboard token (SITE/web-token)"
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return "not this site's dashboard token (SITE/web-token)"
        return ""

    def _visitor(self, request: Request) -> tuple[str, bool]:
        token, by_cookie = token_of(request.headers, request.cookies, COOKIE)
        refused = self._check(token)
        if refused:
            log.warning("site web %s %s refused: %s", request.method, request.url.path, refused)
            raise Refused(401, refused)
        return token, by_cookie

    def _check_write(self, request: Request, token: str, by_cookie: bool, form_csrf: str = "") -> None:
        if not same_origin(request.headers.get("origin"), request.headers.get("host"), request.url.scheme):
            raise Refused(403, f"a request from another origin ({request.headers.get('origin')}) is refused")
        if not csrf_ok(token, by_cookie, request.headers.get(CSRF_HEADER, "") or form_csrf):
            raise Refused(403, "this action needs the page's CSRF value (X-CSRF-Token): reload the page and try again")

    def api(self, fn, write: bool = False):
        async def endpoint(request: Request) -> Response:
            try:
                token, by_cookie = self._visitor(request)
                if write:
                    self._check_write(request, token, by_cookie)
                return JSONResponse(await run_in_threadpool(fn, request))
            except Exception as exc:  # noqa: BLE001 (each kind becomes its status)
                return self._refusal(request, exc, json_reply=True)

        return endpoint

    def _refusal(self, request: Request, exc: BaseException, json_reply: bool) -> Response:
        if isinstance(exc, Refused):
            status = exc.status
        elif isinstance(exc, BadRequest | ValueError):
            status = 400
        elif isinstance(exc, BalsamError):
            status = 404 if str(exc).startswith("no job ") else 409
        else:
            status = 500
        message = str(exc) if status != 500 else f"internal error ({type(exc).__name__}); see the agent's log"
        if status == 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        if json_reply:
            return JSONResponse({"error": message, "status": status}, status_code=status)
        if status == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        return self._render("error.html", "", status=status, title=str(status), message=message)

    # -- the JSON API -------------------------------------------------------------------------

    def summary(self, request: Request) -> dict[str, Any]:
        counts = self.site.count_jobs()
        return {"site": self.site.settings.name, "total": sum(counts.values()), "counts": {s: counts[s] for s in STATES if counts.get(s)}}

    def jobs(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        sort, state, page, per_page = q.get("sort", "id"), q.get("state", ""), query_int(request, "page", 1), query_int(request, "per_page", 50)
        check_table_query(sort, SORTS, state, page, per_page, MAX_PER_PAGE)
        query = select(Job.id, Job.name, Job.workflow, App.name, Job.state, Job.return_code, Job.retry_count, Job.updated_at,
                       Job.error_tail).join(App, App.id == Job.app_id)  # fmt: skip
        if state:
            query = query.where(Job.state == state)
        if q.get("workflow"):
            query = query.where(Job.workflow == q["workflow"])
        if q.get("q"):
            query = query.where(Job.name.contains(q["q"], autoescape=True))
        column = SORTS[sort]
        descending = q.get("order", "asc") == "desc"
        order = [column.desc().nulls_last() if descending else column.asc().nulls_first(), Job.id]
        with self.site.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            rows = session.execute(query.order_by(*order).limit(per_page).offset((page - 1) * per_page)).all()
            workflows = session.scalars(select(Job.workflow).distinct().order_by(Job.workflow).limit(200)).all()
        jobs = [{"id": r[0], "name": r[1], "workflow": r[2], "app": r[3], "state": r[4], "return_code": r[5], "retries": r[6],
                 "updated_at": iso(r[7]), "error": (r[8] or "")[-300:]} for r in rows]  # fmt: skip
        return {"total": total, "page": page, "pages": max(1, -(-total // per_page)), "per_page": per_page, "jobs": jobs,
                "workflows": list(workflows), "sort": sort, "descending": descending,
                "filters": {"state": state, "workflow": q.get("workflow", ""), "search": q.get("q", "")}}  # fmt: skip

    def job(self, request: Request) -> dict[str, Any]:
        job_id = request.path_params["job_id"]
        with self.site.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise BalsamError(f"no job {job_id}")
            app = session.get(App, job.app_id)
            events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(HISTORY_LIMIT)).all()
            parents = session.scalars(select(JobParent.parent_id).where(JobParent.child_id == job_id).order_by(JobParent.parent_id)).all()
            children = session.scalars(select(JobParent.child_id).where(JobParent.parent_id == job_id).order_by(JobParent.child_id).limit(200)).all()
            folder = workdir(self.site.settings.data_dir, job.workflow, job.id)
            found = {
                "id": job.id, "name": job.name, "workflow": job.workflow, "app": app.name, "command": app.command_template,
                "state": job.state, "final": job.state in FINAL, "params": job.parameters, "tags": job.tags,
                "resources": {"nodes": job.nodes, "ranks_per_node": job.ranks_per_node, "threads_per_rank": job.threads_per_rank,
                              "gpus_per_rank": job.gpus_per_rank, "node_packing_count": job.node_packing_count, "wall_time_min": job.wall_time_min},
                "return_code": job.return_code, "retries": job.retry_count, "error_tail": job.error_tail or "",
                "created_at": iso(job.created_at), "updated_at": iso(job.updated_at), "parents": list(parents), "children": list(children),
                "events": [event_dict(e) for e in events], "folder": str(folder),
            }  # fmt: skip
        found["output_tail"] = output_tails(str(folder))
        return found

    def kill(self, request: Request) -> dict[str, Any]:
        job_id = request.path_params["job_id"]
        self.site.kill_job(job_id, "killed from the site's dashboard")
        log.info("job %d killed from the site's dashboard", job_id)
        return {"id": job_id, "state": self.site.job(job_id).state}

    # -- the live feed ------------------------------------------------------------------------

    def read_events(self, after: int, job_id: int) -> list[dict[str, Any]]:
        """The feed's one source of events: up to ``FEED_BATCH`` after ``after`` (of one job, or all)."""
        query = select(JobEvent).where(JobEvent.id > after).order_by(JobEvent.id).limit(FEED_BATCH)
        if job_id:
            query = query.where(JobEvent.job_id == job_id)
        with self.site.session() as session:
            return [event_dict(e) for e in session.scalars(query)]

    def last_event_id(self) -> int:
        with self.site.session() as session:
            return int(session.scalar(select(func.coalesce(func.max(JobEvent.id), 0))))

    async def events(self, request: Request) -> Response:
        """Server-sent events: each message (``event: events``) a JSON list of up to ``FEED_BATCH``
        job events after ``after`` (or the Last-Event-ID a reconnecting browser sends)."""
        try:
            self._visitor(request)
            job_id = query_int(request, "job", 0)
            after = int(request.headers.get("last-event-id") or query_int(request, "after", 0))
        except Exception as exc:  # noqa: BLE001
            return self._refusal(request, exc, json_reply=True)

        async def stream():
            nonlocal after
            yield "retry: 1000\n\n"
            quiet = 0.0
            while True:
                found = await run_in_threadpool(self.read_events, after, job_id)
                if found:
                    after = found[-1]["id"]
                    quiet = 0.0
                    yield f"id: {after}\nevent: events\ndata: {json.dumps(found)}\n\n"
                if len(found) < FEED_BATCH:
                    await asyncio.sleep(FEED_POLL_S)
                    quiet += FEED_POLL_S
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})

    # -- pages --------------------------------------------------------------------------------

    def _render(self, name: str, token: str, status: int = 200, **values: Any) -> HTMLResponse:
        page = self.templates.get_template(name).render(signed_in=bool(token), csrf=csrf_value(token) if token else "", **values)
        return HTMLResponse(page, status_code=status)

    async def _page(self, request: Request, build) -> Response:
        try:
            token, _ = self._visitor(request)
            name, values = await run_in_threadpool(build, request)
            return self._render(name, token, **values)
        except Exception as exc:  # noqa: BLE001
            return self._refusal(request, exc, json_reply=False)

    async def jobs_page(self, request: Request) -> Response:
        def build(request):
            after = self.last_event_id()  # before the data: an event between the two is sent, not lost
            return "jobs.html", {"title": "Jobs", "site": self.site.settings.name, "summary": self.summary(request),
                                 "page": self.jobs(request), "after": after}  # fmt: skip

        return await self._page(request, build)

    async def job_page(self, request: Request) -> Response:
        def build(request):
            after = self.last_event_id()
            job = self.job(request)
            return "job.html", {"title": f"Job {job['id']}", "job": job, "after": after}

        return await self._page(request, build)

    async def signin_page(self, request: Request) -> Response:
        return self._render("signin.html", "", title="Sign in", next=local_target(request.query_params.get("next", "/")), error="")

    async def signin(self, request: Request) -> Response:
        def render(status: int, target: str, error: str) -> Response:
            return self._render("signin.html", "", status=status, title="Sign in", next=target, error=error)

        return await sign_in(request, self._check, render, COOKIE, self.secure)

    async def signout(self, request: Request) -> Response:
        try:
            token, by_cookie = self._visitor(request)
            form = await request.form()
            self._check_write(request, token, by_cookie, str(form.get("csrf", "")))
        except Exception as exc:  # noqa: BLE001
            return self._refusal(request, exc, json_reply=False)
        return signed_out(COOKIE)


def event_dict(e: JobEvent) -> dict[str, Any]:
    return {"id": e.id, "job_id": e.job_id, "from": e.from_state, "to": e.to_state, "at": iso(e.timestamp), "message": e.message}

