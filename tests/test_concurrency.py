"""Several processes writing one site at once lose nothing."""

import subprocess
import sys
import textwrap


def test_two_processes_adding_jobs_at_once_lose_nothing(site, tmp_path):
    site.add_app("work", "work {i}")
    (root,) = site.add_jobs([{"app": "work", "params": {"i": -1}}])
    script = tmp_path / "adder.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from balsam.site import Site
        who = sys.argv[1]
        with Site.open({str(site.settings.path)!r}) as site:
            for batch in range(20):
                site.add_jobs(
                    {{"app": "work", "params": {{"i": f"{{who}}-{{batch}}-{{k}}"}}, "parents": [{root}] if k % 10 == 0 else []}}
                    for k in range(50)
                )
                site.add_job("work", {{"i": f"{{who}}-{{batch}}-single"}})
    """))
    procs = [subprocess.Popen([sys.executable, str(script), who]) for who in ("p", "q")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    jobs = site.jobs()
    values = sorted(str(j.parameters["i"]) for j in jobs)
    expected = sorted(
        [f"{who}-{b}-{k}" for who in "pq" for b in range(20) for k in range(50)]
        + [f"{who}-{b}-single" for who in "pq" for b in range(20)]
        + ["-1"]
    )
    assert values == expected
    assert len({j.id for j in jobs}) == len(jobs)
    assert site.count_jobs() == {"READY": 1 + 2 * 20 * 46, "AWAITING_PARENTS": 2 * 20 * 5}
    assert len(site.children(root)) == 2 * 20 * 5
