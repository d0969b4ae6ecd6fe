-- The audit log of a course (spec addendum round2 §7.3): one append-only row per state change,
-- written in the transaction of the change. No foreign keys on purpose: the events outlive a
-- course delete until the retention purge of `expire-courses`. The CHECK lists the event types
-- of every capability of the round, so later capabilities only write them.

CREATE TABLE course_event (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  course_id      uuid NOT NULL,
  enrolment_id   uuid,
  seat_id        uuid,
  project_id     uuid,
  student_id     varchar(255),
  event_type     text NOT NULL CONSTRAINT ck_course_event_type CHECK (event_type IN (
                   'course_created','course_updated','course_activated','course_voided',
                   'course_budget_depleted','course_deleted',
                   'seats_provisioned','seats_transferred_out','seats_transferred_in',
                   'enrolment_created','enrolment_claimed','access_granted','access_update_failed',
                   'enrolment_activated',
                   'enrolment_email_corrected','enrolment_unclaimed','access_revoked',
                   'drop_failed','enrolment_dropped','access_removed',
                   'credits_topped_up','top_up_failed','top_up_in_doubt',
                   'email_queued','email_sent','email_failed',
                   'assignment_compensated','roster_imported')),
  actor_role     text NOT NULL CONSTRAINT ck_course_event_actor_role
                 CHECK (actor_role IN ('service_admin','course_admin','student','system')),
  actor_id       uuid,
  actor_email    varchar(255),
  request_id     text,
  amount         numeric(14,2),
  before_values  jsonb,
  after_values   jsonb,
  data           jsonb NOT NULL DEFAULT '{}'::jsonb,
  occurred_at    timestamptz NOT NULL
);
CREATE INDEX ix_course_event_course ON course_event (course_id, occurred_at, id);
CREATE INDEX ix_course_event_enrolment ON course_event (enrolment_id, occurred_at, id)
  WHERE enrolment_id IS NOT NULL;
CREATE INDEX ix_course_event_seat ON course_event (seat_id) WHERE seat_id IS NOT NULL;
CREATE INDEX ix_course_event_occurred_at ON course_event (occurred_at);

-- Append-only: every UPDATE is refused, and every DELETE unless the transaction set
-- `vlab.course_event_purge = 'on'` (only the retention purge does).
CREATE FUNCTION course_event_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
  IF TG_OP = 'DELETE' AND current_setting('vlab.course_event_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'course_event is append-only';
END $$;
CREATE TRIGGER tr_course_event_append_only BEFORE UPDATE OR DELETE ON course_event
  FOR EACH ROW EXECUTE FUNCTION course_event_append_only();
