"""Running a job's program inside a container image with Apptainer or Singularity.

An app may name a container image; its jobs then start as
``RUNTIME exec [--nv] --bind WORKDIR [--bind PATH ...] --pwd WORKDIR IMAGE PROG ARGS...``,
where RUNTIME is ``apptainer`` or, failing that, ``singularity`` (same command-line interface for
these flags).

`wrap` is a pure function: it reads no files, environment or clock and starts nothing, it only
turns its inputs into an argument vector (a list for `subprocess`, never a shell string) or
raises ValueError. Every command line can therefore be tested exactly without a runtime or an
image, and the launcher decides separately, once, which runtime it has (`find_runtime`, whose
lookup is injectable).

Arguments after the image go to the program untouched: ``exec`` stops reading its own options at
the image, so a program argument beginning with ``-`` is not taken as a runtime flag; only the
image itself must not start with ``-``. Bind specs are ``src[:dest[:opts]]`` and several may be
joined with commas, so a path used in ``--bind`` may contain neither ``:`` nor ``,``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable

__all__ = ["RUNTIMES", "find_runtime", "wrap"]

# Looked up in this order: Apptainer is the continuation of Singularity; sites that still ship
# only `singularity` (or SingularityCE) accept the same exec flags used here.
RUNTIMES = ("apptainer", "singularity")

# Environment: no --cleanenv. The launcher hands each job its variables through the process
# environment (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS, BALSAM_JOB_ID, ...; under MPI they arrive
# via mpirun -x / -genv / env), and both runtimes pass the host environment into the container by
# default. --cleanenv would drop all of them, and each would have to be repeated as
# APPTAINERENV_X (SINGULARITYENV_X for singularity) or --env, a second channel to keep in step.
# Caveats that remain, from the runtimes' documentation: PATH and LD_LIBRARY_PATH are reset to
# the container's defaults, and a variable the image itself sets (%environment or the Docker
# ENV it was built from) is NOT overridden by the host's value of the same name.


def find_runtime(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The path of the container runtime here: apptainer if present, else singularity, else None."""
    for name in RUNTIMES:
        path = which(name)
        if path:
            return path
    return None


def _check_text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"container {what} must be a string, not {type(value).__name__}: {value!r}")
    if "\x00" in value:
        raise ValueError(f"container {what} contains a NUL character: {value!r}")
    return value


def _check_bind_path(what: str, path: object) -> str:
    path = _check_text(what, os.fspath(path) if isinstance(path, os.PathLike) else path)
    if not path:
        raise ValueError(f"container {what} is empty")
    for separator in (":", ","):
        if separator in path:
            raise ValueError(
                f"container {what} {path!r} contains {separator!r}, which --bind reads as a separator "
                "(specs are src[:dest[:opts]], several joined by ','); use a path without ':' or ','"
            )
    if not os.path.isabs(path):
        # A relative source is resolved against the runtime's own working folder, which is not
        # where the job runs, and the mount point inside the container must be absolute anyway.
        raise ValueError(f"container {what} {path!r} is relative; give an absolute path")
    return path


def wrap(
    runtime: str,
    image: str,
    argv: list[str],
    *,
    workdir: str | os.PathLike[str],
    gpus: bool = False,
    binds: Iterable[str | os.PathLike[str]] = (),
) -> list[str]:
    """The argument vector that runs ``argv`` inside ``image`` with ``runtime``, in ``workdir``.

    ``workdir`` (the job's working folder, absolute) is bound at the same path inside the
    container and made the program's starting folder (``--pwd``), so relative paths in the job's
    arguments mean the same inside and out. Each of ``binds`` is bound at its own path too.
    ``gpus`` adds ``--nv`` (NVIDIA driver libraries and devices made visible in the container).
    Raises ValueError naming the problem for an empty or option-like image, an empty argv, a NUL
    anywhere, or a bind/workdir path that is relative or contains ``:`` or ``,``; TypeError for
    an argument that is not a string (or a path, for workdir and binds).
    """
    runtime = _check_text("runtime", runtime)
    if not runtime:
        raise ValueError("container runtime is empty: expected the path of apptainer or singularity")
    image = _check_text("image", image)
    if not image.strip():
        raise ValueError("container image is empty")
    if image.startswith("-"):
        raise ValueError(f"container image {image!r} starts with '-' and would be read as an option of '{runtime} exec'")
    argv = list(argv)
    if not argv:
        raise ValueError("argv is empty: there is no program to run in the container")
    for i, arg in enumerate(argv):
        _check_text(f"argv[{i}]", arg)
    if not argv[0]:
        raise ValueError("argv[0] is empty: there is no program to run in the container")
    workdir = _check_bind_path("workdir", workdir)
    if isinstance(binds, (str, bytes, os.PathLike)):
        raise TypeError(f"binds must be a list of paths, not a single path: {binds!r}")
    paths = [workdir]
    for i, bind in enumerate(binds):
        path = _check_bind_path(f"bind[{i}]", bind)
        if path not in paths:  # binding a path twice adds nothing
            paths.append(path)

    command = [runtime, "exec"]
    if gpus:
        command.append("--nv")
    for path in paths:
        command += ["--bind", path]
    command += ["--pwd", workdir, image]
    return command + argv
