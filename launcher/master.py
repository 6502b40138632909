"""The launcher's main loop: take jobs, start them on free resources, record what happens.

One loop, one thread, that never waits on the database: its transactions are made by a thread of
their own (``balsam.launcher.dbworker``). Each turn the loop

1. collects the processes that ended and works out each job's next states (``lifecycle``), handing
   the changes to the database thread,
2. takes what the database thread brought back: jobs to run, jobs no longer its own (killed, taken
   back), the site's Argo lease,
3. starts queued jobs that fit the free cores and GPUs (``resources.NodePool``), and says how many
   more it wants,
4. sleeps until a child exits, the database thread has news, or the next deadline.

Event timestamps are taken when things happen, not when they are written, so a batched write
loses no precision in the history or the runtimes derived from it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import select
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from balsam.launcher import commands, lifecycle, store
from balsam.launcher.executor import LocalExecutor, Task, TaskExit, prepare_all, tail
from balsam.launcher.lifecycle import HeldJob, Outcome
from balsam.site.workdir import workdir
from balsam.launcher.nodes import Node
from balsam.launcher.resources import Assignment, NodePool, Request
from balsam.site.api import Site
from balsam.launcher.dbworker import DbWorker, Result
from balsam.site.db.jobstore import Change
from balsam.site.db import leases
from balsam.progress import Throughput
from balsam.states import Step
from balsam.states import JobState

S = JobState
log = logging.getLogger("balsam.launcher")
MAX_QUEUE = 2000
PROGRESS_WINDOW_S = 60.0  # the progress line's rate: jobs ended over the last minute


@dataclass
class LauncherConfig:
    job_mode: str = "mpi"  # mpi | serial
    wall_time_min: float | None = None
    max_jobs: int | None = None
    workflow: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    until_idle: bool = False
    linger_s: float = 0.0  # with until_idle: stay this long once idle (work may be coming)
    lease_seconds: float = 60.0
    batch_job_id: int | None = None  # the site's batch job this launcher runs in, if any
    flush_seconds: float = 0.02  # at most one commit this often; a change after a quiet while is written at once
    busy_flush_seconds: float = 0.1  # at most one this often while commits carry many changes (dbworker.BUSY_BATCH)
    poll_seconds: float = 1.0  # look for work and kills this often even without a NOTIFY
    progress_seconds: float = 30.0  # a progress line in the log this often (done, failed, running, rate)

    def __post_init__(self) -> None:
        if self.job_mode not in ("mpi", "serial"):
            raise ValueError(f"job mode must be 'mpi' or 'serial', got {self.job_mode!r}")
        if self.wall_time_min is not None and not self.wall_time_min > 0:
            raise ValueError(f"wall time must be a positive number of minutes, got {self.wall_time_min}")
        if self.max_jobs is not None and self.max_jobs < 1:
            raise ValueError(f"max jobs must be at least 1, got {self.max_jobs}")
        if not self.lease_seconds > 0:
            raise ValueError(f"the lease must be a positive number of seconds, got {self.lease_seconds}")
        if not 0 <= self.linger_s <= 86400:
            raise ValueError(f"the linger time must be from 0 to 86400 seconds, got {self.linger_s}")
        if not 0 < self.progress_seconds <= 86400:
            raise ValueError(f"the progress interval must be more than 0 and at most 86400 seconds, got {self.progress_seconds}")

    def as_args(self) -> list[str]:
        """The `balsam launcher` options that make this configuration again (for ensemble ranks)."""
        args = ["--job-mode", self.job_mode, "--lease", f"{self.lease_seconds:g}"]
        if self.wall_time_min is not None:
            args += ["--wall-time", f"{self.wall_time_min:g}"]
        if self.max_jobs is not None:
            args += ["--max-jobs", str(self.max_jobs)]
        if self.workflow:
            args += ["--workflow", self.workflow]
        for name, value in self.tags.items():
            args += ["--tag", f"{name}={value}"]
        if self.until_idle:
            args += ["--until-idle", "--linger", f"{self.linger_s:g}"]
        return args

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / 6

    def shutdown_margins(self) -> tuple[float, float]:
        """(seconds before the end to stop tasks, seconds between SIGTERM and SIGKILL)."""
        wall = (self.wall_time_min or 0) * 60
        margin = min(120.0, max(2.0, 0.1 * wall))
        return margin, margin / 2


@dataclass
class _Running:
    job: HeldJob
    assignment: Assignment
    started: float
    timed_out: bool = False


class LeaseLost(Exception):
    pass


class Launcher:
    def __init__(self, site: Site, config: LauncherConfig, nodes: list[Node], ctx: commands.RunContext, run_executor=None) -> None:
        self.site = site
        self.config = config
        self.nodes = nodes
        self.pool = NodePool(nodes)
        self.local = LocalExecutor()
        # Main runs go to the node workers in a multi-node serial ensemble, else to this host.
        self.runs = run_executor or self.local
        self.fit = store.Fit(
            serial=config.job_mode == "serial", max_nodes=len(nodes),
            max_cores_per_node=max(n.cores for n in nodes), max_gpus_per_node=max(n.gpus for n in nodes),
            workflow=config.workflow, tags=dict(config.tags),
        )  # fmt: skip
        total_cores = sum(n.cores for n in nodes)
        # Jobs held but not started: enough to keep every core busy between two acquisitions,
        # more when jobs are short (see _want), never so many that other launchers go without.
        self.base_queue = max(8, 4 * total_cores) if config.job_mode == "serial" else max(4, 2 * len(nodes))
        self.recent_ends: collections.deque[float] = collections.deque()
        with site.session() as session:
            self.id = leases.register(
                session, ctx.local_host, os.getpid(), config.job_mode, len(nodes), config.lease_seconds, config.batch_job_id
            )
        self.ctx = dataclasses.replace(ctx, launcher_id=self.id)
        # Folders and output files of queued jobs are made here, off the loop (see executor.prepare).
        self.preparer = ThreadPoolExecutor(2, thread_name_prefix="prepare")
        self.held: dict[int, HeldJob] = {}
        self.queue: list[int] = []  # held jobs waiting for resources, oldest first
        self.argo_queued: set[int] = set()  # those of them that are Argo tasks (see _start_queued)
        self.workflow_dirs: dict[str, str] = {}  # workflow -> its folder under the site's data
        self.running: dict[int, _Running] = {}
        self.steps: dict[int, str] = {}  # job id -> "pre" | "post" while that step runs
        # Until when (monotonic) this site holds the Argo coordinator's lease, as last read; Argo tasks
        # start only before then. Held Argo tasks that could not start are let go (``fenced``).
        self.argo_until: float | None = None
        self.fenced: set[int] = set()
        self.started_count = 0
        self.counts = {"finished": 0, "failed": 0, "retried": 0, "timed out": 0}
        self.ended = Throughput(PROGRESS_WINDOW_S)  # jobs finished or failed: the rate in the progress line
        self.db: DbWorker | None = None  # made when the loop starts

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until idle (with until_idle), out of wall time, out of jobs (max_jobs) or stopped; the exit code."""
        start = time.monotonic()
        margin, kill_grace = self.config.shutdown_margins()
        stop_at = start + self.config.wall_time_min * 60 - margin if self.config.wall_time_min else None
        kill_at: float | None = None
        stopping = False  # no new work; tasks are being stopped (wall time, SIGTERM, SIGINT)
        last_progress = -1e9
        idle_since: float | None = None  # with --until-idle: since when nothing was left to run
        reason = "finished"
        requested_stop: list[int] = []
        old_handlers = {
            sig: signal.signal(sig, lambda signum, frame: requested_stop.append(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        log.info(
            "launcher %d: %d node(s), %s mode, lease %g s",
            self.id, len(self.nodes), self.config.job_mode, self.config.lease_seconds,
        )  # fmt: skip
        cfg = self.config
        self.db = db = DbWorker(self.site, self.id, self.fit, lease_s=cfg.lease_seconds, heartbeat_s=cfg.heartbeat_seconds,
                                poll_s=cfg.poll_seconds, flush_s=cfg.flush_seconds, busy_flush_s=cfg.busy_flush_seconds)  # fmt: skip
        try:
            while True:
                now = time.monotonic()
                out_of_time = stop_at is not None and now >= stop_at
                if (requested_stop or out_of_time) and not stopping:
                    stopping = True
                    reason = "out of wall time" if out_of_time else f"stopped by signal {requested_stop[0]}"
                    # Before any task is stopped: a job its stop releases (a timeout retried) must not be
                    # taken back by the database thread's next acquisition, in the very write that releases it.
                    db.ask(0, self.fit)
                    for running in self.running.values():
                        running.timed_out = True
                    self._stop_tasks(signal.SIGTERM)
                    kill_at = now + kill_grace
                if kill_at is not None and now >= kill_at:
                    self._stop_tasks(signal.SIGKILL)
                    kill_at = None
                self._collect_exits()
                for result in db.take():
                    self._apply(result)
                if not stopping:
                    self._start_queued(stop_at)
                db.ask(0 if stopping else self._want(), self._fit(stop_at))

                if now - db.last_renewal > 0.75 * cfg.lease_seconds and (
                    db.outage is None or db.outage.must_stop_tasks(now, db.last_renewal, cfg.lease_seconds)
                ):
                    raise LeaseLost(f"could not renew the lease for {now - db.last_renewal:.0f} s")
                if now - last_progress >= cfg.progress_seconds:
                    last_progress = now
                    self._progress()

                idle = not (self.running or self.steps or db.busy())
                if idle and stopping:
                    break
                if idle and self._max_jobs_reached() and not any(self.held[j].state != S.RESTART_READY for j in self.queue):
                    reason = f"ran {self.started_count} job(s) (--max-jobs)"
                    break
                if idle and cfg.until_idle and not self.queue and db.dry:
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= cfg.linger_s:
                        reason = "no runnable job left (--until-idle)" + (f" for {cfg.linger_s:g} s" if cfg.linger_s else "")
                        left = sorted(db.too_big_noted.copy())  # a set the database thread adds to
                        if left:
                            # Not "nothing to do": jobs wait that this launcher can never run. Say which.
                            shown = ", ".join(map(str, left[:10])) + (", ..." if len(left) > 10 else "")
                            reason += (f"; left {len(left)} job(s) too big for this launcher: {shown} "
                                       "(`balsam job history ID` says what each needs)")  # fmt: skip
                        break
                else:
                    idle_since = None
                self._wait(self._timeout(now, stop_at, kill_at, idle_since))
        except LeaseLost as exc:
            log.error("launcher %d: %s; killing every task so that none runs twice", self.id, exc)
            self._stop_tasks(signal.SIGKILL)
            db.stop(f"lost its lease: {exc}", wait_s=10)
            self._close_executors()
            return 3
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        self._finish(reason)
        return 0

    def _apply(self, result: Result) -> None:
        """What a transaction of the database thread brought back."""
        if result.lease_lost:
            raise LeaseLost(result.lease_lost)
        if result.failed:
            return
        self.argo_until = None if result.lease_left is None else result.asked + float(result.lease_left)
        for job_id in result.gone:
            self._let_go(job_id)
        self.fenced.difference_update(result.gone)
        self._accept(result.jobs, result.broken)

    def _fit(self, stop_at: float | None) -> store.Fit:
        if stop_at is None:
            return self.fit
        return dataclasses.replace(self.fit, minutes_left=max(0.0, (stop_at - time.monotonic()) / 60))

    def _want(self) -> int:
        """How many jobs to take now: refill the queue when it is half empty, within --max-jobs."""
        now = time.monotonic()
        while self.recent_ends and self.recent_ends[0] < now - 2.0:
            self.recent_ends.popleft()
        # Half a second of work at the rate jobs have been ending lately: short jobs are taken
        # in large batches (few transactions), long ones a few at a time.
        target = min(MAX_QUEUE, max(self.base_queue, len(self.recent_ends) // 4))
        if len(self.queue) > target // 2:
            return 0
        want = target - len(self.queue)
        if self.config.max_jobs is not None:
            want = min(want, self.config.max_jobs - self.started_count - len(self.queue))
        return max(0, want)

    def _max_jobs_reached(self) -> bool:
        return self.config.max_jobs is not None and self.started_count >= self.config.max_jobs

    def _timeout(self, now: float, stop_at: float | None, kill_at: float | None, idle_since: float | None) -> float:
        deadline = self.config.poll_seconds
        for moment in (stop_at, kill_at, None if idle_since is None else idle_since + self.config.linger_s):
            if moment is not None:
                deadline = min(deadline, max(0.0, moment - now))
        if self.runs is not self.local and self.runs.running():
            deadline = min(deadline, 0.005)  # the ensemble's messages have no file descriptor to wait on
        return deadline

    def _wait(self, timeout: float) -> None:
        """Sleep until a child exits, the database thread has news, or ``timeout`` s have passed."""
        try:
            select.select([self.local.wakeup_fd, self.db.ready_fd], [], [], timeout)
        except InterruptedError:
            return
        self.local.drain_wakeups()

    # -- exits ---------------------------------------------------------------------------------

    def _collect_exits(self) -> None:
        exits: list[TaskExit] = self.local.poll()
        if self.runs is not self.local:
            exits += self.runs.poll()
        for ended in exits:
            kind, job_id = ended.key  # type: ignore[misc]
            if kind == "run":
                self._run_ended(job_id, ended)
            else:
                self._step_ended(kind, job_id, ended)

    def _run_ended(self, job_id: int, ended: TaskExit) -> None:
        running = self.running.pop(job_id, None)
        if running is None:
            return  # killed by a user; already let go
        self.recent_ends.append(time.monotonic())
        self.pool.release(job_id)
        job = running.job
        # Only a failure's stderr is worth reading: a success costs no extra file access.
        error_tail = ended.error or (tail(f"{self._workdir(job)}/job.err") if ended.return_code != 0 else "")
        outcome = lifecycle.after_run(job, ended.return_code, ended.ended - ended.started, error_tail, running.timed_out)
        if running.timed_out:
            self.counts["timed out"] += 1
        self._record(job, outcome, ended.ended)

    def _step_ended(self, kind: str, job_id: int, ended: TaskExit) -> None:
        if self.steps.pop(job_id, None) is None:
            return
        job = self.held[job_id]
        error_tail = ended.error or tail(f"{self._workdir(job)}/{kind}process.err")
        if kind == "pre":
            outcome = lifecycle.after_pre(job, ended.return_code, error_tail)
            if outcome.next == "run":
                self._record(job, outcome, ended.ended, keep=True)
                self._enqueue(job)
                return
        else:
            outcome = lifecycle.after_post(job, ended.return_code, error_tail)
        self._record(job, outcome, ended.ended)

    def _record(self, job: HeldJob, outcome: Outcome, at: float, keep: bool = False) -> None:
        """Queue the outcome's transitions for the next write, and do what follows."""
        moment = datetime.fromtimestamp(at, UTC)
        steps = job.unwritten + [Step(s.state, s.message, s.at or moment) for s in outcome.steps]
        job.unwritten = []
        final = steps[-1].state if steps else job.state
        release = not keep and outcome.next in ("release", "rescue")
        fields = dict(outcome.fields)
        if release:
            fields["launcher_id"] = None
        rescue = lifecycle.rescue_spec(job) if outcome.next == "rescue" else None
        if steps:
            self.db.record(Change(job.id, steps, fields), rescue)
        job.state = final
        if "retry_count" in fields:
            job.retry_count = fields["retry_count"]
        if final == S.JOB_FINISHED:
            self.counts["finished"] += 1
            self.ended.add(1, at)
        elif final == S.FAILED:
            self.counts["failed"] += 1
            self.ended.add(1, at)
        elif final == S.RESTART_READY:
            self.counts["retried"] += 1
        if outcome.next == "post":
            self._start_step("post", job)
        elif release:
            self.held.pop(job.id, None)

    # -- starting ------------------------------------------------------------------------------

    def _accept(self, jobs: list[HeldJob], broken: list[tuple[int, str]]) -> None:
        """Jobs just acquired: their first steps, and into the queue (or straight to a step)."""
        now = time.time()
        folders: list[str] = []
        for job_id, reason in broken:
            self.db.record(Change(job_id, [Step(S.FAILED, f"cannot build its command: {reason}")], {"launcher_id": None}))
        for job in jobs:
            self.held[job.id] = job
            steps, follow = lifecycle.acquired_steps(job)
            if follow == "finish":
                self._record(job, Outcome(lifecycle.finishing_steps(job, "")), now)
                continue
            if steps and follow == "run":
                # Written with its start, in the same change: one update of its row instead of two.
                moment = datetime.fromtimestamp(now, UTC)
                job.unwritten = [Step(s.state, s.message, s.at or moment) for s in steps]
                job.state = steps[-1].state
            elif steps:
                self._record(job, Outcome(steps, next="keep"), now, keep=True)
            if follow == "pre":
                self._start_step("pre", job)
            elif follow == "post":
                self._start_step("post", job)
            else:
                self._enqueue(job, folders)
        if folders:
            self.preparer.submit(prepare_all, folders)

    def _enqueue(self, job: HeldJob, batch: list[str] | None = None) -> None:
        """Into the queue; its folder is made off the loop, in ``batch`` (one hand-over for many) when given."""
        self.queue.append(job.id)
        if job.argo:
            self.argo_queued.add(job.id)
        if self.runs is self.local:  # an ensemble worker's node may not see this filesystem path the same way
            folder = self._workdir(job)
            if batch is None:
                self.preparer.submit(prepare_all, [folder])
            else:
                batch.append(folder)

    def _start_queued(self, stop_at: float | None) -> None:
        if not self.queue:
            return
        # Every job needs a core: with none free nothing starts, and the queue (up to MAX_QUEUE jobs)
        # is not walked at each turn of the loop, unless Argo tasks in it may have to be let go.
        lease_ok = self.argo_until is not None and time.monotonic() < self.argo_until
        fence_due = bool(self.argo_queued) and not lease_ok and not self.argo_queued <= self.fenced
        if not fence_due and (self.pool.free_cores() == 0 or self._max_jobs_reached()):
            return
        left = None if stop_at is None else stop_at - time.monotonic()
        waiting = []
        no_room: set[tuple[int, ...]] = set()  # shapes that did not fit in this pass
        queue = self.queue
        for index, job_id in enumerate(queue):
            if not fence_due and (self.pool.free_cores() == 0 or self._max_jobs_reached()):
                waiting.extend(queue[index:])  # nothing more can start: the rest keeps its order
                break
            job = self.held[job_id]
            shape = (job.nodes, job.ranks_per_node, job.threads_per_rank, job.gpus_per_rank, job.node_packing_count)
            if shape in no_room:
                waiting.append(job_id)
                continue
            if self.config.max_jobs is not None and self.started_count >= self.config.max_jobs:
                waiting.append(job_id)
                continue
            if left is not None and job.wall_time_min is not None and job.wall_time_min * 60 > left:
                waiting.append(job_id)  # let go at the end; another launcher may have the time
                continue
            if job.argo and (not lease_ok or job_id in self.fenced):
                # The site's lease ran out: not started here; let go of it. Once let go it never starts here,
                # though the lease come back before the database says so: another launcher may have it by then.
                if job_id not in self.fenced:
                    self.fenced.add(job_id)
                    self.db.release(job_id)
                waiting.append(job_id)
                continue
            request = Request(job.id, job.nodes, job.ranks_per_node, job.threads_per_rank, job.gpus_per_rank, job.node_packing_count)
            assignment = self.pool.assign(request)
            if assignment is None:
                no_room.add(shape)
                waiting.append(job_id)
                continue
            self._start_run(job, assignment)
        self.queue = waiting

    def _start_run(self, job: HeldJob, assignment: Assignment) -> None:
        self.argo_queued.discard(job.id)
        folder = self._workdir(job)
        env = commands.environment(job, assignment, self.ctx)
        try:
            argv = commands.run_argv(job, assignment, env, folder, self.ctx)
        except (RuntimeError, ValueError) as exc:
            self.pool.release(job.id)
            steps = [Step(S.RUNNING, f"on {', '.join(assignment.hostnames)}"), Step(S.RUN_ERROR, f"cannot start: {exc}"), Step(S.FAILED, "cannot start")]
            self._record(job, Outcome(steps, {"error_tail": str(exc)}), time.time())
            return
        task = Task(("run", job.id), argv, folder, env, f"{folder}/job.out", f"{folder}/job.err")
        if self.runs is self.local:
            started = self.local.start(task)
        else:  # the node's worker in the serial ensemble
            started = self.runs.start(task, assignment.hostnames[0])
        self.started_count += 1
        self.running[job.id] = _Running(job, assignment, started)
        retry = f" (attempt {job.retry_count + 1})" if job.retry_count else ""
        self._record(job, Outcome([Step(S.RUNNING, f"on {', '.join(assignment.hostnames)}{retry}")], next="keep"), started, keep=True)

    def _start_step(self, kind: str, job: HeldJob) -> None:
        argv = job.preprocess if kind == "pre" else job.postprocess
        folder = self._workdir(job)
        env = {**job.environment, commands.JOB_ID_VARIABLE: str(job.id), "BALSAM_SITE": self.ctx.site_path}
        self.steps[job.id] = kind
        self.local.start(Task((kind, job.id), list(argv or []), folder, env, f"{folder}/{kind}process.out", f"{folder}/{kind}process.err"))

    def _stop_tasks(self, signum: int) -> None:
        for job_id in list(self.running):
            self.runs.signal(("run", job_id), signum)
        for job_id, kind in list(self.steps.items()):
            self.local.signal((kind, job_id), signum)

    def _close_executors(self) -> None:
        self.preparer.shutdown(wait=True, cancel_futures=True)
        self.local.close()
        if self.runs is not self.local:
            self.runs.close()

    def _workdir(self, job: HeldJob) -> str:
        """The job's folder (``balsam.site.workdir``), as a string: the workflow's part is worked out once."""
        base = self.workflow_dirs.get(job.workflow)
        if base is None:
            base = self.workflow_dirs[job.workflow] = str(workdir(self.site.settings.data_dir, job.workflow, 0).parent)
        return f"{base}/{job.id}"

    # -- the database --------------------------------------------------------------------------

    def _let_go(self, job_id: int) -> None:
        """A job this launcher no longer holds (killed by a user, or taken back): stop and forget it."""
        if job_id in self.running:
            self.runs.signal(("run", job_id), signal.SIGKILL)
            self.running.pop(job_id)
            self.pool.release(job_id)
            log.info("job %d was killed or taken back; its process was stopped", job_id)
        kind = self.steps.pop(job_id, None)
        if kind:
            self.local.signal((kind, job_id), signal.SIGKILL)
        if job_id in self.queue:
            self.queue.remove(job_id)
        self.argo_queued.discard(job_id)
        self.held.pop(job_id, None)

    def _finish(self, reason: str) -> None:
        self.db.stop(reason)  # what is left is written, and the lease ended, by the database thread
        self._close_executors()
        self._progress()
        log.info("launcher %d exits: %s", self.id, reason)

    def _progress(self) -> None:
        """The progress line, every ``progress_seconds`` and at the end: what ended, what runs, how fast."""
        c = self.counts
        rate = self.ended.rate()
        others = "".join(f", {c[what]} {what}" for what in ("retried", "timed out") if c[what])
        log.info("launcher %d progress: %d done, %d failed, %d running, %d queued%s; %.2f jobs/s over the last %.0f s",
                 self.id, c["finished"], c["failed"], len(self.running), len(self.queue), others, rate, PROGRESS_WINDOW_S)  # fmt: skip

