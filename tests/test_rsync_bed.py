"""The rsync transfer backend between hosts that share no files, on the namespace bed (tests/netns_bed.py).

Each compute host of the bed runs a real sshd (tests/sshd_bed.py) and has a private folder (a tmpfs
in its own mount namespace) that no other host sees, so a file gets from one to the other only by
travelling over ssh. Where namespaces are not permitted the tests skip with the reason;
``BALSAM_REQUIRE_NETNS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns_bed import BALSAM, BIN, PYTHON, NetnsBed, host_env, on_site, running_bed
from sshd_bed import SshKeys, sshd_available, start_sshd

from balsam.argo.demo import REPORT, SQUARE

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    reason = sshd_available()
    if reason:
        if os.environ.get("BALSAM_REQUIRE_NETNS") == "1":
            pytest.fail(f"BALSAM_REQUIRE_NETNS=1 but the rsync tests cannot run here: {reason}")
        pytest.skip(reason)
    yield from running_bed(tmp_path_factory.mktemp("bed"), computes=2)


@pytest.fixture(scope="module")
def ssh(bed, tmp_path_factory):
    """Keys, and sshd running on c1 and c2 (not on the login host)."""
    keys = SshKeys(tmp_path_factory.mktemp("ssh"), {h: bed.hosts[h].address for h in bed.computes})
    began = time.monotonic()
    keys.daemons = {host: start_sshd(bed, host, keys) for host in bed.computes}
    print(f"bed up in {bed.started_in:.2f} s; sshd on {len(keys.daemons)} hosts in {time.monotonic() - began:.2f} s")
    return keys


@pytest.fixture(scope="module")
def private(bed, tmp_path_factory):
    """A folder per compute host that only that host sees."""
    root = tmp_path_factory.mktemp("private")
    root.chmod(0o755)  # a site's database server runs as a user of its own and must reach its folder
    return {host: bed.private_dir(host, root / host, mode="0755") for host in bed.computes}


def sh(bed: NetnsBed, host: str, code: str, *args: str) -> object:
    """Python ``code`` run on ``host``; what it prints last, read as JSON."""
    out = bed.run(host, [PYTHON, "-c", "import json, sys, os, hashlib\n" + code, *args]).stdout
    return json.loads(out.strip().splitlines()[-1])


MAKE_FILES = """
folder, count = sys.argv[1], int(sys.argv[2])
os.makedirs(folder, exist_ok=True)
digests = {}
for i in range(count):
    data = os.urandom(1000 + 4099 * i)
    with open(os.path.join(folder, f"f{i}.bin"), "wb") as handle:
        handle.write(data)
    digests[f"f{i}.bin"] = hashlib.sha256(data).hexdigest()
print(json.dumps(digests))
"""

DIGESTS = """
folder = sys.argv[1]
print(json.dumps({n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
                  for n in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, n))} if os.path.isdir(folder) else None))
"""

# The backend alone, on c1: one task per case; what each ended with.
BACKEND = """
import time
from balsam.transfer import Item, Location, TransferError
from balsam.transfer.rsync import RsyncBackend, SshOptions

cases = json.loads(sys.argv[1])
out = {}
for name, case in cases.items():
    try:
        backend = RsyncBackend(SshOptions(case["identity"], case["known_hosts"], 5), case["roots"])
        items = [Item(Location.parse(s), Location.parse(d)) for s, d in case["items"]]
        task = backend.submit(items, label=name, verify_checksum=True)
    except TransferError as exc:
        out[name] = {"refused": str(exc)}
        continue
    while not (status := backend.poll(task)).ended:
        time.sleep(0.02)
    out[name] = {"state": status.state, "failed": {str(k): v for k, v in status.failed.items()}, "files": status.files_done,
                 "bytes": status.bytes_done, "message": status.message}
    backend.close()
