-- Waitlisted student projects (spec addendum W.2.3): the waitlisted group of a student project,
-- and the access the service has confirmed in Keycloak for an enrolment's claimant, with the
-- lease and backoff of the access sync. Additive; existing rows are converged by the worker.

ALTER TABLE project ADD COLUMN waitlisted_group_id varchar(255);
ALTER TABLE project ADD CONSTRAINT project_waitlisted_group_id_key UNIQUE (waitlisted_group_id);

ALTER TABLE course_enrolment
  ADD COLUMN access_level text NOT NULL DEFAULT 'none'
      CONSTRAINT ck_course_enrolment_access_level CHECK (access_level IN ('none','waitlisted','member')),
  ADD COLUMN access_attempts        integer NOT NULL DEFAULT 0,
  ADD COLUMN access_next_attempt_at timestamptz,
  ADD COLUMN access_lease_id        uuid,
  ADD COLUMN access_lease_until     timestamptz,
  ADD COLUMN access_last_error      text,
  ADD CONSTRAINT ck_course_enrolment_access_lease
      CHECK ((access_lease_id IS NULL) = (access_lease_until IS NULL));

CREATE INDEX ix_course_enrolment_access_due ON course_enrolment (access_next_attempt_at)
  WHERE claimed_by IS NOT NULL AND NOT is_dropped AND access_level <> 'member';

-- Existing enrolments: activated students already hold member access.
UPDATE course_enrolment SET access_level = 'member'
  WHERE activated_at IS NOT NULL AND NOT is_dropped;
