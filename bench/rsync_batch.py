"""Benchmark: one transfer task of many small files fetched from another host by the rsync backend,
against a bare ``rsync -r`` of the same folder over the same ssh in the same run. Prints figures only.

    sudo python bench/rsync_batch.py [--files 500] [--size 4096] [--repeat 3] [--smoke]

The two hosts are namespaces of the test bed (tests/netns_bed.py, as root), each with a real sshd
(tests/sshd_bed.py); the backend runs on c1 and fetches the files through c2's sshd. Timed: from ``submit`` to the
task's end (the backend's temporary folder, the rename of each file into place, with and without
``verify_checksum``); the baseline is ``rsync -rlpt host:folder/ dest/`` with the backend's ssh
options, nothing else. Medians of ``--repeat`` runs, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netns_bed import PYTHON, NetnsBed, netns_available  # noqa: E402
from sshd_bed import SshKeys, sshd_available, start_sshd  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402  (bench/, the script's folder, is on sys.path)

# Runs on c1: the backend's task and the bare rsync, alternately, --repeat times; seconds of each.
ON_C1 = r"""
import json, shlex, statistics, subprocess, sys, time
from balsam.transfer import Item, Location
from balsam.transfer.rsync import RsyncBackend, SshOptions

src, dst, identity, known_hosts, files, repeat = sys.argv[1:7]
files, repeat = int(files), int(repeat)
ssh = SshOptions(identity, known_hosts)
times = {"backend": [], "backend, verify_checksum": [], "bare rsync -r": []}
for run in range(repeat):
    for label, verify in (("backend", False), ("backend, verify_checksum", True)):
        backend = RsyncBackend(ssh, [f"ssh://c2{src}"])
        items = [Item(Location.parse(f"ssh://c2{src}/f{i}"), Location.local(f"{dst}/{run}-{verify}/f{i}")) for i in range(files)]
        began = time.perf_counter()
        task = backend.submit(items, label="bench", verify_checksum=verify)
        while not (status := backend.poll(task)).ended:
            time.sleep(0.002)
        times[label].append(time.perf_counter() - began)
        backend.close()
        assert status.state == "done" and not status.failed and status.files_done == files, status
    began = time.perf_counter()
    subprocess.run(["rsync", "-rlpt", "-e", shlex.join(ssh.argv(None)), f"c2:{src}/", f"{dst}/{run}-bare/"], check=True)
    times["bare rsync -r"].append(time.perf_counter() - began)
print(json.dumps({label: statistics.median(values) for label, values in times.items()}))
"""


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a small run that only shows the benchmark still works")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.repeat = 20, 1
    reason = netns_available() or sshd_available()
    if reason:
        sys.exit(f"bench/rsync_batch.py needs the namespace bed and sshd: {reason}")
    with tempfile.TemporaryDirectory(prefix="bench-rsync-") as folder:
        root = Path(folder)
        bed = NetnsBed(root / "bed", computes=2)
        try:
            bed.start()
            keys = SshKeys(root / "ssh", {host: bed.hosts[host].address for host in bed.computes})
            for host in bed.computes:
                start_sshd(bed, host, keys)
            source = root / "files"
            source.mkdir()
            for i in range(args.files):
                (source / f"f{i}").write_bytes(bytes([i % 251]) * args.size)
            run = bed.run("c1", [PYTHON, "-c", ON_C1, str(source), str(root / "arrived"), str(keys.identity), str(keys.known_hosts),
                                 str(args.files), str(args.repeat)], timeout=3600)  # fmt: skip
            medians = json.loads(run.stdout.strip().splitlines()[-1])
        finally:
            bed.stop()
    bare = medians["bare rsync -r"]
    print(f"{args.files} files of {args.size} bytes from another host, median of {args.repeat}:")
    for label, seconds in medians.items():
        print(f"  {label:28} {seconds:7.2f} s  {1000 * seconds / args.files:6.1f} ms/file  x{seconds / bare:.2f} of bare rsync")


if __name__ == "__main__":
    main()
