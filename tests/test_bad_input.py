"""Bad requests get one clear error and exit status 1, and nothing of the request is written."""

import json
import subprocess
import sys

import pytest

from balsam.site.templates import CommandTemplate


@pytest.fixture
def sim(site, balsam):
    assert balsam("app add sim --command 'simulate --size {n} {infile}'").code == 0
    assert balsam("job add --app sim -n first -p n=1 -p infile=a.dat").code == 0
    return site


def _job_count(site):
    return sum(site.count_jobs().values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("job add --app nosuch -p n=1", "unknown app 'nosuch' (apps of this site: sim)"),
        ("job add --app sim -p n=1 -p infile=x --parent 999", "unknown parent job 999"),
        ("job add --app sim -p n=1 -p infile=x -p color=red", "parameter 'color' is not in the command template of app 'sim'"),
        ("job add --app sim -p n=1", "placeholder {infile} of app 'sim' has no value"),
        ("job add --app sim -p n=1 -p infile=x --nodes 0", "nodes must be a whole number from 1 to 2147483647, got int 0"),
        ("job add --app sim -p n=1 -p infile=x --ranks-per-node -2", "ranks_per_node must be a whole number from 1 to"),
        ("job add --app sim -p n=1 -p infile=x --gpus-per-rank -1", "gpus_per_rank must be a whole number from 0 to"),
        ("job add --app sim -p n=1 -p infile=x --node-packing 0", "node_packing_count must be a whole number from 1 to"),
        ("job add --app sim -p n=1 -p infile=x --nodes 99999999999", "nodes must be a whole number from 1 to 2147483647"),
        ("job add --app sim -p n=1 -p infile=x --name " + "x" * 201, "name is 201 characters long; at most 200"),
        ("job add --app sim -p n=1 -p infile=x -w " + "w" * 300, "workflow is 300 characters long"),
        ("job add --app sim -p n=1 -p infile=x --wall-time inf", "wall_time_min: inf is not a finite number"),
        ("job add --from jobs.yaml --name x", "--from FILE takes every job field from the file; drop --name"),
        ("job add --from jobs.yaml --nodes 1", "drop --nodes"),
        ("job add --from jobs.yaml -p n=1", "drop --param"),
        ("job add --from jobs.yaml --app sim", "drop --app"),
        ("job add --app sim -p n=1 -p infile=nul\x00byte", "contains a NUL character"),
        ("job add --app sim -p n=1 -p infile=x --wall-time 0", "wall_time_min must be a positive number of minutes"),
        ("job add --app sim -p n -p infile=x", "bad --param 'n': expected NAME=VALUE"),
        ("job add --app sim -p n=1 -p infile=x --tag broken", "bad --tag 'broken'"),
        ("job add -p n=1", "which app? give --app NAME"),
        ("job ls --state DONE", "unknown job state 'DONE'"),
        ("job show 999", "no job 999"),
        ("job kill 999", "no job 999"),
        ("app add bad --command 'prog {x.__class__}'", "bad placeholder {x.__class__}"),
        ("app add bad --command 'prog \"open'", "No closing quotation"),
        ("app add bad --command 'prog' --on-error maybe", "on_error must be one of retry, rescue, fail"),
        ("app add bad --command 'prog' --on-timeout rescue", "on_timeout must be one of retry, fail"),
        ("app add sim --command 'other'", "an app named 'sim' already exists"),
        ("app add bad --command 'prog' --env NOEQUALS", "bad --env 'NOEQUALS'"),
        ("app rm nosuch", "unknown app 'nosuch'"),
    ],
)
def test_bad_requests_are_refused_clearly(sim, balsam, args, message):
    before = _job_count(sim), [a.name for a in sim.apps()]
    result = balsam(args)
    assert result.code == 1, result
    assert message in result.err.replace("\n", " ")
    assert result.err.startswith("error:")
    assert (_job_count(sim), [a.name for a in sim.apps()]) == before


