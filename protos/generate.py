"""Regenerate the Python modules of the .proto files in this folder, or check they are current.

    python protos/generate.py          # rewrite states_pb2.py, argo_pb2.py, argo_pb2_grpc.py, ...
    python protos/generate.py --check  # exit 1, naming the stale files, if they differ

The generator is grpcio-tools at exactly the version pinned in pyproject.toml's ``test`` extra:
the generated modules refuse runtimes older than their generator, so that version is also the
minimum of ``grpcio`` and (through its bundled protoc) of ``protobuf``. The tests run ``--check``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The import path the modules are generated for: they import each other as balsam.protos.X_pb2.
PACKAGE_PATH = "balsam/protos"


def generate(out_dir: Path) -> list[Path]:
    """Generate every module into ``out_dir``; returns the files written, relative to it."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(HERE.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc", f"-I{PACKAGE_PATH}={HERE}", f"-I{include}", f"--python_out={out_dir}",
        f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
        *(f"{PACKAGE_PATH}/{p.name}" for p in protos),
    ]  # fmt: skip
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the messages above)")
    made = out_dir / PACKAGE_PATH
    return sorted(p.relative_to(made) for p in made.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed modules")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = generate(out)
        stale = []
        for rel in files:
            fresh = (out / PACKAGE_PATH / rel).read_text()
            target = HERE / rel
            if not target.exists() or target.read_text() != fresh:
                stale.append(rel)
                if not args.check:
                    target.write_text(fresh)
    if args.check and stale:
        names = ", ".join(str(s) for s in stale)
        print(f"generated protobuf modules are out of date: {names}; run python protos/generate.py", file=sys.stderr)
        return 1
    print(("stale: " if args.check else "written: ") + (", ".join(map(str, stale)) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
