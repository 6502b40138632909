"""What filesystem a benchmark's scratch folder is on, for the line printed beside its figures.

On ext4 without a journal (the root filesystem of the machines these benchmarks were written on)
the kernel, allocating an inode, passes over each one freed in the last few minutes: after a run's
folders are removed, making the next run's costs some 20 times more (1.3-1.8 ms of system time
for a folder and two files instead of 0.05-0.07). A run there measures the filesystem's state.
"""

from __future__ import annotations

import os
from pathlib import Path


def describe(path: Path) -> str:
    """``"ext4 with a journal (/dev/loop0)"``, ``"ext4 without a journal (/dev/vda): ..."``, or the type alone."""
    st_dev = os.stat(path).st_dev
    wanted = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "unknown (no /proc/self/mountinfo)"
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[2] != wanted or "-" not in fields:
            continue
        after = fields[fields.index("-") + 1 :]
        fstype, source = after[0], after[1]
        if fstype != "ext4":
            return f"{fstype} ({source})"
        journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
        if any(j.startswith(f"{os.path.basename(source)}-") for j in journals):
            return f"ext4 with a journal ({source})"
        return (f"ext4 without a journal ({source}): folders made soon after many were removed cost up to 20 times"
                " more; set TMPDIR to a filesystem with a journal for figures that do not depend on what ran before")  # fmt: skip
    return "unknown"
