"""`balsam qsub`: batch-style requests become site jobs, run once by a launcher, arguments intact."""

from __future__ import annotations

import pytest
from launcher_helpers import run_launcher

from balsam.errors import BalsamError
from balsam.site.qsub import Directives, command_template, read_directives
from balsam.site.templates import CommandTemplate


@pytest.mark.parametrize(
    "script, expected",
    [
        ("#!/bin/bash\n#SBATCH -N 4\n#SBATCH --time=1:30:00\n#SBATCH -A chem -p debug\nsrun a.out\n", Directives(4, 90, "chem", "debug")),
        ("#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH -t 30:00\n", Directives(2, 30)),
        ("#!/bin/sh\n#PBS -l select=3:ncpus=64:mpiprocs=64\n#PBS -l walltime=01:00:00\n#PBS -A phys\n#PBS -q prod\n", Directives(3, 60, "phys", "prod")),
        ("#PBS -l nodes=2:ppn=16,walltime=00:20:00\n", Directives(2, 20)),
        ("#COBALT -n 8\n#COBALT -t 45\n#COBALT -A proj -q default\n", Directives(8, 45, "proj", "default")),
        ("#BSUB -nnodes 5\n#BSUB -W 2:00\n#BSUB -P abc123\n", Directives(5, 120, "abc123")),
        ("#!/bin/bash\necho '#SBATCH -N 9'\n  # SBATCH -N 7\n", Directives()),
    ],
)
def test_directives_of_each_scheduler_are_read(script, expected):
    assert read_directives(script) == expected


def test_a_bad_directive_names_its_line():
    with pytest.raises(BalsamError, match=r"line 2 of the script: #SBATCH gives nodes as 'many'"):
        read_directives("#!/bin/bash\n#SBATCH -N many\n")


def test_the_command_template_renders_back_to_the_exact_arguments():
    argv = ["prog", "a b", "{x}", "; rm -rf ~", "$(id)", "}{", "'q'"]
    template = CommandTemplate.parse(command_template(argv))
    assert template.placeholders == ()
    assert template.render({}) == argv


def test_qsub_adds_a_job_that_a_launcher_runs_once_with_its_arguments(site, balsam, tmp_path):
    out = tmp_path / "args.txt"
    script = tmp_path / "job.sh"
    script.write_text(f'#!/bin/bash\n#SBATCH -N 1\n#SBATCH -t 5\nprintf "%s\\n" "$@" >> {out}\necho "nodes=$BALSAM_JOB_NODES" >> {out}\n')
    script.chmod(0o755)
    result = balsam(["qsub", "--", str(script), "a b", "{x}", "; echo pwned"])
    assert result.code == 0, result.err
    job_id = int(result.out.strip())
    job = site.job(job_id)
    assert (job.nodes, job.wall_time_min, job.workflow, job.tags) == (1, 5, "qsub", {"qsub": "true"})
    assert job.app.launch == "script" and job.app.name.startswith("qsub-job.sh-")
    # The same command again reuses its app.
    again = int(balsam(["qsub", "-n", "1", "-t", "3", "--", str(script), "a b", "{x}", "; echo pwned"]).out)
    assert site.job(again).app.name == job.app.name and site.job(again).wall_time_min == 3
    done = run_launcher(site, "--until-idle")
    assert done.returncode == 0, done.stderr
    assert site.count_jobs() == {"JOB_FINISHED": 2}
    lines = out.read_text().splitlines()
    assert lines.count("a b") == 2 and lines.count("{x}") == 2 and lines.count("; echo pwned") == 2
    assert all(line.startswith("nodes=") and line != "nodes=" for line in lines if line.startswith("nodes"))


def test_qsub_refuses_bad_requests_and_stores_nothing(site, balsam, tmp_path):
    site.settings.scheduler.allowed_queues = ["debug", "prod"]
    site.settings.save()
    for args, message in [
        (["qsub", "-n", "1", "--", "echo", "hi"], "give the wall time with -t MINUTES"),
        (["qsub", "-n", "0", "-t", "5", "--", "echo", "hi"], "-n must be at least 1 node"),
        (["qsub", "-n", "1", "-t", "5", "-q", "huge", "--", "echo", "hi"], "queue 'huge' is not allowed at this site; allowed: debug, prod"),
    ]:
        result = balsam(args)
        assert result.code == 1 and message in result.err, (args, result.err)
    assert site.count_jobs() == {} and site.apps() == []