print(json.dumps(out))
"""


def test_the_backend_moves_a_batch_both_ways_and_says_what_is_wrong(bed, ssh, private, tmp_path):
    c1, c2 = private["c1"], private["c2"]
    made = sh(bed, "c2", MAKE_FILES, str(c2 / "outbox"), "6")
    assert sh(bed, "c1", DIGESTS, str(c2 / "outbox")) is None  # c1 cannot see c2's folder
    stranger = SshKeys(tmp_path / "stranger", {"c2": bed.hosts["c2"].address})  # a key c2 does not know, and wrong host keys
    good = {"identity": str(ssh.identity), "known_hosts": str(ssh.known_hosts), "roots": [f"ssh://c2{c2}/outbox", f"ssh://c2{c2}/inbox"]}
    pull = [(f"ssh://c2{c2}/outbox/{n}", f"file://{c1}/in/{n}") for n in sorted(made)]
    cases = {
        "pull": {**good, "items": pull},
        "push": {**good, "items": [(f"file://{c1}/in", f"ssh://c2{c2}/inbox/copy")]},
        "missing": {**good, "items": [(f"ssh://c2{c2}/outbox/none.bin", f"file://{c1}/x"), pull[0]]},
        "outside": {**good, "items": [(f"ssh://c2{c2}/secret.txt", f"file://{c1}/secret.txt")]},
        "wrong key": {**good, "identity": str(stranger.identity), "items": pull[:2]},
        "unknown host key": {**good, "known_hosts": str(stranger.known_hosts), "items": pull[:1]},
        "no sshd": {**good, "roots": [f"ssh://login{c2}"], "items": [(f"ssh://login{c2}/x", f"file://{c1}/x")]},
    }
    seen = sh(bed, "c1", BACKEND, json.dumps(cases))

    assert seen["pull"] == {"state": "done", "failed": {}, "files": 6, "bytes": sum(1000 + 4099 * i for i in range(6)), "message": ""}
    assert sh(bed, "c1", DIGESTS, str(c1 / "in")) == made
    assert seen["push"]["state"] == "done" and not seen["push"]["failed"], seen["push"]
    assert sh(bed, "c2", DIGESTS, str(c2 / "inbox" / "copy")) == made
    # One missing file fails that file only.
    assert list(seen["missing"]["failed"]) == ["0"] and seen["missing"]["failed"]["0"].startswith("source missing:"), seen["missing"]
    assert "outside the folders on other hosts this site may read from" in seen["outside"]["refused"], seen["outside"]
    # The host-wide refusals name the setting to look at, and fail the whole batch at once.
    assert set(seen["wrong key"]["failed"]) == {"0", "1"}
    assert "login refused" in seen["wrong key"]["failed"]["0"] and "transfer.ssh_identity" in seen["wrong key"]["failed"]["0"]
    assert "transfer.ssh_known_hosts" in seen["unknown host key"]["failed"]["0"], seen["unknown host key"]
    assert "host unreachable" in seen["no sshd"]["failed"]["0"] and "Connection refused" in seen["no sshd"]["failed"]["0"], seen["no sshd"]
    for case in seen.values():
        assert "Traceback" not in json.dumps(case) and case.get("state", "done") == "done", case  # an ended task, never a crash
    # Nothing half-written is left where files arrived.
    listing = sh(bed, "c1", "print(json.dumps(sorted(os.listdir(sys.argv[1])) + sorted(os.listdir(sys.argv[1] + '/in'))))", str(c1))
    assert listing == ["in", *sorted(made)], listing


def test_a_site_stages_in_by_rsync_and_retries_while_sshd_is_down(bed, ssh, private):
    """A site on c1 (its folder private to c1) stages in a batch from c2 with checksums verified; sshd on c2
    is down at first, so the first attempt fails with the host unreachable, and the retry after it is back succeeds."""
    c1, c2 = private["c1"], private["c2"]
    made = sh(bed, "c2", MAKE_FILES, str(c2 / "batch"), "20")
    path = c1 / "site"
    env = host_env(bed, path)
    bed.run("c1", [BALSAM, "init", str(path)], env=env, timeout=180)
    settings_code = (
        "import sys\nfrom balsam.site.settings import SiteSettings\ns = SiteSettings.load(sys.argv[1])\nt = s.transfer\n"
        "t.ssh_identity, t.ssh_known_hosts, t.ssh_roots = sys.argv[2], sys.argv[3], [sys.argv[4]]\n"
        "t.verify_checksum, t.retries, t.retry_delay_s, t.interval_s = True, 5, 1.0, 0.5\ns.save()\nprint('{}')"
    )
    bed.run("c1", [PYTHON, "-c", settings_code, str(path), str(ssh.identity), str(ssh.known_hosts), f"ssh://c2{c2}/batch"], env=env)
    bed.end(ssh.daemons["c2"])  # the transient failure: c2's sshd is gone
    try:
        jobs = on_site(bed, "c1", path, "site.add_app('cat', 'cat {f}')\nprint(json.dumps(site.add_jobs(["
                       "{'app': 'cat', 'workflow': 'w', 'name': 'batch', 'params': {'f': 'in/f0.bin'}, "
                       "'inputs': {f'in/{n}': f'ssh://c2{sys.argv[1]}/batch/{n}' for n in json.loads(sys.argv[2])}},"
                       "{'app': 'cat', 'workflow': 'w', 'name': 'sneaky', 'params': {'f': 'x'}, "
                       "'inputs': {'x': f'ssh://c2{sys.argv[1]}/secret.txt'}}])))", str(c2), json.dumps(sorted(made)))  # fmt: skip
        bed.run("c1", [BALSAM, "site", "start"], env=env, timeout=120)
        # Wait until the first attempt has failed, and see why.
        failure = on_site(bed, "c1", path, WAIT_FOR_FAILED_ATTEMPT, timeout=120)
        assert "host unreachable" in failure and "c2" in failure, failure
    finally:
        ssh.daemons["c2"] = start_sshd(bed, "c2", ssh)
    try:
        states = on_site(bed, "c1", path, WAIT_STATES, json.dumps(jobs), timeout=180)
        history = on_site(bed, "c1", path, "print(json.dumps([e.message for e in site.history(int(sys.argv[1]))]))", str(jobs[0]))
        tasks = on_site(bed, "c1", path, "from sqlalchemy import text\nwith site.session() as s:\n    print(json.dumps([list(r) for r in "
                        "s.execute(text(\"SELECT backend, item_count, state FROM transfer_tasks ORDER BY id\"))]))")  # fmt: skip
        job = on_site(bed, "c1", path, "j = site.job(int(sys.argv[1]))\nprint(json.dumps({'state': str(j.state), 'error': j.error_tail}))",
                      str(jobs[1]))  # fmt: skip
    finally:
        bed.run("c1", [BALSAM, "site", "stop"], env=env, check=False, timeout=120)
    assert states[str(jobs[0])] != "READY" and states[str(jobs[0])] != "FAILED", (states, history)
    assert "staging in 20 file(s)" in history and "staged in 20 file(s)" in history, history
    # All 20 files in one rsync task (the failed attempt's, then the retry's), and they arrived intact.
    assert tasks[0][:2] == ["rsync", 20] and tasks[-1] == ["rsync", 20, "done"], tasks
    folder = path / "data" / "w" / str(jobs[0]) / "in"
    assert sh(bed, "c1", DIGESTS, str(folder)) == made
    # The file outside the roots was refused before anything was copied.
    assert states[str(jobs[1])] == "FAILED" and "outside the folders on other hosts this site may read from" in job["error"], job


WAIT_FOR_FAILED_ATTEMPT = """
import time
from sqlalchemy import text
end = time.monotonic() + 90
while time.monotonic() < end:
    with site.session() as s:
        row = s.execute(text("SELECT error FROM transfer_items WHERE attempts > 0 AND error <> '' AND backend = 'rsync' LIMIT 1")).first()
    if row:
        break
    time.sleep(0.1)
