"""The original Balsam's (0.x) commands, accepted as its users type them and mapped onto today's.

``balsam app --name --executable``, ``balsam job --name --workflow --application --args ...``,
``balsam ls``, ``balsam rm``, ``balsam kill`` (and ``killjob``), ``balsam modify``, ``balsam dag``.
Each does what the old command did and prints, on stderr, one line naming today's command, so
stdout stays what scripts read. The mapping itself is ``balsam.site.compat``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from balsam.errors import BalsamError
from balsam.site import compat
from balsam.site.cli.common import SiteOption
from balsam.site.cli.output import compact, console, err_console, print_table


def _say(argv: list[str]) -> None:
    err_console.print(compat.modern(argv))


def _site_args(site: Path | None) -> list[str]:
    return ["--site", str(site)] if site else []


# Today's `balsam job add`/`job modify` option for each job field.
_OPTION = {"name": "--name", "workflow": "--workflow", "nodes": "--nodes", "ranks_per_node": "--ranks-per-node",
           "threads_per_rank": "--threads-per-rank", "node_packing_count": "--node-packing", "wall_time_min": "--wall-time"}  # fmt: skip


OLD_APP_HELP = "Balsam 0.x form: `balsam app --name NAME --executable 'PROGRAM ARGS'` registers an app."


def old_app(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", help="(Balsam 0.x) the app's name."),
    executable: str | None = typer.Option(None, "--executable", help="(Balsam 0.x) the program, with fixed arguments; each job's --args follow."),
    preprocess: str = typer.Option("", "--preprocess", help="(Balsam 0.x) a script run in the job folder before the program."),
    postprocess: str = typer.Option("", "--postprocess", help="(Balsam 0.x) a script run in the job folder after it."),
    envs: list[str] = typer.Option([], "--envs", help="(Balsam 0.x) environment NAME=VALUE (repeatable, or NAME=V:NAME2=V2)."),
    description: str = typer.Option("", "--description", help="(Balsam 0.x) free text."),
    site: Path | None = SiteOption,
) -> None:
    given = name is not None or executable is not None
    if ctx.invoked_subcommand is not None:
        if given:
            raise BalsamError(f"--name/--executable are the Balsam 0.x form; use them without `{ctx.invoked_subcommand}`")
        return
    if not given:
        console.print(ctx.get_help())
        raise typer.Exit()
    if not name or executable is None:
        raise BalsamError("the Balsam 0.x form needs both --name NAME and --executable PROGRAM")
    from balsam.site.api import Site

    command = compat.app_command(executable)
    env = compat.parse_envs(envs)
    pre = compat.step_command(preprocess, "--preprocess")
    post = compat.step_command(postprocess, "--postprocess")
    modern = ["balsam", "app", "add", name, "--command", command]
    for key, value in env.items():
        modern += ["--env", f"{key}={value}"]
    modern += (["--preprocess", pre] if pre else []) + (["--postprocess", post] if post else []) + _site_args(site)
    _say(modern)
    with Site.open(site) as s:
        s.add_app(name, command, env=env, preprocess=pre, postprocess=post, description=description)
    console.print(f"added app {name}: {command}")


OLD_JOB_HELP = "Balsam 0.x form: `balsam job --name N --workflow W --application APP --args 'A B'` adds a job."


def old_job(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", help="(Balsam 0.x) the job's name."),
    workflow: str | None = typer.Option(None, "--workflow", help="(Balsam 0.x) its workflow."),
    application: str | None = typer.Option(None, "--application", help="(Balsam 0.x) the app it runs."),
    args: str = typer.Option("", "--args", help="(Balsam 0.x) the program's arguments, split like a command line (no shell)."),
    num_nodes: int | None = typer.Option(None, "--num-nodes", help="(Balsam 0.x) nodes."),
    ranks_per_node: int | None = typer.Option(None, "--ranks-per-node", help="(Balsam 0.x) MPI ranks per node."),
    threads_per_rank: int | None = typer.Option(None, "--threads-per-rank", help="(Balsam 0.x) threads per rank."),
    threads_per_core: int | None = typer.Option(None, "--threads-per-core", help="(Balsam 0.x) accepted; the launcher decides."),
    node_packing_count: int | None = typer.Option(None, "--node-packing-count", help="(Balsam 0.x) jobs sharing one node."),
    wall_time_minutes: float | None = typer.Option(None, "--wall-time-minutes", help="(Balsam 0.x) expected run time."),
    description: str = typer.Option("", "--description", help="(Balsam 0.x) free text, kept in the job's data."),
    yes: bool = typer.Option(False, "--yes", help="(Balsam 0.x) accepted: no prompt is shown anyway."),
    site: Path | None = SiteOption,
) -> None:
    given = any(v is not None for v in (name, workflow, application, num_nodes, ranks_per_node, threads_per_rank))
    if ctx.invoked_subcommand is not None:
        if given or args:
            raise BalsamError(f"--application/--args are the Balsam 0.x form; use them without `{ctx.invoked_subcommand}`")
        return
    if not given and not args:
        console.print(ctx.get_help())
        raise typer.Exit()
    if not application:
        raise BalsamError("the Balsam 0.x form needs --application APP (today: `balsam job add --app APP`)")
    from balsam.site.api import Site

    fields = compat.job_fields(
        name=name, workflow=workflow, args=args, data={"description": description} if description else None,
        num_nodes=num_nodes, ranks_per_node=ranks_per_node, threads_per_rank=threads_per_rank,
        node_packing_count=node_packing_count, wall_time_minutes=wall_time_minutes,
    )  # fmt: skip
    compat.split_words(fields["params"][compat.ARGS], "--args")  # a bad quote fails here, not in the launcher
    modern = ["balsam", "job", "add", "--app", application]
    for key, option in _OPTION.items():
        if key in fields:
            modern += [option, str(fields[key])]
    modern += ["-p", f"{compat.ARGS}={fields['params'][compat.ARGS]}", *_site_args(site)]
    _say(modern)
    with Site.open(site) as s:
        compat.check_old_app(s.app(application).parameters, application)
        job = s.add_job(application, **fields)
    print(job.id)


def ls(
    objects: str = typer.Argument("jobs", help="(Balsam 0.x) jobs, apps or wf."),
    wf: str | None = typer.Option(None, "--wf", help="Only jobs of this workflow."),
    state: str | None = typer.Option(None, "--state", help="Only jobs in this state."),
    name: str | None = typer.Option(None, "--name", help="Only jobs whose name holds this text."),
    by_states: bool = typer.Option(False, "--by-states", help="Group the listing by state."),
    tree: bool = typer.Option(False, "--tree", help="Show the jobs as a tree of dependencies (as `balsam dag`)."),
    site: Path | None = SiteOption,
) -> None:
    """(Balsam 0.x) List jobs, apps or workflows; today: `balsam job ls`, `balsam app ls`."""
    from balsam.site.api import Site

    if objects not in ("jobs", "apps", "wf"):
        raise BalsamError(f"balsam ls lists jobs, apps or wf, not {objects!r}")
    if objects == "apps":
        _say(["balsam", "app", "ls", *_site_args(site)])
        from balsam.site.cli.app_cmds import ls as app_ls

        app_ls(site=site, as_json=False)
        return
    if tree:
        dag(wf=wf, site=site)
        return
    modern = ["balsam", "job", "ls"] + (["--workflow", wf] if wf else []) + (["--state", state] if state else []) + _site_args(site)
    _say(modern + ["--limit", "0"])
    with Site.open(site) as s:
        jobs = [j for j in s.jobs(state=state, workflow=wf) if name is None or name in j.name]
        apps = {a.id: a.name for a in s.apps()}
    if objects == "wf":
        counts: dict[str, dict[str, int]] = {}
        for j in jobs:
            counts.setdefault(j.workflow, {}).setdefault(j.state, 0)
            counts[j.workflow][j.state] += 1
        print_table(["WORKFLOW", "JOBS", "STATES"], [(w, sum(c.values()), compact(c)) for w, c in sorted(counts.items())])
        return
    if by_states:
        jobs.sort(key=lambda j: (j.state, j.id))
    print_table(["ID", "NAME", "WORKFLOW", "APPLICATION", "STATE", "ARGS"],
                [(j.id, j.name, j.workflow, apps.get(j.app_id, ""), j.state, _args_of(j.parameters)) for j in jobs])  # fmt: skip
    console.print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}")


def _args_of(params: dict) -> str:
    if set(params) == {compat.ARGS}:
        return str(params[compat.ARGS])
    return compact(params)


def dag(
    wf: str | None = typer.Option(None, "--wf", "--workflow", help="Only jobs of this workflow."),
    site: Path | None = SiteOption,
) -> None:
    """(Balsam 0.x `ls --tree`) The jobs as a tree: each parent with its children indented below it."""
    from balsam.site.api import Site

    _say(["balsam", "job", "ls"] + (["--workflow", wf] if wf else []) + ["--json", *_site_args(site)])
    with Site.open(site) as s:
        jobs = {j.id: j for j in s.jobs(workflow=wf)}
        children = {i: [c for c in s.children(i) if c in jobs] for i in jobs}
    has_parent = {c for kids in children.values() for c in kids}
    lines: list[str] = []

    def walk(job_id: int, depth: int, seen: frozenset[int]) -> None:
        j = jobs[job_id]
        lines.append(f"{'   ' * depth}{'└─ ' if depth else ''}{j.id} {j.name} [{j.state}]")
        for child in children[job_id]:
            if child not in seen:
                walk(child, depth + 1, seen | {child})

    for root in sorted(i for i in jobs if i not in has_parent):
        walk(root, 0, frozenset({root}))
    for line in lines:
        console.print(line)
    if not lines:
        console.print("no jobs")


def rm(
    objects: str = typer.Argument(..., help="(Balsam 0.x) jobs or apps."),
    job_id: int | None = typer.Option(None, "--id", help="The job's id."),
    name: str | None = typer.Option(None, "--name", help="Jobs whose name holds this text (an app: its name)."),
    remove_all: bool = typer.Option(False, "--all", help="Every job (or app)."),
    force: bool = typer.Option(False, "--force", help="(Balsam 0.x) accepted; removal is refused for held jobs anyway."),
    site: Path | None = SiteOption,
) -> None:
    """(Balsam 0.x) Remove jobs or apps; today: `balsam job rm ID`, `balsam app rm NAME`."""
    from balsam.site.api import Site

    if objects not in ("jobs", "apps"):
        raise BalsamError(f"balsam rm removes jobs or apps, not {objects!r}")
    if sum((job_id is not None, name is not None, remove_all)) != 1:
        raise BalsamError("give exactly one of --id ID, --name TEXT or --all")
    with Site.open(site) as s:
        if objects == "apps":
            names = [a.name for a in s.apps() if remove_all or a.name == name]
            if job_id is not None:
                raise BalsamError("apps are removed by --name")
            for app_name in names:
                _say(["balsam", "app", "rm", app_name, *_site_args(site)])
                s.remove_app(app_name)
                console.print(f"removed app {app_name}")
            return
        if job_id is not None:
            ids = [job_id]
        else:
            ids = [j.id for j in s.jobs() if remove_all or (name or "") in j.name]
        # Children before parents: a job with children cannot be removed.
        for one in sorted(ids, reverse=True):
            _say(["balsam", "job", "rm", str(one), *_site_args(site)])
            s.remove_job(one)
            console.print(f"removed job {one}")
        if not ids:
            console.print("no job matched")


def kill(
    job_id: int = typer.Option(..., "--id", help="The job's id."),
    recursive: bool = typer.Option(False, "--recursive", help="Also kill the jobs that depend on it, and theirs."),
    site: Path | None = SiteOption,
) -> None:
    """(Balsam 0.x `killjob`) Kill a job, keeping it in the database; today: `balsam job kill ID`."""
    from balsam.site.api import Site

    _say(["balsam", "job", "kill", str(job_id), *_site_args(site)])
    with Site.open(site) as s:
        for one in compat.kill(s, job_id, recursive):
            console.print(f"killed job {one}")


# Old attribute names -> today's fields for `balsam modify ID ATTR VALUE`.
_MODIFIABLE = {"name": "name", "workflow": "workflow", **compat.RESOURCES}


def modify(
    target: str = typer.Argument(..., help="The job's id (or the app's name with --type apps)."),
    attr: str = typer.Argument(..., help="state, name, workflow, args, num_nodes, ranks_per_node, threads_per_rank, ..."),
    value: str = typer.Argument(...),
    kind: str = typer.Option("jobs", "--type", help="(Balsam 0.x) jobs or apps."),
    site: Path | None = SiteOption,
) -> None:
    """(Balsam 0.x) Change one attribute of a job; `state READY` reopens a failed or killed job."""
    from balsam.site.api import Site
    from balsam.states import parse_state

    if kind != "jobs":
        raise BalsamError("apps cannot be modified in place: remove the app (`balsam app rm`) and add it again")
    if not target.isdigit():
        raise BalsamError(f"job ids are numbers here, got {target!r} (see `balsam job ls`)")
    job_id = int(target)
    with Site.open(site) as s:
        if attr == "state":
            wanted = parse_state(value)
            if wanted.value not in ("READY", "CREATED", "RESTART_READY"):
                raise BalsamError("a state is changed by the launcher; by hand a FAILED or USER_KILLED job can only be reopened (state READY)")
            _say(["balsam", "job", "reset", target, *_site_args(site)])
            console.print(f"reset job {job_id}: now {s.reset_job(job_id).value}")
            return
        if attr == compat.ARGS:
            compat.split_words(value, "args")
            _say(["balsam", "job", "modify", target, "-p", f"{compat.ARGS}={value}", *_site_args(site)])
            s.modify_job(job_id, params={compat.ARGS: value})
        elif attr in _MODIFIABLE:
            field = _MODIFIABLE[attr]
            typed: object = value
            if field in ("nodes", "ranks_per_node", "threads_per_rank", "node_packing_count"):
                if not value.isdigit():
                    raise BalsamError(f"{attr} must be a whole number, got {value!r}")
                typed = int(value)
            elif field == "wall_time_min":
                try:
                    typed = float(value)
                except ValueError:
                    raise BalsamError(f"{attr} must be a number of minutes, got {value!r}") from None
            _say(["balsam", "job", "modify", target, _OPTION[field], value, *_site_args(site)])
            s.modify_job(job_id, **{field: typed})
        else:
            known = ", ".join(["state", compat.ARGS, *_MODIFIABLE])
            raise BalsamError(f"cannot modify {attr!r}; modifiable: {known}")
    console.print(f"modified job {job_id}: {attr} = {shlex.quote(value)}")
