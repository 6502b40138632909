"""Build the argument vector that starts an MPI job on a chosen set of nodes.

Every renderer is pure and returns a list of arguments for `subprocess` (never a shell string),
so an application argument with spaces, quotes or ``;`` stays one element and nothing is
re-parsed by a shell. The environment the job needs travels inside the vector, so a logged
command line reproduces the run:

* openmpi: ``-x K=V`` (checked with Open MPI 5: commas, spaces and ``;`` arrive intact and the
  value overrides one inherited from mpirun's own environment);
* mpich (Hydra): ``-genv K V`` (checked the same way with MPICH 5);
* srun: ``--export=ALL`` and then ``env K=V ... app``. Slurm documents that with
  ``--export=ALL,K=V`` a K already present in srun's own environment wins over the explicit
  value, and ``--export`` splits on commas, so values like ``CUDA_VISIBLE_DEVICES=0,1`` could
  neither be passed nor trusted to override; ``env`` sets them after Slurm is done.
* aprun: ``-e K=V``, one argument each.

Binding: a pilot packs several MPI jobs onto the same nodes at once, and each mpirun binds from
core 0 without knowing about the others, so Open MPI gets ``--bind-to none`` unless the caller
asks for ``bind_to="core"`` (only sound when the job owns its nodes). GPUs are assigned by the
caller through ``env`` (e.g. CUDA_VISIBLE_DEVICES); only srun has a flag for them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CRAY_NID = re.compile(r"(?:nid)?(\d+)")


@dataclass(frozen=True)
class MpiRun:
    argv: list[str]
    nodes: list[str]
    ranks_per_node: int
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def total_ranks(self) -> int:
        return self.ranks_per_node * len(self.nodes)


def validate(run: MpiRun) -> None:
    """Raise ValueError for a run no launcher could start as meant."""
    if not run.argv:
        raise ValueError("MpiRun.argv is empty: nothing to run")
    if not run.argv[0] or run.argv[0].startswith("-"):
        # The launchers would read it as one of their own options.
        raise ValueError(f"MpiRun.argv[0] must name a program, got {run.argv[0]!r}")
    if any("\0" in arg for arg in run.argv):
        raise ValueError("MpiRun.argv contains a NUL character, which no process can receive")
    if not run.nodes:
        raise ValueError("MpiRun.nodes is empty: at least one node is needed")
    for host in run.nodes:
        if not _HOSTNAME.fullmatch(host):
            # Commas, colons and spaces would corrupt the host lists the launchers parse.
            raise ValueError(f"MpiRun.nodes: invalid hostname {host!r}")
    if len(set(run.nodes)) != len(run.nodes):
        raise ValueError(f"MpiRun.nodes lists a host twice: {run.nodes}")
    if run.ranks_per_node < 1:
        raise ValueError(f"MpiRun.ranks_per_node must be >= 1, got {run.ranks_per_node}")
    if run.threads_per_rank < 1:
        raise ValueError(f"MpiRun.threads_per_rank must be >= 1, got {run.threads_per_rank}")
    if run.gpus_per_rank < 0:
        raise ValueError(f"MpiRun.gpus_per_rank must be >= 0, got {run.gpus_per_rank}")
    for name, value in run.env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"MpiRun.env: invalid variable name {name!r}")
        if "\0" in value:
            raise ValueError(f"MpiRun.env: value of {name} contains a NUL character")


def render_openmpi(
    run: MpiRun,
    *,
    executable: str = "mpirun",
    hostfile: str | None = None,
    bind_to: str = "none",
    oversubscribe: bool = False,
    allow_run_as_root: bool = False,
) -> list[str]:
    """Open MPI's mpirun. With `hostfile` the caller must have written
    `openmpi_hostfile(run)` there (for node lists too long for one argument)."""
    validate(run)
    if bind_to not in ("none", "core"):
        raise ValueError(f"bind_to must be 'none' or 'core', got {bind_to!r}")
    mapping = f"ppr:{run.ranks_per_node}:node"
    if bind_to == "core" and run.threads_per_rank > 1:
        mapping += f":PE={run.threads_per_rank}"  # give each rank a core per thread
    if hostfile is not None:
        hosts = ["--hostfile", hostfile]
    else:
        hosts = ["--host", ",".join(f"{h}:{run.ranks_per_node}" for h in run.nodes)]
    args = [executable, "-n", str(run.total_ranks), *hosts, "--map-by", mapping, "--bind-to", bind_to]
    for name, value in run.env.items():
        args += ["-x", f"{name}={value}"]
    if oversubscribe:
        args.append("--oversubscribe")
    if allow_run_as_root:
        args.append("--allow-run-as-root")
    return args + run.argv


def openmpi_hostfile(run: MpiRun) -> str:
    """Text of an Open MPI hostfile giving each node `ranks_per_node` slots."""
    validate(run)
    return "".join(f"{host} slots={run.ranks_per_node}\n" for host in run.nodes)


def render_mpich(run: MpiRun, *, executable: str = "mpiexec") -> list[str]:
    """MPICH's Hydra mpiexec; single-dash options, which Intel MPI and MVAPICH accept too."""
    validate(run)
    args = [executable, "-n", str(run.total_ranks), "-ppn", str(run.ranks_per_node)]
    args += ["-hosts", ",".join(run.nodes)]
    for name, value in run.env.items():
        args += ["-genv", name, value]
    return args + run.argv


