"""Which nodes does this batch job own, and what is on each of them?

`discover_nodes` is pure: it reads only the environment mapping it is handed and, for node files,
the text `read_file` returns. `local_resources` is the thin shell that looks at the real host.

Cores come from the scheduler where it publishes them (Slurm CPU counts, LSF slot counts); else,
and for GPUs always, every node is taken to look like the local one, as allocations are
homogeneous in practice. Where the pilot runs on a service node (Summit's batch node, Theta's MOM
node) the local counts are the service node's, so such sites must override them from config.

Cobalt (ALCF; assumptions, not checked against a live Cobalt here): COBALT_NODEFILE, where set
(Cooley, ThetaGPU), is a file of hostnames, one per line. Otherwise COBALT_PARTNAME (Theta KNL)
lists Cray node ids as ranges like ``1-4,8``, whose hostnames are ``nid`` + the id zero-padded to
five digits (``nid00001``), as Balsam and RADICAL-Pilot did. COBALT_JOBSIZE (the node count) is
not read: the two variables above already name every node.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import product
from math import prod
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# A typo like nid[0-99999999] must fail loudly instead of building a huge list.
MAX_HOSTS = 1_000_000

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_CPU_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")
_NVIDIA_DEVICE = re.compile(r"nvidia\d+")
# Summit-style LSF lists the batch/launch node first with one slot; it is not a compute node.
_LSF_SERVICE_PREFIXES = ("batch", "login")


@dataclass(frozen=True)
class Node:
    hostname: str
    cores: int
    gpus: int


def discover_nodes(
    env: Mapping[str, str],
    *,
    local_hostname: str,
    local_cores: int,
    local_gpus: int,
    read_file: Callable[[str], str] | None = None,
) -> tuple[str, list[Node]]:
    """Return (scheduler kind, nodes): "slurm" | "pbs" | "cobalt" | "lsf" | "local".

    A variable that is present but blank or malformed raises ValueError naming it: silently
    falling back to one local node would waste the rest of a many-node allocation.
    """
    if not local_hostname:
        raise ValueError("local_hostname is empty")
    if local_cores < 1 or local_gpus < 0:
        raise ValueError(f"local_cores must be >= 1 and local_gpus >= 0, got {local_cores}, {local_gpus}")
    reader = read_file if read_file is not None else (lambda path: Path(path).read_text())

    slurm_var = _first_present(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if slurm_var:
        hosts = expand_hostlist(_value(env, slurm_var), source=slurm_var)
        cores = _slurm_cores(env, len(hosts), local_cores)
        return "slurm", [Node(h, c, local_gpus) for h, c in zip(hosts, cores)]
    if "PBS_NODEFILE" in env:
        hosts = _hosts_from_file(env, "PBS_NODEFILE", reader)
        return "pbs", [Node(h, local_cores, local_gpus) for h in hosts]
    if "COBALT_NODEFILE" in env:
        hosts = _hosts_from_file(env, "COBALT_NODEFILE", reader)
        return "cobalt", [Node(h, local_cores, local_gpus) for h in hosts]
    if "COBALT_PARTNAME" in env:
        ranges = _parse_ranges(_value(env, "COBALT_PARTNAME"), "COBALT_PARTNAME")
        ids = _dedupe(n for lo, hi, _ in ranges for n in range(lo, hi + 1))
        return "cobalt", [Node(f"nid{i:05d}", local_cores, local_gpus) for i in ids]
    lsf_var = _first_present(env, "LSB_DJOB_HOSTFILE", "LSB_MCPU_HOSTS", "LSB_HOSTS")
    if lsf_var:
        slots = _lsf_slots(env, lsf_var, reader)
        return "lsf", [Node(h, n, local_gpus) for h, n in slots.items()]
    return "local", [Node(local_hostname, local_cores, local_gpus)]


def expand_hostlist(text: str, *, source: str = "hostlist") -> list[str]:
    """Expand Slurm's compressed hostlist, e.g. ``nid[00010-00012,00020],login1``.

    A range keeps the digit count of its lower bound (``[08-10]`` gives 08 09 10), and several
    bracket groups in one name multiply out with the leftmost varying slowest, as Slurm does.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{source}: empty hostlist")
    hosts: list[str] = []
    for item in _split_top_level(stripped, source):
        choices = _item_choices(item, source)
        # Count before building: bracket groups multiply, so the product can be huge.
        if len(hosts) + prod(len(c) for c in choices) > MAX_HOSTS:
            raise ValueError(f"{source}: hostlist expands to more than {MAX_HOSTS} hosts")
        hosts.extend("".join(parts) for parts in product(*choices))
    return hosts


