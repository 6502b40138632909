"""Container command lines (apptainer / singularity exec), compared as exact argument vectors.

The pure tests need no runtime. The two real-runtime tests run only where one is installed
(`find_runtime()`); the one that starts a program inside an image also needs an image, named by
BALSAM_TEST_CONTAINER_IMAGE (a .sif file or any image reference the runtime accepts), since this
project ships none and cannot fetch one. Each skips with its reason otherwise.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from balsam.launcher.containers import RUNTIMES, find_runtime, wrap

WORKDIR = "/site/data/wf/42"
IMAGE = "/images/app.sif"
HOSTILE_ARG = "a b; rm -rf / && echo $HOME 'q' \"d\""
APP = ["/opt/app/bin/sim", "--input", HOSTILE_ARG, "*.dat"]


# --- find_runtime ------------------------------------------------------------------------------


def fake_which(present: dict[str, str]):
    asked = []

    def which(name: str) -> str | None:
        asked.append(name)
        return present.get(name)

    which.asked = asked
    return which


def test_find_runtime_prefers_apptainer():
    which = fake_which({"apptainer": "/usr/bin/apptainer", "singularity": "/usr/bin/singularity"})
    assert find_runtime(which) == "/usr/bin/apptainer"
    assert which.asked == ["apptainer"]


def test_find_runtime_falls_back_to_singularity():
    which = fake_which({"singularity": "/opt/sing/bin/singularity"})
    assert find_runtime(which) == "/opt/sing/bin/singularity"
    assert which.asked == ["apptainer", "singularity"]


def test_find_runtime_none_when_neither_present():
    which = fake_which({})
    assert find_runtime(which) is None
    assert which.asked == list(RUNTIMES)


def test_find_runtime_default_uses_shutil_which():
    # Whatever this machine has, the default lookup agrees with a PATH search done by hand.
    import shutil

    expected = shutil.which("apptainer") or shutil.which("singularity")
    assert find_runtime() == expected


# --- exact command lines -----------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["/usr/bin/apptainer", "/usr/local/bin/singularity"])
def test_plain(runtime):
    assert wrap(runtime, IMAGE, APP, workdir=WORKDIR) == [
        runtime, "exec", "--bind", WORKDIR, "--pwd", WORKDIR, IMAGE, *APP,
    ]  # fmt: skip


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_gpus(runtime):
    assert wrap(runtime, IMAGE, ["nvidia-smi"], workdir=WORKDIR, gpus=True) == [
        runtime, "exec", "--nv", "--bind", WORKDIR, "--pwd", WORKDIR, IMAGE, "nvidia-smi",
    ]  # fmt: skip


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_binds(runtime):
    argv = wrap(runtime, IMAGE, APP, workdir=WORKDIR, binds=["/scratch/shared", "/opt/data set"])
    assert argv == [
        runtime, "exec",
        "--bind", WORKDIR, "--bind", "/scratch/shared", "--bind", "/opt/data set",
        "--pwd", WORKDIR, IMAGE, *APP,
    ]  # fmt: skip


def test_gpus_and_binds():
    argv = wrap("apptainer", "docker://ubuntu:22.04", ["python", "-c", "print(1)"], workdir=WORKDIR, gpus=True, binds=["/lus"])
    assert argv == [
        "apptainer", "exec", "--nv", "--bind", WORKDIR, "--bind", "/lus",
        "--pwd", WORKDIR, "docker://ubuntu:22.04", "python", "-c", "print(1)",
    ]  # fmt: skip


def test_duplicate_binds_collapse():
    argv = wrap("apptainer", IMAGE, ["true"], workdir=WORKDIR, binds=[WORKDIR, "/a", "/a"])
    assert argv == ["apptainer", "exec", "--bind", WORKDIR, "--bind", "/a", "--pwd", WORKDIR, IMAGE, "true"]


def test_path_objects_accepted_for_workdir_and_binds():
    argv = wrap("apptainer", IMAGE, ["true"], workdir=Path(WORKDIR), binds=[Path("/a")])
    assert argv == ["apptainer", "exec", "--bind", WORKDIR, "--bind", "/a", "--pwd", WORKDIR, IMAGE, "true"]
    assert all(isinstance(a, str) for a in argv)


def test_hostile_arguments_stay_single_elements():
    args = ["sh", "-c", "echo 'x' \"y\"; ls", "two words", "a;b", "$(id)", "--nv", "--bind=/etc", ""]
    argv = wrap("apptainer", IMAGE, args, workdir=WORKDIR)
    # The program's arguments follow the image one for one, untouched, however they look.
    assert argv[argv.index(IMAGE) + 1 :] == args
    assert argv.count("--nv") == 1 and argv.count("--bind") == 1


def test_input_not_mutated():
    args = list(APP)
    binds = ["/a"]
    wrap("apptainer", IMAGE, args, workdir=WORKDIR, gpus=True, binds=binds)
    assert args == APP and binds == ["/a"]


# --- validation --------------------------------------------------------------------------------


def bad(match: str, **overrides):
    kwargs = {"runtime": "apptainer", "image": IMAGE, "argv": list(APP), "workdir": WORKDIR}
    kwargs.update(overrides)
    runtime, image, argv = kwargs.pop("runtime"), kwargs.pop("image"), kwargs.pop("argv")
    with pytest.raises(ValueError, match=match):
        wrap(runtime, image, argv, **kwargs)


@pytest.mark.parametrize("image", ["", "   "])
def test_empty_image(image):
    bad("image is empty", image=image)


@pytest.mark.parametrize("image", ["-", "--nv", "-B/etc"])
def test_image_like_an_option(image):
    bad("starts with '-'", image=image)


def test_empty_argv():
    bad("argv is empty", argv=[])


def test_empty_program():
    bad(r"argv\[0\] is empty", argv=["", "x"])


def test_empty_runtime():
    bad("runtime is empty", runtime="")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("runtime", "apptainer\x00", "runtime contains a NUL"),
        ("image", "/img\x00.sif", "image contains a NUL"),
        ("argv", ["prog", "ok", "b\x00d"], r"argv\[2\] contains a NUL"),
        ("argv", ["pr\x00g"], r"argv\[0\] contains a NUL"),
        ("workdir", "/site/da\x00ta", "workdir contains a NUL"),
        ("binds", ["/ok", "/b\x00d"], r"bind\[1\] contains a NUL"),
    ],
)
def test_nul_anywhere(field, value, match):
    bad(match, **{field: value})


@pytest.mark.parametrize("path", ["/data:/mnt", "/data:ro", "/a,/b", "/x,y"])
def test_bind_with_separator(path):
    bad(r"bind\[0\] .* contains '[:,]', which --bind reads as a separator", binds=[path])


@pytest.mark.parametrize("path", ["/site:1/data", "/site,a/data"])
def test_workdir_with_separator(path):
    bad("workdir .* contains '[:,]'", workdir=path)


@pytest.mark.parametrize("path", ["data/wf/42", ".", "./job", "~/job"])
def test_relative_workdir(path):
    bad("workdir .* is relative", workdir=path)


def test_empty_workdir():
    bad("workdir is empty", workdir="")


def test_relative_bind():
    bad(r"bind\[0\] 'scratch' is relative", binds=["scratch"])


def test_empty_bind():
    bad(r"bind\[1\] is empty", binds=["/a", ""])


def test_binds_given_as_one_string():
    with pytest.raises(TypeError, match="binds must be a list of paths"):
        wrap("apptainer", IMAGE, APP, workdir=WORKDIR, binds="/scratch")


def test_non_string_argument():
    with pytest.raises(TypeError, match=r"argv\[1\] must be a string, not int"):
        wrap("apptainer", IMAGE, ["prog", 3], workdir=WORKDIR)


# --- with a real runtime -----------------------------------------------------------------------

RUNTIME = find_runtime()
needs_runtime = pytest.mark.skipif(
    RUNTIME is None, reason="neither apptainer nor singularity is installed on this machine"
)


@needs_runtime
def test_real_runtime_answers_version():
    # Needs no image: proves the path find_runtime() returned is a working runtime.
    done = subprocess.run([RUNTIME, "--version"], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert any(name in done.stdout.lower() for name in RUNTIMES), done.stdout


def test_real_run_in_image(tmp_path):
    if RUNTIME is None:
        pytest.skip("neither apptainer nor singularity is installed on this machine")
    image = os.environ.get("BALSAM_TEST_CONTAINER_IMAGE")
    if not image:
        pytest.skip("no container image available offline; set BALSAM_TEST_CONTAINER_IMAGE to run a program in one")
    workdir = tmp_path / "job"
    shared = tmp_path / "shared"
    workdir.mkdir()
    shared.mkdir()
    (shared / "input.txt").write_text("from the host\n")
    script = 'pwd; cat "$1"; echo "$OMP_NUM_THREADS"; printf "%s\\n" "$2"'
    argv = wrap(RUNTIME, image, ["sh", "-c", script, "sh", str(shared / "input.txt"), HOSTILE_ARG], workdir=str(workdir), binds=[str(shared)])
    env = dict(os.environ, OMP_NUM_THREADS="3")
    done = subprocess.run(argv, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(workdir), "from the host", "3", HOSTILE_ARG]
