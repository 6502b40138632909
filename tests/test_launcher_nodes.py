"""Node discovery from each scheduler's environment, with exact node lists."""

from __future__ import annotations

import pytest

from balsam.launcher.nodes import (
    MAX_HOSTS,
    Node,
    count_nvidia_devices,
    count_visible_gpus,
    discover_nodes,
    expand_hostlist,
    local_resources,
)

LOCAL = {"local_hostname": "here", "local_cores": 8, "local_gpus": 2}


def files(mapping: dict[str, str]):
    """A read_file that serves fixed texts and fails like open() for anything else."""

    def read(path: str) -> str:
        if path not in mapping:
            raise FileNotFoundError(2, "No such file or directory", path)
        return mapping[path]

    return read


def discover(env: dict[str, str], texts: dict[str, str] | None = None):
    return discover_nodes(env, read_file=files(texts or {}), **LOCAL)


# --- Slurm hostlist syntax -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login1", ["login1"]),
        ("nid[00010-00012,00020],login1", ["nid00010", "nid00011", "nid00012", "nid00020", "login1"]),
        ("a[1-3]-ib", ["a1-ib", "a2-ib", "a3-ib"]),
        ("n[08-11]", ["n08", "n09", "n10", "n11"]),
        ("n[8-11]", ["n8", "n9", "n10", "n11"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("r[1-2]n[3-4]", ["r1n3", "r1n4", "r2n3", "r2n4"]),
        ("nid0[3038-3039,8241]", ["nid03038", "nid03039", "nid08241"]),
        ("x[7]", ["x7"]),
        ("[1-2]x", ["1x", "2x"]),
        ("a,b[1-2],c", ["a", "b1", "b2", "c"]),
        ("  gnode[10,20,25,37]\n", ["gnode10", "gnode20", "gnode25", "gnode37"]),
        ("host-1.domain.org", ["host-1.domain.org"]),
    ],
)
def test_expand_hostlist(text: str, expected: list[str]) -> None:
    assert expand_hostlist(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nid[1-3", "unbalanced '['"),
        ("nid1-3]", "unbalanced ']' at position 6"),
        ("a[1-[2]]", "nested '['"),
        ("a[]", "bad range ''"),
        ("a[1,,2]", "bad range ''"),
        ("a[x-y]", "bad range 'x-y'"),
        ("a[1-2-3]", "bad range '1-2-3'"),
        ("a[5-3]", "runs backwards"),
        ("a,,b", "empty host name"),
        ("a,", "empty host name"),
        ("a b", "whitespace"),
        ("   ", "empty hostlist"),
        (f"a[0-{MAX_HOSTS}]", "hold more than"),
        (f"a[1-{MAX_HOSTS},0]", "ranges up to '0' hold more than"),
    ],
)
def test_expand_hostlist_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^MYVAR: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        expand_hostlist(text, source="MYVAR")


def test_expand_hostlist_caps_product_size() -> None:
    with pytest.raises(ValueError, match="more than"):
        expand_hostlist("a[0-999]b[0-999]c[0-9],d")


# --- Slurm -----------------------------------------------------------------------------------


def test_slurm_per_node_cpu_counts() -> None:
    env = {"SLURM_JOB_NODELIST": "nid[00010-00012]", "SLURM_JOB_CPUS_PER_NODE": "36(x2),20"}
    assert discover(env) == (
        "slurm",
        [Node("nid00010", 36, 2), Node("nid00011", 36, 2), Node("nid00012", 20, 2)],
    )


def test_slurm_job_nodelist_wins_and_cpus_on_node() -> None:
    env = {
        "SLURM_JOB_NODELIST": "a[1-2]",
        "SLURM_NODELIST": "zzz",
        "SLURM_CPUS_ON_NODE": "64",
    }
    assert discover(env) == ("slurm", [Node("a1", 64, 2), Node("a2", 64, 2)])


def test_slurm_nodelist_alone_uses_local_cores() -> None:
    assert discover({"SLURM_NODELIST": "c1,c2"}) == ("slurm", [Node("c1", 8, 2), Node("c2", 8, 2)])