def count_visible_gpus(value: str) -> int:
    """Count the devices a CUDA_VISIBLE_DEVICES value exposes.

    CUDA stops enumerating at the first invalid entry, so "-1", "" and Slurm's "NoDevFiles"
    mean none and end the list.
    """
    count = 0
    for token in value.split(","):
        token = token.strip()
        if not token or token.startswith("-") or token == "NoDevFiles":
            break
        count += 1
    return count


def count_nvidia_devices(dev_names: Iterable[str]) -> int:
    """Count /dev entries like nvidia0, nvidia1 (not nvidiactl or nvidia-uvm)."""
    return sum(1 for name in dev_names if _NVIDIA_DEVICE.fullmatch(name))


def local_resources() -> tuple[str, int, int]:
    """(hostname, usable cores, visible GPUs) of the host this process runs on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux; the affinity mask is the better answer where it exists
        cores = os.cpu_count() or 1
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = count_visible_gpus(visible)
    else:
        try:
            gpus = count_nvidia_devices(os.listdir("/dev"))
        except OSError:
            gpus = 0
    return socket.gethostname(), cores, gpus


def _first_present(env: Mapping[str, str], *names: str) -> str | None:
    return next((name for name in names if name in env), None)


def _value(env: Mapping[str, str], name: str) -> str:
    value = env[name].strip()
    if not value:
        raise ValueError(f"{name} is set but empty")
    return value


def _dedupe(items: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(items))


def _split_top_level(text: str, source: str) -> list[str]:
    # Commas inside brackets separate ranges, commas outside separate hosts.
    items: list[str] = []
    depth, start = 0, 0
    for pos, char in enumerate(text):
        if char == "[":
            if depth:
                raise ValueError(f"{source}: nested '[' at position {pos} in {text!r}")
            depth = 1
        elif char == "]":
            if not depth:
                raise ValueError(f"{source}: unbalanced ']' at position {pos} in {text!r}")
            depth = 0
        elif char == "," and not depth:
            items.append(text[start:pos])
            start = pos + 1
        elif char.isspace():
            raise ValueError(f"{source}: whitespace at position {pos} in {text!r}")
    if depth:
        raise ValueError(f"{source}: unbalanced '[' in {text!r}")
    items.append(text[start:])
    if any(not item for item in items):
        raise ValueError(f"{source}: empty host name in {text!r}")
    return items


def _item_choices(item: str, source: str) -> list[list[str]]:
    """Split ``r[1-2]n[3-4]`` into the alternatives for each piece: [[r], [1, 2], [n], [3, 4]]."""
    choices: list[list[str]] = []
    for piece in re.split(r"(\[[^\]]*\])", item):
        if piece.startswith("["):
            ranges = _parse_ranges(piece[1:-1], f"{source}: in {item!r}")
            choices.append([f"{n:0{width}d}" for lo, hi, width in ranges for n in range(lo, hi + 1)])
        elif piece:
            choices.append([piece])
    return choices


def _parse_ranges(body: str, where: str) -> list[tuple[int, int, int]]:
    """Parse ``1-3,07`` into (low, high, digit width) triples."""
    triples = []
    total = 0
    for part in body.split(","):
        match = _RANGE.fullmatch(part)
        if not match:
            raise ValueError(f"{where}: bad range {part!r} (expected N or N-M)")
        lo_text, hi_text = match.group(1), match.group(2)
        lo = int(lo_text)
        hi = int(hi_text) if hi_text is not None else lo
        if hi < lo:
            raise ValueError(f"{where}: range {part!r} runs backwards")
        total += hi - lo + 1
        if total > MAX_HOSTS:
            raise ValueError(f"{where}: ranges up to {part!r} hold more than {MAX_HOSTS} ids")
        triples.append((lo, hi, len(lo_text)))
    return triples


def _slurm_cores(env: Mapping[str, str], node_count: int, local_cores: int) -> list[int]:
    # SLURM_JOB_CPUS_PER_NODE covers every node; SLURM_CPUS_ON_NODE only the one we run on.
    if "SLURM_JOB_CPUS_PER_NODE" in env:
        cores = _expand_cpu_counts(_value(env, "SLURM_JOB_CPUS_PER_NODE"))
        if len(cores) != node_count:
            raise ValueError(f"SLURM_JOB_CPUS_PER_NODE describes {len(cores)} nodes but the node list has {node_count}")
        return cores
    if "SLURM_CPUS_ON_NODE" in env:
        return [_positive_int(_value(env, "SLURM_CPUS_ON_NODE"), "SLURM_CPUS_ON_NODE")] * node_count
    return [local_cores] * node_count


def _expand_cpu_counts(text: str) -> list[int]:
    """Expand Slurm's ``36(x2),20`` into [36, 36, 20]."""
    counts: list[int] = []
    for part in text.split(","):
        match = _CPU_COUNT.fullmatch(part.strip())
        if not match:
            raise ValueError(f"SLURM_JOB_CPUS_PER_NODE: bad entry {part!r} (expected N or N(xM))")
        cpus = _positive_int(match.group(1), "SLURM_JOB_CPUS_PER_NODE")
        repeat = _positive_int(match.group(2) or "1", "SLURM_JOB_CPUS_PER_NODE")
        if len(counts) + repeat > MAX_HOSTS:
            raise ValueError(f"SLURM_JOB_CPUS_PER_NODE describes more than {MAX_HOSTS} nodes")
        counts.extend([cpus] * repeat)
    return counts