def test_a_cycle_in_a_bulk_file_is_refused_naming_its_jobs(sim, balsam, tmp_path):
    jobs = [
        {"app": "sim", "name": "a", "params": {"n": 1, "infile": "x"}, "parents": ["c"]},
        {"app": "sim", "name": "b", "params": {"n": 1, "infile": "x"}, "parents": ["a"]},
        {"app": "sim", "name": "c", "params": {"n": 1, "infile": "x"}, "parents": ["b"]},
        {"app": "sim", "name": "free", "params": {"n": 1, "infile": "x"}},
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(j) for j in jobs))
    result = balsam(f"job add --from {path}")
    assert result.code == 1
    assert "the jobs' parents form a cycle" in result.err
    assert all(name in result.err for name in ("a", "b", "c"))
    assert _job_count(sim) == 1  # not even the job outside the cycle


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"app": "sim", "params": {"n": 1, "infile": "x"}}\n{"app": "sim", "params": \n',
         "line 2: not valid JSON"),
        ("bad.jsonl", '{"app": "sim", "params": {"n": 1, "infile": "x"}}\n\n{"app": "sim", "nodes": -4, "params": {"n": 1, "infile": "x"}}\n',
         "line 3): nodes must be a whole number from 1 to"),
        ("bad.jsonl", '{"app": "sim", "colour": "red"}\n', "unknown job field 'colour'"),
        ("bad.yaml", "- app: sim\n  params: {n: 1, infile: x}\n- app: sim\n  params: {n: 1\n", "line 5: not valid YAML"),
        ("bad.yaml", "- app: sim\n  params: {n: 1, infile: x}\n- app: sim\n  params: {n: 1, infile: x, z: 2}\n",
         "line 3): parameter 'z' is not in the command template"),
        ("bad.yaml", "- app: sim\n  params: {n: 1, infile: x}\n- app: sim\n  parents: [ghost]\n  params: {n: 1, infile: x}\n",
         "unknown parent 'ghost'"),
        ("bad.yaml", "app: sim\n", "expected a list of jobs"),
        ("empty.jsonl", "\n\n", "holds no jobs"),
        ("bad.json", '[{"app": "sim", "params": {"n": 1, "infile": "x"}},\n {"app": "sim", "nodes": 0}]',
         "job 2): nodes must be"),
        ("bad.json", '[{"app": "sim",\n "params": }]', "line 2: not valid JSON"),
        ("nul.jsonl", '{"app": "sim", "params": {"n": 1, "infile": "x"}, "data": {"note": "a\\u0000b"}}',
         "contains a NUL character"),
        ("old.jsonl", '{"app": "sim", "num_nodes": 3}', "old.jsonl line 1) (did you mean 'nodes'?)"),
        ("old.jsonl", '{"app": "sim", "wall_time": 3}', "line 1) (did you mean 'wall_time_min'?)"),
    ],
)
def test_a_malformed_job_file_names_the_line_and_adds_nothing(sim, balsam, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    result = balsam(["job", "add", "--from", str(path)])
    assert result.code == 1, result
    assert message in result.err.replace("\n", " ")
    assert _job_count(sim) == 1


def test_a_missing_job_file_is_an_error(sim, balsam, tmp_path):
    result = balsam(f"job add --from {tmp_path / 'nope.yaml'}")
    assert result.code == 1 and result.err == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_shell_metacharacters_reach_the_program_as_one_literal_argument(sim, balsam, tmp_path):
    """The stored parameter renders to exactly one argument, and a real process receives it intact."""
    hostile = "; rm -rf ~ && echo $HOME `id` | cat > /tmp/pwned"
    balsam("app add show --command 'python3 -c \"import sys, json; print(json.dumps(sys.argv[1:]))\" --value {v}'")
    result = balsam(["job", "add", "--app", "show", "-p", f"v={hostile}"])
    assert result.code == 0, result
    job = sim.job(int(result.out))
    argv = CommandTemplate.parse(job.app.command_template).render(job.parameters)
    assert argv[-2:] == ["--value", hostile]
    argv[0] = sys.executable
    ran = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert json.loads(ran.stdout) == ["--value", hostile]
    assert not (tmp_path / "pwned").exists()


def test_errors_exit_1_from_the_real_command(sim, tmp_path):
    from conftest import balsam_script

    proc = subprocess.run([balsam_script(), "job", "add", "--app", "nosuch"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "unknown app 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unsplittable_argument_list_is_refused_in_any_job_of_a_batch(site):
    """Parameter checks are made once per app and parameter names, except where a value is split
    into words ({*name}): there each job's value is checked, so the 3rd job's is not let through."""
    from balsam.errors import BalsamError

    site.add_app("split", "echo {*words}")
    jobs = [{"app": "split", "params": {"words": "a b"}} for _ in range(5)]
    jobs[2]["params"]["words"] = 'a "b'
    with pytest.raises(BalsamError, match=r"item 3.*cannot be split"):
        site.add_jobs(jobs)
    assert site.jobs() == []
