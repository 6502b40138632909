"""The ``balsam`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from balsam import __version__
from balsam.errors import BalsamError
from balsam.inputs import check_argv
from balsam.site.cli.common import Site
from balsam.site.cli import app_cmds, globus_cmds, job_cmds, launcher_cmd, queue_cmds, site_cmds, transfer_cmds
from balsam.site.cli import compat_cmds, trigger_cmds
from balsam.site.cli.output import console, err_console
from balsam.site.settings import CREDENTIALS_ENV
from balsam.terminal import print_error

cli = typer.Typer(
    help="Balsam: a site's job database, apps, jobs and workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help and usage errors (typer passes this to every group and command): Rich's help
    # formatting loads Markdown and syntax highlighting, more than all of `balsam --help` may take.
    rich_markup_mode=None,
)
cli.add_typer(site_cmds.app, name="site")
cli.add_typer(app_cmds.app, name="app")
cli.add_typer(job_cmds.app, name="job")
cli.add_typer(queue_cmds.app, name="queue")
cli.add_typer(globus_cmds.app, name="globus")
cli.add_typer(transfer_cmds.app, name="transfer")
cli.add_typer(trigger_cmds.app, name="trigger")
cli.command("launcher")(launcher_cmd.launcher)
cli.command("submit-launch")(queue_cmds.submit_launch)
cli.command("qsub")(queue_cmds.qsub)
# The original Balsam's (0.x) commands, as its users type them (balsam.site.cli.compat_cmds).
app_cmds.app.callback(invoke_without_command=True, help=f"Apps: the programs a site runs, as command templates. {compat_cmds.OLD_APP_HELP}")(compat_cmds.old_app)
job_cmds.app.callback(invoke_without_command=True, help=f"Jobs: runs of apps, with parameters, resources and dependencies. {compat_cmds.OLD_JOB_HELP}")(compat_cmds.old_job)
cli.command("ls", help="(Balsam 0.x) List jobs, apps or workflows; today: `balsam job ls`, `balsam app ls`.")(compat_cmds.ls)
cli.command("rm")(compat_cmds.rm)
cli.command("kill")(compat_cmds.kill)
cli.command("killjob", hidden=True)(compat_cmds.kill)
cli.command("modify")(compat_cmds.modify)
cli.command("dag")(compat_cmds.dag)


@cli.command("init")
def init(
    path: Path = typer.Argument(..., help="The new site folder (must not exist, or be empty)."),
    name: str | None = typer.Option(None, "--name", help="The site's name (default: the folder's name)."),
    db_url: str | None = typer.Option(None, "--db-url", help="Use this existing PostgreSQL server instead of a private one."),
    scheduler: str = typer.Option("local", "--scheduler", help="Batch scheduler: local, slurm, pbs, cobalt or lsf."),
    group: str = typer.Option("", "--group", help="Share the site's job folders and logs with this Unix group (default: private to you)."),
    listen: str | None = typer.Option(
        None, "--listen", metavar="ADDRESS",
        help="The database listens on this address of this host, for launchers on other hosts (default: 127.0.0.1 only). "
        "Any address but loopback gets TLS (needs PostgreSQL binaries with SSL) and scram-sha-256 logins.",
    ),
    allow: list[str] = typer.Option([], "--allow", metavar="CIDR", help="With --listen: a network whose hosts may log in (repeatable; default: the listen address's subnet)."),
    plaintext: bool = typer.Option(False, "--plaintext", help="With --listen: no TLS, everything in plain text on the network (warned at every start)."),
    pg_bin: str | None = typer.Option(None, "--pg-bin", metavar="DIR", help="The PostgreSQL server binaries to use (default: found; with --listen, ones with SSL)."),
    project: str | None = site_cmds.ProjectOption,
    queue: str | None = site_cmds.QueueOption,
    elastic_queue: bool | None = site_cmds.ElasticOption,
    max_nodes: int | None = site_cmds.MaxNodesOption,
) -> None:
    """Create a site: a settings file, logs/, data/, and its own PostgreSQL database."""
    with Site.init(path, name=name, db_url=db_url, scheduler=scheduler, group=group, listen=listen, allow=allow,
                   plaintext=plaintext, pg_bin=pg_bin, project=project, queue=queue, elastic_queue=elastic_queue,
                   max_nodes=max_nodes) as site:  # fmt: skip
        settings = site.settings
    console.print(f"created site {settings.name} in {settings.path}")
    console.print(f"scheduler {settings.scheduler.name}; elastic queue {'on' if settings.elastic_queue.enabled else 'off'}"
                  " (change with `balsam site set`)")  # fmt: skip
    console.print(f"use it from inside that folder, or with: export BALSAM_SITE={settings.path}")


@cli.command("demo")
def demo(
    path: Path | None = typer.Option(None, "--path", help="Where to make the demo site (default: a new folder here)."),
) -> None:
    """Make a demo site, add apps and a small workflow of jobs, and show them."""
    from balsam.site.demo import run_demo

    run_demo(path)


@cli.callback(invoke_without_command=True)
def _version(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    db_credentials: Path | None = typer.Option(
        None, "--db-credentials", metavar="FILE",
        help=f"Log in to the site's database with this credentials file (from `balsam site user add`) "
        f"instead of the site's own login (or set ${CREDENTIALS_ENV}).",
    ),
) -> None:
    if db_credentials is not None:
        # Through the environment, so the launchers and batch scripts this command starts log in the same way.
        os.environ[CREDENTIALS_ENV] = str(db_credentials.expanduser().resolve())
    if version:
        print(__version__)
        raise typer.Exit()


def main() -> None:
    try:
        check_argv(sys.argv[1:])  # one check for every option: text that no database or message can carry
        cli()
    except BalsamError as exc:
        print_error(err_console, str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if not _from_the_database(exc):
            raise
        # Validation should have caught it first; still one line, not a traceback.
        import psycopg2.errors

        from balsam.site.access import refusal_message

        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).strip().splitlines() or [""])[0]
        if isinstance(orig, psycopg2.errors.InsufficientPrivilege):
            # Not a bug but the rights of this login: say whose, and what it may do.
            print_error(err_console, refusal_message(reason))
        else:
            print_error(err_console, f"the database refused the request: {reason}")
        sys.exit(1)


def _from_the_database(exc: Exception) -> bool:
    """A refusal by the database (SQLAlchemy's DBAPIError, psycopg2's Error). Checked only once those
    libraries are loaded: an error cannot be theirs before, and help must not wait for them."""
    if "psycopg2" not in sys.modules:
        return False
    import psycopg2
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, (DBAPIError, psycopg2.Error))


if __name__ == "__main__":
    main()
