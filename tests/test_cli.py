"""The `balsam app` and `balsam job` commands as a user runs them."""

import json

import pytest
import yaml


@pytest.fixture
def sim(site, balsam):
    result = balsam(
        "app add sim --command 'simulate --size {n} {infile}' --env OMP_PROC_BIND=true --env MODE=fast "
        "--preprocess 'prep.sh' --postprocess 'post.sh --clean' --on-error retry --max-retries 5 "
        "--on-timeout retry --image docker://lab/sim:1.2 --description 'the simulator'"
    )
    assert result.code == 0, result
    assert "parameters: n, infile" in result.out
    return site


def test_app_add_ls_rm(sim, balsam):
    (app,) = json.loads(balsam("app ls --json").out)
    assert app["command"] == "simulate --size {n} {infile}"
    assert app["parameters"] == ["n", "infile"]
    assert app["env"] == {"OMP_PROC_BIND": "true", "MODE": "fast"}
    assert (app["preprocess"], app["postprocess"]) == ("prep.sh", "post.sh --clean")
    assert (app["on_error"], app["max_retries"], app["on_timeout"]) == ("retry", 5, "retry")
    assert app["image"] == "docker://lab/sim:1.2"
    table = balsam("app ls").out
    assert "sim" in table and "simulate --size {n} {infile}" in table
    assert balsam("app rm sim").code == 0
    assert json.loads(balsam("app ls --json").out) == []


def test_job_add_prints_the_id_and_stores_every_field(sim, balsam):
    first = balsam("job add --app sim -n warmup -w study -p n=1 -p infile=a.dat")
    assert first.code == 0 and first.out.strip().isdigit()
    parent = int(first.out)
    result = balsam(
        f"job add --app sim --name big --workflow study -p n=64 -p infile=b.dat --parent {parent} "
        "--nodes 4 --ranks-per-node 32 --threads-per-rank 2 --gpus-per-rank 1 --node-packing 1 "
        "--wall-time 30.5 --tag phase=prod --tag size=L"
    )
    job = json.loads(balsam(f"job show {int(result.out)} --json").out)
    assert job["name"] == "big" and job["workflow"] == "study" and job["app"] == "sim"
    assert job["params"] == {"n": "64", "infile": "b.dat"}
    assert (job["nodes"], job["ranks_per_node"], job["threads_per_rank"], job["gpus_per_rank"]) == (4, 32, 2, 1)
    assert job["wall_time_min"] == 30.5 and job["tags"] == {"phase": "prod", "size": "L"}
    assert job["state"] == "AWAITING_PARENTS" and job["parents"] == [parent]
    assert json.loads(balsam(f"job show {parent} --json").out)["children"] == [job["id"]]


def test_job_ls_filters_and_counts(sim, balsam):
    for i in range(3):
        balsam(f"job add --app sim -w alpha -p n={i} -p infile=x --tag kind=even")
    balsam("job add --app sim -w beta -p n=9 -p infile=x --tag kind=odd")
    balsam("job kill 4")
    every = json.loads(balsam("job ls --json").out)
    assert every["total"] == 4 and every["counts"] == {"READY": 3, "USER_KILLED": 1}
    alpha = json.loads(balsam("job ls -w alpha --json").out)
    assert [j["params"]["n"] for j in alpha["jobs"]] == ["0", "1", "2"]
    assert json.loads(balsam("job ls --tag kind=odd --json").out)["counts"] == {"USER_KILLED": 1}
    assert json.loads(balsam("job ls --state user_killed --json").out)["total"] == 1
    limited = json.loads(balsam("job ls --limit 2 --json").out)
    assert limited["total"] == 4 and len(limited["jobs"]) == 2
    table = balsam("job ls --limit 2").out
    assert "showing 2 of 4 jobs" in table and "4 jobs: 3 READY, 1 USER_KILLED" in table


def test_job_add_from_yaml_with_parents_by_name(sim, balsam, tmp_path):
    existing = int(balsam("job add --app sim -p n=0 -p infile=seed").out)
    doc = {"jobs": [
        {"app": "sim", "name": "prep", "params": {"n": 1, "infile": "a"}, "parents": [existing]},
        {"app": "sim", "name": "run", "params": {"n": 2, "infile": "b"}, "parents": ["prep"], "nodes": 2,
         "tags": {"stage": "main"}, "wall_time_min": 10},
        {"app": "sim", "name": "report", "params": {"n": 3, "infile": "c"}, "parents": ["run", "prep"]},
    ]}  # fmt: skip
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = balsam(f"job add --from {path}")
    assert result.code == 0 and "added 3 jobs" in result.err
    jobs = {j["name"]: j for j in json.loads(balsam("job ls --json").out)["jobs"]}
    assert [int(line) for line in result.out.split()] == [jobs[n]["id"] for n in ("prep", "run", "report")]
    assert json.loads(balsam(f"job show {jobs['report']['id']} --json").out)["parents"] == sorted(
        [jobs["prep"]["id"], jobs["run"]["id"]]
    )
    assert jobs["run"]["nodes"] == 2 and jobs["run"]["tags"] == {"stage": "main"}
    assert jobs["prep"]["pending_parents"] == 1