def _positive_int(text: str, var: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{var}: expected a positive integer, got {text!r}")
    return int(text)


def _file_text(env: Mapping[str, str], var: str, reader: Callable[[str], str]) -> tuple[str, str]:
    path = _value(env, var)
    try:
        return path, reader(path)
    except OSError as exc:
        raise ValueError(f"{var}={path!r} could not be read: {exc}") from exc


def _hosts_from_file(env: Mapping[str, str], var: str, reader: Callable[[str], str]) -> list[str]:
    # Node files repeat a host once per slot; the first appearance fixes its place.
    path, text = _file_text(env, var, reader)
    hosts = _dedupe(line.strip() for line in text.splitlines() if line.strip())
    if not hosts:
        raise ValueError(f"{var}={path!r} lists no hosts")
    return hosts


def _lsf_slots(env: Mapping[str, str], var: str, reader: Callable[[str], str]) -> dict[str, int]:
    # Every form gives host and slot count; LSB_MCPU_HOSTS says it compactly ("h 42"), the file
    # and LSB_HOSTS repeat a host once per slot.
    slots: dict[str, int] = {}
    if var == "LSB_MCPU_HOSTS":
        tokens = _value(env, var).split()
        if len(tokens) % 2:
            raise ValueError(f"LSB_MCPU_HOSTS: expected 'host count' pairs, got {len(tokens)} words")
        for host, count in zip(tokens[::2], tokens[1::2]):
            slots[host] = slots.get(host, 0) + _positive_int(count, var)
    else:
        if var == "LSB_DJOB_HOSTFILE":
            words = _file_text(env, var, reader)[1].split()
        else:
            words = _value(env, var).split()
        for host in words:
            slots[host] = slots.get(host, 0) + 1
    compute = {h: n for h, n in slots.items() if not h.startswith(_LSF_SERVICE_PREFIXES)}
    if not compute:
        raise ValueError(f"{var} lists no compute hosts (only batch/login nodes or nothing)")
    return compute