def test_slurm_wins_over_other_schedulers() -> None:
    env = {"SLURM_NODELIST": "c1", "PBS_NODEFILE": "/nf", "LSB_HOSTS": "h"}
    assert discover(env)[0] == "slurm"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLURM_JOB_NODELIST": "nid[1-2"}, r"^SLURM_JOB_NODELIST: unbalanced '\['"),
        ({"SLURM_NODELIST": "a,[1-2"}, r"^SLURM_NODELIST: unbalanced"),
        ({"SLURM_JOB_NODELIST": ""}, r"^SLURM_JOB_NODELIST is set but empty"),
        (
            {"SLURM_JOB_NODELIST": "a[1-3]", "SLURM_JOB_CPUS_PER_NODE": "4(x2)"},
            r"^SLURM_JOB_CPUS_PER_NODE describes 2 nodes but the node list has 3",
        ),
        ({"SLURM_JOB_NODELIST": "a", "SLURM_JOB_CPUS_PER_NODE": "4(2)"}, r"^SLURM_JOB_CPUS_PER_NODE: bad entry '4\(2\)'"),
        ({"SLURM_JOB_NODELIST": "a", "SLURM_JOB_CPUS_PER_NODE": "0"}, r"^SLURM_JOB_CPUS_PER_NODE: expected a positive"),
        ({"SLURM_JOB_NODELIST": "a", "SLURM_JOB_CPUS_PER_NODE": "4(x0)"}, r"^SLURM_JOB_CPUS_PER_NODE: expected a positive"),
        ({"SLURM_JOB_NODELIST": "a", "SLURM_JOB_CPUS_PER_NODE": " "}, r"^SLURM_JOB_CPUS_PER_NODE is set but empty"),
        ({"SLURM_JOB_NODELIST": "a", "SLURM_CPUS_ON_NODE": "many"}, r"^SLURM_CPUS_ON_NODE: expected a positive integer, got 'many'"),
        ({"SLURM_JOB_NODELIST": "a", "SLURM_CPUS_ON_NODE": "-4"}, r"^SLURM_CPUS_ON_NODE: expected a positive"),
    ],
)
def test_slurm_malformed(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        discover(env)


def test_slurm_cpu_count_repeat_is_capped() -> None:
    env = {"SLURM_JOB_NODELIST": "a", "SLURM_JOB_CPUS_PER_NODE": f"4(x{MAX_HOSTS + 1})"}
    with pytest.raises(ValueError, match="^SLURM_JOB_CPUS_PER_NODE describes more than"):
        discover(env)


# --- PBS -------------------------------------------------------------------------------------


def test_pbs_nodefile_dedupes_keeping_order() -> None:
    text = "x1.cluster\nx1.cluster\nx3\n\nx2\nx3\nx2\n"
    assert discover({"PBS_NODEFILE": "/var/spool/aux/1.pbs"}, {"/var/spool/aux/1.pbs": text}) == (
        "pbs",
        [Node("x1.cluster", 8, 2), Node("x3", 8, 2), Node("x2", 8, 2)],
    )


def test_pbs_errors() -> None:
    with pytest.raises(ValueError, match=r"^PBS_NODEFILE='/nf' lists no hosts"):
        discover({"PBS_NODEFILE": "/nf"}, {"/nf": "\n  \n"})
    with pytest.raises(ValueError, match=r"^PBS_NODEFILE='/gone' could not be read: .*No such file"):
        discover({"PBS_NODEFILE": "/gone"})
    with pytest.raises(ValueError, match=r"^PBS_NODEFILE is set but empty"):
        discover({"PBS_NODEFILE": ""})


def test_default_reader_reads_the_real_file(tmp_path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("h1\nh1\nh2\n")
    kind, nodes = discover_nodes({"PBS_NODEFILE": str(nodefile)}, **LOCAL)
    assert (kind, nodes) == ("pbs", [Node("h1", 8, 2), Node("h2", 8, 2)])


# --- Cobalt ----------------------------------------------------------------------------------


def test_cobalt_partname_ranges() -> None:
    env = {"COBALT_PARTNAME": "1-4,8,1030", "COBALT_JOBSIZE": "6", "COBALT_JOBID": "12"}
    hosts = [n.hostname for n in discover(env)[1]]
    assert discover(env)[0] == "cobalt"
    assert hosts == ["nid00001", "nid00002", "nid00003", "nid00004", "nid00008", "nid01030"]
    assert discover(env)[1][0] == Node("nid00001", 8, 2)


def test_cobalt_partname_single_and_duplicate_ids() -> None:
    assert discover({"COBALT_PARTNAME": "7,7"}) == ("cobalt", [Node("nid00007", 8, 2)])


def test_cobalt_nodefile_preferred() -> None:
    env = {"COBALT_NODEFILE": "/cobalt/nf", "COBALT_PARTNAME": "thetagpu05"}
    assert discover(env, {"/cobalt/nf": "thetagpu05\nthetagpu07\n"}) == (
        "cobalt",
        [Node("thetagpu05", 8, 2), Node("thetagpu07", 8, 2)],
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COBALT_PARTNAME": "1-4,x"}, r"^COBALT_PARTNAME: bad range 'x'"),
        ({"COBALT_PARTNAME": "4-1"}, r"^COBALT_PARTNAME: range '4-1' runs backwards"),
        ({"COBALT_PARTNAME": "1,,2"}, r"^COBALT_PARTNAME: bad range ''"),
        ({"COBALT_PARTNAME": ""}, r"^COBALT_PARTNAME is set but empty"),
        ({"COBALT_NODEFILE": "/missing"}, r"^COBALT_NODEFILE='/missing' could not be read"),
    ],
)
def test_cobalt_malformed(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        discover(env)


def test_cobalt_jobsize_alone_is_not_an_allocation() -> None:
    assert discover({"COBALT_JOBSIZE": "4"}) == ("local", [Node("here", 8, 2)])


# --- LSF -------------------------------------------------------------------------------------


def test_lsf_mcpu_hosts_drops_batch_node() -> None:
    env = {"LSB_MCPU_HOSTS": "batch3 1 a01n01 42 a01n02 42", "LSB_HOSTS": "ignored"}
    assert discover(env) == ("lsf", [Node("a01n01", 42, 2), Node("a01n02", 42, 2)])


def test_lsf_hostfile_counts_slots() -> None:
    text = "batch5\n" + "h01\n" * 3 + "h02\n" * 2 + "login2\n"
    env = {"LSB_DJOB_HOSTFILE": "/lsf/hf", "LSB_MCPU_HOSTS": "ignored 1"}
    assert discover(env, {"/lsf/hf": text}) == ("lsf", [Node("h01", 3, 2), Node("h02", 2, 2)])


def test_lsf_hosts_counts_repeats() -> None:
    env = {"LSB_HOSTS": "login1 c2 c1 c2 c1 c1"}
    assert discover(env) == ("lsf", [Node("c2", 2, 2), Node("c1", 3, 2)])


def test_lsf_mcpu_hosts_merges_repeated_host() -> None:
    assert discover({"LSB_MCPU_HOSTS": "c1 2 c2 1 c1 3"}) == ("lsf", [Node("c1", 5, 2), Node("c2", 1, 2)])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LSB_MCPU_HOSTS": "batch1 1 h1"}, r"^LSB_MCPU_HOSTS: expected 'host count' pairs, got 3 words"),
        ({"LSB_MCPU_HOSTS": "h1 lots"}, r"^LSB_MCPU_HOSTS: expected a positive integer, got 'lots'"),
        ({"LSB_MCPU_HOSTS": "h1 0"}, r"^LSB_MCPU_HOSTS: expected a positive integer, got '0'"),
        ({"LSB_MCPU_HOSTS": "batch1 1"}, r"^LSB_MCPU_HOSTS lists no compute hosts"),
        ({"LSB_HOSTS": "login1 login1"}, r"^LSB_HOSTS lists no compute hosts"),
        ({"LSB_HOSTS": ""}, r"^LSB_HOSTS is set but empty"),
        ({"LSB_DJOB_HOSTFILE": "/nope"}, r"^LSB_DJOB_HOSTFILE='/nope' could not be read"),
    ],
)
def test_lsf_malformed(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        discover(env)


def test_lsf_empty_hostfile() -> None:
    with pytest.raises(ValueError, match=r"^LSB_DJOB_HOSTFILE lists no compute hosts"):
        discover({"LSB_DJOB_HOSTFILE": "/hf"}, {"/hf": ""})


# --- local and the real host -----------------------------------------------------------------


def test_local_fallback_ignores_unrelated_variables() -> None:
    env = {"SLURM_JOB_ID": "5", "PBS_JOBID": "7", "CUDA_VISIBLE_DEVICES": "0", "HOME": "/root"}
    assert discover(env) == ("local", [Node("here", 8, 2)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local_hostname": "", "local_cores": 1, "local_gpus": 0}, "local_hostname is empty"),
        ({"local_hostname": "h", "local_cores": 0, "local_gpus": 0}, "local_cores must be >= 1"),
        ({"local_hostname": "h", "local_cores": 1, "local_gpus": -1}, "local_gpus >= 0"),
    ],
)
def test_local_arguments_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        discover_nodes({}, **kwargs)


@pytest.mark.parametrize(
    ("value", "count"),
    [("0,1,2,3", 4), ("", 0), ("-1", 0), ("0,-1,2", 1), ("NoDevFiles", 0), ("GPU-8f3a,GPU-11c2", 2), (" 3 ", 1)],
)
def test_count_visible_gpus(value: str, count: int) -> None:
    assert count_visible_gpus(value) == count


def test_count_nvidia_devices() -> None:
    names = ["nvidia0", "nvidia1", "nvidia12", "nvidiactl", "nvidia-uvm", "nvidia-modeset", "null"]
    assert count_nvidia_devices(names) == 3


def test_local_resources_reads_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert local_resources() == (socket.gethostname(), len(os.sched_getaffinity(0)), 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    _hostname, cores, gpus = local_resources()
    assert cores >= 1 and gpus == count_nvidia_devices(os.listdir("/dev"))
