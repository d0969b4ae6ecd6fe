-- Per-student credit top-ups (round-2 addendum F5, §6.3). Additive: existing enrolments get
-- `extra_credits = 0`, and older binaries ignore the new table.

ALTER TABLE course_enrolment
  ADD COLUMN extra_credits integer NOT NULL DEFAULT 0
             CONSTRAINT ck_enrolment_extra_credits CHECK (extra_credits >= 0);

CREATE TABLE credit_top_up (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  enrolment_id       uuid NOT NULL REFERENCES course_enrolment(id) ON DELETE CASCADE,
  course_id          uuid NOT NULL REFERENCES course(id) ON DELETE CASCADE,
  project_id         uuid NOT NULL REFERENCES project(id),
  amount             integer NOT NULL CONSTRAINT ck_credit_top_up_amount CHECK (amount BETWEEN 1 AND 10000),
  note               text,
  requested_by       uuid NOT NULL,
  requested_by_role  text NOT NULL
                     CONSTRAINT ck_credit_top_up_role CHECK (requested_by_role IN ('service_admin','course_admin')),
  state              text NOT NULL DEFAULT 'granting'
                     CONSTRAINT ck_credit_top_up_state CHECK (state IN ('granting','granted','failed','in_doubt')),
  lease_id           uuid,
  lease_until        timestamptz,
  last_error         text,
  settled_at         timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uq_credit_top_up_in_flight ON credit_top_up (enrolment_id) WHERE state = 'granting';
CREATE INDEX ix_credit_top_up_enrolment_id ON credit_top_up (enrolment_id);
CREATE INDEX ix_credit_top_up_stale ON credit_top_up (lease_until) WHERE state = 'granting';
