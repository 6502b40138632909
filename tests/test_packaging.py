"""The built wheel ships every module of every mapped folder, and a plain venv can find them all."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Written out here rather than read from setup.py: a test reading setup.py's own list could not
# notice a folder dropped from it. The modules inside each folder are read from the source tree.
FOLDERS = {"common": "balsam", "protos": "balsam.protos", "site": "balsam.site",
           "launcher": "balsam.launcher", "transfer": "balsam.transfer", "argo": "balsam.argo"}  # fmt: skip
DATA_FILES = ["balsam/site/db/migrations/script.py.mako", "balsam/argo/web/templates/workflow.html", "balsam/argo/web/static/app.js",
              "balsam/web/static/style.css", "balsam/web/templates/signin.html", "balsam/site/web/templates/jobs.html",
              "balsam/site/web/static/site.js"]

pytestmark = pytest.mark.timeout(60)


def expected_modules() -> dict[str, str]:
    """Every module of the mapped folders: its import name -> its path inside the wheel."""
    modules = {}
    for folder, package in FOLDERS.items():
        for source in sorted((ROOT / folder).rglob("*.py")):
            rel = source.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            parts = [*package.split("."), *rel.with_suffix("").parts]
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = "/".join([*package.split("."), *rel.parts])
    return modules


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a clean copy (the root's files and the mapped folders): pip builds in the source
    # tree, where setuptools would reuse a stale build/lib, whose leftovers can hide a dropped
    # package, and would write build/ into the checkout.
    tmp = tmp_path_factory.mktemp("wheel")
    (tmp / "src").mkdir()
    for item in ROOT.iterdir():
        if item.is_file():
            shutil.copy2(item, tmp / "src")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, tmp / "src" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # With build isolation (the default): the build requirements come from PyPI, not this venv.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tmp / "src"), "--no-deps", "-w", str(tmp / "dist")],
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    (built,) = (tmp / "dist").glob("balsam_argo-*.whl")
    return built


def test_wheel_has_every_module_and_the_cli(wheel: Path) -> None:
    scripts = configparser.ConfigParser()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for entry_points in [n for n in names if n.endswith(".dist-info/entry_points.txt")]:
            scripts.read_string(archive.read(entry_points).decode())
    missing = sorted((set(expected_modules().values()) | set(DATA_FILES)) - names)
    assert not missing, "the wheel is missing:\n  " + "\n  ".join(missing)
    assert scripts.has_option("console_scripts", "balsam"), "the wheel declares no `balsam` console script"
    target = scripts.get("console_scripts", "balsam").split(":")[0].strip()
    assert target.replace(".", "/") + ".py" in names, f"the `balsam` script points at {target}, not in the wheel"


# Runs in the fresh venv. The packages' __init__ files import SQLAlchemy and friends, which are not
# installed there (--no-deps keeps this test offline and fast), so modules are located by walking
# the import path one package at a time with PathFinder, which finds without executing anything.
_FIND = """
import json, sys
from importlib.machinery import PathFinder
from pathlib import Path
modules, data_files = json.loads(sys.argv[1])
missing = []
for name in modules:
    parts, path, spec = name.split("."), None, None
    for depth in range(1, len(parts) + 1):
        spec = PathFinder.find_spec(".".join(parts[:depth]), path)
        if spec is None:
            break
        path = spec.submodule_search_locations
    if spec is None or not spec.origin or not spec.origin.startswith(sys.prefix):
        missing.append(f"{name} (found at {spec.origin if spec else None})")
root = Path(PathFinder.find_spec("balsam").origin).parents[1]
missing += [f for f in data_files if not (root / f).is_file()]
print(json.dumps(missing))
"""


def test_wheel_installs_into_a_plain_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=50)  # no system site-packages
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert install.returncode == 0, f"pip install failed:\n{install.stderr[-2000:]}"
    modules = sorted(expected_modules())
    found = subprocess.run(
        [str(python), "-I", "-c", _FIND, json.dumps([modules, DATA_FILES])],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    missing = json.loads(found.stdout)
    assert not missing, "not importable from the installed wheel:\n  " + "\n  ".join(missing)
    assert (venv / "bin" / "balsam").is_file(), "installing the wheel made no `balsam` script"