def render_srun(run: MpiRun, *, executable: str = "srun") -> list[str]:
    """Slurm's srun inside an existing allocation."""
    validate(run)
    if run.env and "=" in run.argv[0]:
        raise ValueError(f"srun: program {run.argv[0]!r} contains '=', which env(1) would take for a variable")
    args = [executable, "-N", str(len(run.nodes)), "-n", str(run.total_ranks)]
    args += ["--ntasks-per-node", str(run.ranks_per_node), "--cpus-per-task", str(run.threads_per_rank)]
    args += ["--nodelist", ",".join(run.nodes)]
    if run.gpus_per_rank > 0:
        args += ["--gpus-per-task", str(run.gpus_per_rank)]
    args.append("--export=ALL")
    if run.env:
        args += ["env", *(f"{name}={value}" for name, value in run.env.items())]
    return args + run.argv


def render_aprun(run: MpiRun, *, executable: str = "aprun") -> list[str]:
    """Cray ALPS aprun. Its -L takes numeric node ids, so hostnames must be ``nidNNNNN`` (or
    bare ids)."""
    validate(run)
    ids = []
    for host in run.nodes:
        match = _CRAY_NID.fullmatch(host)
        if not match:
            raise ValueError(f"aprun: cannot derive a Cray node id from hostname {host!r}")
        ids.append(str(int(match.group(1))))
    args = [executable, "-n", str(run.total_ranks), "-N", str(run.ranks_per_node)]
    args += ["-d", str(run.threads_per_rank), "-cc", "depth", "-L", ",".join(ids)]
    for name, value in run.env.items():
        args += ["-e", f"{name}={value}"]
    return args + run.argv


_RENDERERS: dict[str, Callable[..., list[str]]] = {
    "openmpi": render_openmpi,
    "mpich": render_mpich,
    "srun": render_srun,
    "aprun": render_aprun,
}
FLAVOURS = tuple(sorted(_RENDERERS))


def render(flavour: str, run: MpiRun, **flags: object) -> list[str]:
    """Render `run` for `flavour`; `flags` are that renderer's keyword options."""
    renderer = _RENDERERS.get(flavour)
    if renderer is None:
        raise ValueError(f"unknown MPI flavour {flavour!r}; valid flavours: {', '.join(FLAVOURS)}")
    accepted = [p.name for p in inspect.signature(renderer).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(flags) - set(accepted))
    if unknown:
        raise ValueError(f"{flavour} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    return renderer(run, **flags)


def render_ensemble(flavour: str, hosts: list[str], argv: list[str], env: dict[str, str], **flags: object) -> list[str]:
    """The serial-mode ensemble: ``len(hosts) + 1`` ranks, two on the first host, one on each other.

    Rank 0 (the launcher's loop) and rank 1 (the first node's worker) share the first host;
    rank i serves ``hosts[i-1]``. Placement is by slot, so host i's slot count sets its ranks.
    """
    run = MpiRun(argv=argv, nodes=hosts, ranks_per_node=1, env=env)
    validate(run)
    slots = ",".join(f"{host}:{2 if i == 0 else 1}" for i, host in enumerate(hosts))
    ranks = str(len(hosts) + 1)
    if flavour == "openmpi":
        # OVERSUBSCRIBE: a batch job may grant one slot per node (Slurm's `sbatch -N 3`), and mpirun would
        # then refuse the first host's second rank; that rank is the launcher's loop, which mostly waits.
        args = [str(flags.get("executable", "mpirun")), "-n", ranks, "--host", slots, "--map-by", "slot:OVERSUBSCRIBE",
                "--bind-to", "none"]  # fmt: skip
        for name, value in env.items():
            args += ["-x", f"{name}={value}"]
        if flags.get("allow_run_as_root"):
            args.append("--allow-run-as-root")
        return args + argv
    if flavour == "mpich":
        args = [str(flags.get("executable", "mpiexec")), "-n", ranks, "-hosts", slots]
        for name, value in env.items():
            args += ["-genv", name, value]
        return args + argv
    raise ValueError(f"the serial ensemble needs mpirun (Open MPI) or mpiexec (MPICH) to place its ranks, not {flavour}")


def detect_flavour(version_text: str) -> str:
    """Map the output of `mpirun --version` to "openmpi" or "mpich".

    Open MPI prints ``mpirun (Open MPI) X.Y.Z``; MPICH and its Hydra-based relatives print a
    ``HYDRA build details:`` block; Intel MPI names itself.
    """
    if re.search(r"\(Open MPI\)|\bOpenRTE\b", version_text):
        return "openmpi"
    if re.search(r"HYDRA build details|\bMPICH\b|MVAPICH|Intel\(R\) MPI Library", version_text):
        return "mpich"
    first = version_text.strip().splitlines()[0] if version_text.strip() else ""
    raise ValueError(f"cannot tell the MPI flavour from `mpirun --version` output {first!r}")
