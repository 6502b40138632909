"""Who the site wakes when Argo's assignments become jobs: the launchers only once the coordinator has
confirmed them (before, none may start them: each woken launcher would look and find nothing), the
transfer service at once for a job with inputs to fetch. A real site database, its real LISTEN."""

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
