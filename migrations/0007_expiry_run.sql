-- The record of every expire-courses run (round-2 addendum F9, §10.3): its status while it runs
-- and its printed summary once it has finished. Additive: older binaries ignore the table.
-- Rows older than EXPIRY_RUN_RETENTION_DAYS are deleted by the job itself.
CREATE TABLE expiry_run (
  id           uuid PRIMARY KEY,
  status       text NOT NULL CONSTRAINT ck_expiry_run_status
               CHECK (status IN ('running','ok','partial','error','skipped','abandoned')),
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz,
  exit_code    integer,
  host         text,
  course_ids   uuid[] NOT NULL DEFAULT '{}',
  summary      jsonb,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_expiry_run_started_at ON expiry_run (started_at DESC, id);
CREATE INDEX ix_expiry_run_course_ids ON expiry_run USING gin (course_ids);
