"""a job's app checked once per statement, not once per row

Revision ID: 0012
Revises: 0011

The foreign key ``jobs.app_id -> apps.id`` queued an after-trigger event and ran a key lookup for
every new row: ``bench/bulk_create.py`` (100,000 jobs) measured 1.83 and 2.06 s of the server's CPU
with it, 1.69 and 1.59 s with the check below (two alternated pairs). A request's jobs share a few apps, so
the statement-level check below locks and looks up each app once. What the key did for removals
(``ON DELETE RESTRICT``) a row trigger on ``apps`` does, for the rare removal of an app.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# FOR KEY SHARE first, as a foreign key's check: an app being removed makes this wait for the
# removal, and a removal that comes later waits for this transaction and then sees its jobs (see
# APP_REMOVAL_FUNCTION). The lookup runs after the lock, on a new snapshot, so an app removed
# meanwhile is missing there. The functions run as the schema's owner, as a key's checks do: the
# lock needs a right on ``apps`` that collaborators do not have (balsam.site.access).
CHECK_FUNCTION = """
CREATE FUNCTION jobs_check_apps() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    missing integer;
BEGIN
    PERFORM 1 FROM apps a WHERE a.id IN (SELECT DISTINCT app_id FROM new_jobs) FOR KEY SHARE;
    SELECT n.app_id INTO missing FROM (SELECT DISTINCT app_id FROM new_jobs) n
    WHERE NOT EXISTS (SELECT 1 FROM apps a WHERE a.id = n.app_id) LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format('jobs: there is no app %s', missing);
    END IF;
    RETURN NULL;
END
$$
"""
INSERT_TRIGGER = """
CREATE TRIGGER jobs_check_apps AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_check_apps()
"""
# A job's app is not changed by Balsam; should anything change it, the row is checked on its own.
# (A statement trigger would copy every updated row of every UPDATE of jobs into a transition
# table; the launchers update jobs all the time.)
UPDATE_FUNCTION = """
CREATE FUNCTION jobs_check_new_app() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM 1 FROM apps a WHERE a.id = NEW.app_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format('jobs: there is no app %s', NEW.app_id);
    END IF;
    RETURN NULL;
END
$$
"""
UPDATE_TRIGGER = """
CREATE TRIGGER jobs_check_new_app AFTER UPDATE OF app_id ON jobs
FOR EACH ROW WHEN (OLD.app_id IS DISTINCT FROM NEW.app_id) EXECUTE FUNCTION jobs_check_new_app()
"""
# ON DELETE RESTRICT: an app with jobs stays. An AFTER trigger runs once the removal holds the app's
# row, so its look sees the jobs of any creation that locked the app first and has committed.
APP_REMOVAL_FUNCTION = """
CREATE FUNCTION apps_keep_used() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM jobs j WHERE j.app_id = OLD.id) THEN
        RAISE foreign_key_violation USING MESSAGE = format('apps: app %s still has jobs', OLD.id);
    END IF;
    RETURN NULL;
END
$$
"""
APP_REMOVAL_TRIGGER = """
CREATE TRIGGER apps_keep_used AFTER DELETE OR UPDATE OF id ON apps
FOR EACH ROW EXECUTE FUNCTION apps_keep_used()
"""


def upgrade() -> None:
    op.drop_constraint("jobs_app_id_fkey", "jobs", type_="foreignkey")
    for statement in (CHECK_FUNCTION, INSERT_TRIGGER, UPDATE_FUNCTION, UPDATE_TRIGGER, APP_REMOVAL_FUNCTION, APP_REMOVAL_TRIGGER):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER apps_keep_used ON apps")
    op.execute("DROP FUNCTION apps_keep_used()")
    op.execute("DROP TRIGGER jobs_check_new_app ON jobs")
    op.execute("DROP FUNCTION jobs_check_new_app()")
    op.execute("DROP TRIGGER jobs_check_apps ON jobs")
    op.execute("DROP FUNCTION jobs_check_apps()")
    op.create_foreign_key("jobs_app_id_fkey", "jobs", "apps", ["app_id"], ["id"], ondelete="RESTRICT")