def test_job_add_from_json_lines(sim, balsam, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"app": "sim", "params": {"n": i, "infile": f"f{i}"}}) for i in range(50)))
    assert "added 50 jobs" in balsam(f"job add --from {path}").err
    assert json.loads(balsam("job ls --json --limit 0").out)["counts"] == {"READY": 50}


def test_history_modify_kill_reset_rm(sim, balsam):
    job_id = int(balsam("job add --app sim -p n=1 -p infile=a").out)
    assert balsam(f"job modify {job_id} -p n=2 --nodes 3 --tag t=1 --name renamed").code == 0
    job = json.loads(balsam(f"job show {job_id} --json").out)
    assert (job["params"], job["nodes"], job["tags"], job["name"]) == ({"n": "2", "infile": "a"}, 3, {"t": "1"}, "renamed")
    bad = balsam(f"job modify {job_id} -p colour=red")
    assert bad.code == 1 and "parameter 'colour'" in bad.err
    assert json.loads(balsam(f"job show {job_id} --json").out)["params"] == {"n": "2", "infile": "a"}
    assert balsam(f"job modify {job_id}").code == 1

    assert balsam(f"job kill {job_id}").code == 0
    again = balsam(f"job kill {job_id}")
    assert again.code == 1 and "USER_KILLED -> USER_KILLED" in again.err
    assert "now READY" in balsam(f"job reset {job_id}").out
    history = json.loads(balsam(f"job history {job_id} --json").out)
    assert [(e["from"], e["to"]) for e in history] == [
        ("CREATED", "READY"), ("READY", "USER_KILLED"), ("USER_KILLED", "CREATED"), ("CREATED", "READY"),
    ]
    assert "killed by user" in balsam(f"job history {job_id}").out
    refused = balsam(f"job reset {job_id}")
    assert refused.code == 1 and "only FAILED or USER_KILLED" in refused.err

    assert balsam(f"job rm {job_id}").code == 0
    assert balsam(f"job show {job_id}").code == 1


def test_job_add_from_a_json_document(sim, balsam, tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"jobs": [
        {"app": "sim", "name": "a", "params": {"n": 1, "infile": "x"}},
        {"app": "sim", "name": "b", "params": {"n": 2, "infile": "y"}, "parents": ["a"]},
    ]}))  # fmt: skip
    result = balsam(f"job add --from {path}")
    assert result.code == 0 and "added 2 jobs" in result.err
    assert json.loads(balsam("job ls --json").out)["counts"] == {"READY": 1, "AWAITING_PARENTS": 1}


def test_jobs_held_by_a_launcher_cannot_be_modified_or_removed(sim, balsam):
    from balsam.site.db import jobstore
    from balsam.states import JobState

    job_id = int(balsam("job add --app sim -p n=1 -p infile=a").out)
    with sim.session() as session:
        jobstore.transition(session, [job_id], JobState.STAGED_IN, "taken by a launcher")
    for command in (f"job modify {job_id} --nodes 2", f"job rm {job_id}"):
        result = balsam(command)
        assert result.code == 1 and "STAGED_IN" in result.err, command
    assert balsam(f"job kill {job_id}").code == 0
    assert balsam(f"job rm {job_id}").code == 0


def test_rm_refuses_a_parent_and_app_rm_refuses_an_app_in_use(sim, balsam):
    parent = int(balsam("job add --app sim -p n=1 -p infile=a").out)
    child = int(balsam(f"job add --app sim -p n=1 -p infile=a --parent {parent}").out)
    result = balsam(f"job rm {parent}")
    assert result.code == 1 and f"has children ({child})" in result.err
    result = balsam("app rm sim")
    assert result.code == 1 and "still has 2 job(s)" in result.err
    assert balsam(f"job rm {child}").code == 0 and balsam(f"job rm {parent}").code == 0
    assert balsam("app rm sim").code == 0


def test_version_and_help(balsam):
    assert balsam("--version").out.strip()
    assert "job" in balsam("--help").out
