"""Who the site wakes when Argo's assignments become jobs: the launchers only once the coordinator has
confirmed them (before, none may start them: each woken launcher would look and find nothing), the
transfer service at once for a job with inputs to fetch; and what a site makes of an assignment sent
ahead. A real site database, its real LISTEN."""

from sqlalchemy import text

from balsam.resources import Resources
from balsam.site.argo_sync import ArgoSync, link
from balsam.site.db.notify import RUNNABLE_CHANNEL, Listener
from balsam.taskspec import TaskSpec
from balsam.wire.convert import Assignment, assignment_message


def _assignment(seq: int, inputs: dict[str, str]):
    spec = TaskSpec(name=f"t{seq}", app="true", params={}, resources=Resources(), inputs=inputs, outputs=(), tags={})
    message = assignment_message(Assignment(f"1/t{seq}", 1, 1, "w", spec, "c1"))
    message.seq = seq
    return message


def test_an_unconfirmed_job_wakes_no_launcher_and_its_confirmation_does(site, tmp_path):
    site.add_app("true", "true")
    link(site, "127.0.0.1:1")
    with site.session() as session:
        session.execute(text("UPDATE argo_link SET coordinator = 'c1'"))
    source = tmp_path / "input.txt"
    source.write_text("x")
    site.settings.transfer.read_roots = [str(tmp_path)]
    sync = ArgoSync(site)
    listener = Listener(site.engine, [RUNNABLE_CHANNEL])
    try:
        listener.wait(0.1)  # connected, and whatever came before drained

        sync.apply([_assignment(1, {})])
        assert [job.state for job in site.jobs()] == ["READY"]
        assert not listener.wait(1.0), "a job no launcher may start yet woke the launchers"

        sync.confirm(1)
        assert listener.wait(5.0), "the confirmation did not wake the launchers"

        sync.apply([_assignment(2, {"input.txt": f"file://{source}"})])
        assert len(site.jobs()) == 2
        assert listener.wait(5.0), "a job with an input to fetch did not wake the transfer service"
    finally:
        listener.close()


def test_an_assignment_sent_ahead_waits_for_its_parents_job_reads_from_its_folder_and_one_without_is_refused(site):
    site.add_app("true", "true")
    link(site, "127.0.0.1:1")
    with site.session() as session:
        session.execute(text("UPDATE argo_link SET coordinator = 'c1'"))
    sync = ArgoSync(site)

    def ahead(seq: int, waits_for: dict[str, int], inputs: dict[str, str]):
        spec = TaskSpec(name=f"t{seq}", app="true", params={}, resources=Resources(), inputs=inputs, outputs=(), tags={})
        message = assignment_message(Assignment(f"1/t{seq}", 1, 1, "w", spec, "c1", waits_for))
        message.seq = seq
        return message

    # The parent and two children in one batch: each child after the job it waits for, linked to it.
    sync.apply([_assignment(1, {}), ahead(2, {"1/t1": 1}, {"in.txt": "t1/out.txt"}), ahead(3, {"1/t2": 1}, {})])
    jobs = {job.name: job for job in site.jobs()}
    assert {n: j.state for n, j in jobs.items()} == {"t1": "READY", "t2": "AWAITING_PARENTS", "t3": "AWAITING_PARENTS"}
    assert site.parents(jobs["t2"].id) == [jobs["t1"].id] and site.parents(jobs["t3"].id) == [jobs["t2"].id]
    with site.session() as session:
        staged = session.execute(text("SELECT stage_in FROM jobs WHERE id = :id"), {"id": jobs["t2"].id}).scalar_one()
    assert staged == [{"source": f"file://{site.settings.data_dir}/w/{jobs['t1'].id}/out.txt", "dest": "in.txt"}]

    # One that waits for a task with no job here, or reads an output of a task it does not wait for: refused, with why.
    sync.apply([ahead(4, {"1/t9": 1}, {}), ahead(5, {"1/t1": 1}, {"in.txt": "t7/out.txt"})])
    assert sorted(job.name for job in site.jobs()) == ["t1", "t2", "t3"]
    with site.session() as session:
        said = [bytes(m) for (m,) in session.execute(text("SELECT body FROM argo_outbox ORDER BY seq"))]
    text_said = b"".join(said)
    assert b"it waits for task 1/t9 (attempt 1), which has no job here" in text_said
    assert b"input 'in.txt' names 't7/out.txt', which is no output of a task it waits for here" in text_said
