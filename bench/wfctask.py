"""The task program of bench/wfcommons_makespan.py, the same for Argo and Parsl (stdlib only, run with ``python -S``).

    wfctask.py LOG NAME SECONDS DIR --in FILE:SIZE ... --out FILE:SIZE ...

In DIR it checks each input has its size and the content its producer wrote (bytes derived from the
file's name, so a truncated, mixed-up or missing file is caught), sleeps SECONDS, writes each output,
then appends ``NAME START END`` (wall-clock seconds) to LOG: one line per run, so the bench counts
runs and reads when each task ran on one clock whatever ran it. A bad input exits 3 and logs nothing.
"""

import hashlib
import os
import sys
import time


def content(name: str, size: int) -> bytes:
    block = hashlib.sha256(name.encode()).digest() * 128  # 4 KiB
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


def main(argv: list[str]) -> int:
    start = time.time()
    log, name, seconds, folder = argv[:4]
    inputs, outputs, into = [], [], None
    for arg in argv[4:]:
        if arg in ("--in", "--out"):
            into = inputs if arg == "--in" else outputs
            continue
        path, _, size = arg.rpartition(":")
        into.append((path, int(size)))
    os.chdir(folder)
    for path, size in inputs:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            print(f"{name}: input {path}: {exc}", file=sys.stderr)
            return 3
        if data != content(os.path.basename(path), size):
            print(f"{name}: input {path} is not what its producer wrote ({len(data)} bytes, {size} expected)", file=sys.stderr)
            return 3
    time.sleep(float(seconds))
    for path, size in outputs:
        with open(path, "wb") as f:
            f.write(content(os.path.basename(path), size))
    line = f"{name} {start:.6f} {time.time():.6f}\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one short write to an O_APPEND file: lines of concurrent tasks never mix
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
