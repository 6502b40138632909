"""``balsam app add | ls | rm``."""

from __future__ import annotations

from pathlib import Path

import typer

from balsam.site.cli.common import JsonOption, Site, SiteOption, parse_assignments
from balsam.site.cli.output import app_record, compact, console, err_console, print_json, print_table

app = typer.Typer(help="Apps: the programs a site runs, as command templates.", no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Name jobs use to refer to the app."),
    command: str = typer.Option(..., "--command", "-c", help="Command template, e.g. 'prog --x {x} {infile}'."),
    env: list[str] = typer.Option([], "--env", help="Environment variable K=V for its runs (repeatable)."),
    preprocess: str | None = typer.Option(None, "--preprocess", help="Command run in the job folder before the app."),
    postprocess: str | None = typer.Option(None, "--postprocess", help="Command run in the job folder after the app."),
    on_error: str = typer.Option("fail", "--on-error", help="On a non-zero exit: retry | rescue | fail."),
    max_retries: int = typer.Option(3, "--max-retries", help="Retries before a job fails."),
    on_timeout: str = typer.Option("fail", "--on-timeout", help="When a run is timed out: retry | fail."),
    image: str | None = typer.Option(None, "--image", help="Container image to run the app in."),
    description: str = typer.Option("", "--description", help="Free text shown by `app ls`."),
    launch: str = typer.Option("mpi", "--launch", help="mpi: the launcher starts the ranks; script: the command runs once and starts its own."),
    site: Path | None = SiteOption,
) -> None:
    """Register an app: a command template whose {placeholders} each job fills in."""
    with Site.open(site) as s:
        created = s.add_app(
            name, command, env=parse_assignments(env, "--env"), preprocess=preprocess, postprocess=postprocess,
            on_error=on_error, max_retries=max_retries, on_timeout=on_timeout, image=image, description=description,
            launch=launch,
        )  # fmt: skip
    params = ", ".join(created.parameters) or "none"
    console.print(f"added app {created.name} (parameters: {params})")


@app.command("ls")
def ls(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """List the site's apps."""
    with Site.open(site) as s:
        apps = s.apps()
    if as_json:
        print_json([app_record(a) for a in apps])
        return
    print_table(
        ["NAME", "COMMAND", "PARAMETERS", "ON ERROR", "ON TIMEOUT", "ENV", "DESCRIPTION"],
        [(a.name, a.command_template, ", ".join(a.parameters), f"{a.on_error} (max {a.max_retries})",
          a.on_timeout, compact(a.environment), a.description) for a in apps],
    )  # fmt: skip
    if not apps:
        console.print("no apps yet: add one with `balsam app add NAME --command '...'`")


@app.command("rm")
def rm(name: str = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Remove an app that no job uses."""
    with Site.open(site) as s:
        s.remove_app(name)
    console.print(f"removed app {name}")


@app.command("model")
def model(
    name: str = typer.Argument(..., help="The app."),
    feature: str | None = typer.Option(
        None, "--feature", help="Numeric parameter the run time scales with (T = s + p*PARAM/n) [default: perf.features, else none]."
    ),
    value: float | None = typer.Option(None, "--value", help="Feature value to predict the time at [default: the runs' median]."),
    plot_file: Path | None = typer.Option(None, "--plot", help="Where to write the PNG plot [default: SITE/logs/model-APP.png]."),
    site: Path | None = SiteOption,
    as_json: bool = JsonOption,
) -> None:
    """The app's performance model, fitted now from its finished runs: times, error and parallel efficiency."""
    import statistics

    from balsam.site import perf_data
    from balsam.site.perfmodel import TooLittleData, numeric

    with Site.open(site) as s:
        try:
            fitted, measured = perf_data.app_model(s, name, feature)
        except TooLittleData as exc:
            # Not an error: the app simply has not run enough yet, and its defaults hold.
            if as_json:
                print_json({"app": name, "model": None, "reason": str(exc)})
            else:
                console.print(f"no model yet: {exc}. Jobs of {name} keep the app's defaults (1 node, no wall time).")
            return
        settings = s.settings
        remembered = None
        if feature is not None and settings.perf.features.get(name, "") != feature:
            # The feature chosen here is the one `job add --nodes auto`, the elastic queue and Argo use too.
            if feature:
                settings.perf.features[name] = feature
            else:
                settings.perf.features.pop(name, None)
            settings.save()
            remembered = feature
    widest = perf_data.max_nodes(settings)
    if value is not None and fitted.feature is None:
        err_console.print(f"note: the model of {name} has no feature, so --value has no effect; choose one with --feature PARAM")
    x = value
    if fitted.feature is not None and x is None:
        xs = [v for v in (numeric(r.params.get(fitted.feature)) for r in measured) if v is not None and v >= 0]
        x = statistics.median(xs)
    table = fitted.table(widest, x) if fitted.node_dependent else []
    # Every run on one node count: the time there is still known (and the feature's effect on it).
    only = None if fitted.node_dependent else {"nodes": fitted.node_counts[0], "seconds": fitted.predict(fitted.node_counts[0], x)}
    path = plot_file or settings.logs_dir / f"model-{name}.png"
    perf_data.plot(fitted, measured, path, widest)
    if as_json:
        print_json({"app": name, "model": fitted.describe(), "at": {fitted.feature: x} if fitted.feature else {},
                    "efficiency": table, "prediction": table or [only], "plot": str(path)})  # fmt: skip
        return
    form = "T(n) = s + p/n" if fitted.feature is None else f"T(n) = s + p*{fitted.feature}/n"
    console.print(f"app {name}: {form}, n = nodes")
    console.print(f"  serial s = {fitted.serial_s:.4g} s, parallel p = {fitted.parallel_s:.4g} s"
                  + (f" per unit of {fitted.feature}" if fitted.feature else ""))  # fmt: skip
    console.print(f"  fitted to {fitted.runs} run(s) on node counts {', '.join(map(str, fitted.node_counts))}"
                  + (f" ({fitted.skipped} left out)" if fitted.skipped else ""))  # fmt: skip
    console.print(f"  error: RMS {fitted.rms_rel_error:.1%}, {fitted.quantile:g} quantile {fitted.q_rel_error:.1%}, "
                  f"max {fitted.max_rel_error:.1%} (relative)")  # fmt: skip
    if table:
        at = f" at {fitted.feature} = {x:g}" if fitted.feature else ""
        print_table(["NODES", "SECONDS", "SPEEDUP", "EFFICIENCY"],
                    [(r["nodes"], f"{r['seconds']:.4g}", f"{r['speedup']:.2f}", f"{r['efficiency']:.2f}") for r in table],
                    title=f"predicted{at}")  # fmt: skip
    else:
        at = f" at {fitted.feature} = {x:g}" if fitted.feature else ""
        console.print(f"  predicted{at} on {only['nodes']} node(s): {only['seconds']:.4g} s")
        console.print(f"  all runs on {only['nodes']} node(s): how the time changes with the node count is unknown "
                      "(run some jobs on another node count to learn it)")  # fmt: skip
    console.print(f"plot: {path}")
    if remembered is not None:
        console.print(f"saved perf.features[{name!r}] = {remembered!r} in {settings.settings_file}: `job add --nodes auto`,"
                      " the elastic queue and Argo use this model now")  # fmt: skip