print(json.dumps(row[0] if row else "no failed attempt seen"))
"""

WAIT_STATES = """
import time
ids = json.loads(sys.argv[1])
end = time.monotonic() + 150
while True:
    states = {str(i): str(site.job(i).state) for i in ids}
    if all(s not in ("READY", "CREATED", "AWAITING_PARENTS") for s in states.values()) or time.monotonic() > end:
        break
    time.sleep(0.2)
print(json.dumps(states))
"""


# -- the argo demo's workflow between two sites that share nothing ---------------------------------

ARGO_PORT = 50551  # inside the login host's own network stack: no other test's port

SITE_SETTINGS = """
import sys
from balsam.site.settings import SiteSettings
s = SiteSettings.load(sys.argv[1])
eq, t = s.elastic_queue, s.transfer
eq.enabled, eq.job_mode, eq.interval_s, eq.min_wall_min, eq.max_wall_min = True, "serial", 1.0, 5, 10
s.argo.heartbeat_s = 1.0
t.ssh_host, t.ssh_identity, t.ssh_known_hosts, t.ssh_roots = sys.argv[2], sys.argv[3], sys.argv[4], [sys.argv[5]]
t.verify_checksum, t.retry_delay_s, t.interval_s = True, 1.0, 0.5
s.save()
"""

CLIENT = """
import sys
from balsam.argo.client import ArgoClient
from balsam.argo.demo import workflow_spec
address, ca, data = sys.argv[1:4]
spec = workflow_spec(6)
for task in spec["tasks"]:
    if task["name"].startswith("square-"):  # odd squares at alpha (on c1), even ones at beta (on c2), the report at beta
        task["site"] = "alpha" if int(task["params"]["x"]) % 2 else "beta"
with ArgoClient(address, token=open(data + "/owner-token").read().strip(), ca_file=ca, timeout_s=30) as client:
    end = time.monotonic() + 60
    while {s["name"] for s in client.sites() if s["status"] == "up"} != {"alpha", "beta"} and time.monotonic() < end:
        time.sleep(0.2)
    workflow = client.submit(spec)
    status = client.wait(workflow, timeout_s=240)
    tasks = {t["name"]: {"site": t["site"], "state": t["state"], "id": t["id"]} for t in client.tasks(workflow)}
print(json.dumps({"status": status, "tasks": tasks}))
"""

RUNS = """
from sqlalchemy import text
runs = {}
for job in site.jobs(workflow="demo"):
    out = site.settings.data_dir / "demo" / str(job.id) / "job.out"
    runs.setdefault(job.tags.get("argo_task"), []).append({
        "running": sum(1 for e in site.history(job.id) if str(e.to_state).endswith("RUNNING")),
        "out": out.read_text().strip() if out.exists() else None, "sources": sorted(i["source"] for i in job.stage_in)})
print(json.dumps(runs))
"""


def test_the_argo_demo_workflow_between_sites_that_share_no_files(bed, ssh, private, tmp_path):
    """The coordinator on the login host; site alpha on c1 and beta on c2, each in a folder the others cannot
    see. The report at beta reads the squares made at alpha: they can only have travelled by rsync over ssh."""
    c1, c2 = private["c1"], private["c2"]
    argo_data = bed.private_dir("login", tmp_path / "argo-private", mode="0755") / "argo"
    certs = tmp_path / "certs"  # the CA's certificate is public: on the shared filesystem, as a user would copy it
    address = f"login:{ARGO_PORT}"
    argo = str(BIN / "argo")
    bed.run("login", [argo, "certs", "init", "--dir", str(certs), "--host", "login"], env=os.environ)
    bed.run("login", [argo, "server", "start", "--data", str(argo_data), "--address", f"{bed.hosts['login'].address}:{ARGO_PORT}",
                      "--tls-dir", str(certs), "--site-timeout", "30", "--web", "off"], env=os.environ, timeout=180)  # fmt: skip
    sites = {"alpha": ("c1", c1 / "alpha", f"ssh://c2{c2}/beta/data"), "beta": ("c2", c2 / "beta", f"ssh://c1{c1}/alpha/data")}
    started = []
    try:
        for name, (host, path, others) in sites.items():
            env = host_env(bed, path)
            bed.run(host, [BALSAM, "init", str(path), "--name", name], env=env, timeout=180)
            bed.run(host, [PYTHON, "-c", SITE_SETTINGS, str(path), host, str(ssh.identity), str(ssh.known_hosts), others], env=env)
            on_site(bed, host, path, f"site.add_app('square', {SQUARE!r})\nsite.add_app('report', {REPORT!r})\nprint('{{}}')")
            token = bed.run("login", [argo, "site", "enrol", name, "--data", str(argo_data), "--address", address,
                                      "--ca", str(certs / "ca.pem")], env=os.environ).stdout.strip()  # fmt: skip
            started.append((host, env))
            bed.run(host, [BALSAM, "site", "start", "--argo", address, "--argo-ca", str(certs / "ca.pem"), "--enrol-token", token],
                    env=env, timeout=180)  # fmt: skip
        # Nothing is shared: neither compute host sees the other's folder, nor the coordinator's.
        assert sh(bed, "c2", "print(json.dumps(os.listdir(sys.argv[1])))", str(c1)) == []
        assert sh(bed, "c1", "print(json.dumps(os.listdir(sys.argv[1])))", str(c2)) == []
        assert sh(bed, "c1", "print(json.dumps(os.listdir(sys.argv[1])))", str(argo_data.parent)) == []
        began = time.monotonic()
        result = json.loads(bed.run("login", [PYTHON, "-c", "import json, time\n" + CLIENT, address, str(certs / "ca.pem"), str(argo_data)],
                                    env=os.environ, timeout=360).stdout.strip().splitlines()[-1])  # fmt: skip
        took = time.monotonic() - began
        runs = {name: on_site(bed, host, path, RUNS) for name, (host, path, _) in sites.items()}
    finally:
        for host, env in started:
            bed.run(host, [BALSAM, "site", "stop"], env=env, check=False, timeout=120)
        bed.run("login", [argo, "server", "stop", "--data", str(argo_data)], env=os.environ, check=False, timeout=120)
    print(f"the demo workflow across two hosts sharing nothing: {took:.1f} s from submission to its end")
    assert result["status"] == "finished", (result, runs)
    tasks = result["tasks"]
    assert {n: t["site"] for n, t in tasks.items()} == {**{f"square-{x}": "alpha" if x % 2 else "beta" for x in range(1, 7)}, "report": "beta"}
    assert all(t["state"] == "JOB_FINISHED" for t in tasks.values()), tasks
    # Each task ran once, at its own site, and only there.
    for name, task in tasks.items():
        (job,) = runs[task["site"]][task["id"]]
        assert job["running"] == 1, (name, job)
        other = "beta" if task["site"] == "alpha" else "alpha"
        assert task["id"] not in runs[other], (name, runs[other])
    (report,) = runs["beta"][tasks["report"]["id"]]
    assert report["out"] == "read 6 of 6 square files, sum 91", report
    # The squares made at alpha came from alpha's host by ssh; beta's own were read from its own folder.
    moved = [s for s in report["sources"] if s.startswith(f"ssh://c1{c1}/alpha/data/")]
    assert len(moved) == 3 and len(report["sources"]) == 6, report["sources"]


def test_the_rsync_benchmark_runs_at_its_smoke_size(bed):
    """bench/rsync_batch.py --smoke end to end (its own bed), so the benchmark cannot rot; its figures are not judged."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "rsync_batch.py"
    run = subprocess.run([sys.executable, str(bench), "--smoke"], capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "20 files of 4096 bytes from another host, median of 1:", run.stdout
    assert [line.split()[0] for line in lines[1:]] == ["backend", "backend,", "bare"], run.stdout
