-- The complete schema of spec/data-model.md §3 (normative), including the seeded institution.
-- Forward-only: never edit this file once applied; add a new migration instead.

CREATE TABLE virtual_lab (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id         uuid NOT NULL,
  name             varchar(250) NOT NULL,
  description      text NOT NULL DEFAULT '',
  reference_email  varchar(255),
  email_verified   boolean NOT NULL DEFAULT false,
  entity           text NOT NULL,
  compute_cell     text NOT NULL DEFAULT 'cell_a'
                   CONSTRAINT ck_virtual_lab_compute_cell CHECK (compute_cell IN ('cell_a','cell_b')),
  admin_group_id   varchar(255) NOT NULL CONSTRAINT virtual_lab_admin_group_id_key UNIQUE,
  member_group_id  varchar(255) NOT NULL CONSTRAINT virtual_lab_member_group_id_key UNIQUE,
  is_course        boolean NOT NULL DEFAULT false,
  deleted          boolean NOT NULL DEFAULT false,
  deleted_at       timestamptz,
  deleted_by       uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX unique_lab_name_for_non_deleted ON virtual_lab (lower(name)) WHERE NOT deleted;
CREATE INDEX ix_virtual_lab_owner_id ON virtual_lab (owner_id);

CREATE TABLE project (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  virtual_lab_id   uuid NOT NULL REFERENCES virtual_lab(id),
  name             varchar(250) NOT NULL,
  description      text,
  owner_id         uuid NOT NULL,
  admin_group_id   varchar(255) NOT NULL CONSTRAINT project_admin_group_id_key UNIQUE,
  member_group_id  varchar(255) NOT NULL CONSTRAINT project_member_group_id_key UNIQUE,
  deleted          boolean NOT NULL DEFAULT false,
  deleted_at       timestamptz,
  deleted_by       uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX unique_project_name_for_non_deleted ON project (virtual_lab_id, name) WHERE NOT deleted;
CREATE INDEX ix_project_virtual_lab_id ON project (virtual_lab_id);
CREATE INDEX ix_project_owner_id ON project (owner_id);

CREATE TABLE virtual_lab_invite (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  virtual_lab_id   uuid NOT NULL REFERENCES virtual_lab(id),
  inviter_id       uuid NOT NULL,
  inviter_name     text,
  user_email       varchar(255) NOT NULL,
  role             text NOT NULL CONSTRAINT ck_virtual_lab_invite_role CHECK (role IN ('admin','member')),
  user_id          uuid,
  accepted         boolean NOT NULL DEFAULT false,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uq_virtual_lab_invite_lab_email_role
  ON virtual_lab_invite (virtual_lab_id, lower(user_email), role);

CREATE TABLE institution (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name             varchar(250) NOT NULL,
  contact_email    varchar(255) NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ix_institution_name ON institution (name);
INSERT INTO institution (name, contact_email)
  VALUES ('Open Brain Institute', 'obi-virtual-lab@openbraininstitute.org')
  ON CONFLICT (name) DO NOTHING;

CREATE TABLE course (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  virtual_lab_id       uuid NOT NULL REFERENCES virtual_lab(id),
  institution_id       uuid NOT NULL REFERENCES institution(id),
  template_project_id  uuid NOT NULL REFERENCES project(id),
  start_date           timestamptz,
  end_date             timestamptz,
  last_drop_date       timestamptz,
  status               text NOT NULL DEFAULT 'draft'
                       CONSTRAINT ck_course_status CHECK (status IN ('draft','active','voided')),
  credits_per_seat     integer NOT NULL CONSTRAINT ck_course_credits_per_seat CHECK (credits_per_seat >= 0),
  budget_depleted      boolean NOT NULL DEFAULT false,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ix_course_virtual_lab_id ON course (virtual_lab_id);
CREATE UNIQUE INDEX ix_course_template_project_id ON course (template_project_id);
CREATE INDEX ix_course_institution_id ON course (institution_id);
CREATE INDEX ix_course_status ON course (status);
CREATE INDEX ix_course_end_date ON course (end_date);

CREATE TABLE course_enrolment (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  course_id        uuid NOT NULL REFERENCES course(id),
  project_id       uuid NOT NULL REFERENCES project(id),
  contact_email    varchar(255) NOT NULL,
  student_id       varchar(255) NOT NULL,
  claimed_by       uuid,
  is_dropped       boolean NOT NULL DEFAULT false,
  activated_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT course_enrolment_project_id_key UNIQUE (project_id),
  CONSTRAINT uq_enrolment_course_student_id UNIQUE (course_id, student_id)
);
CREATE UNIQUE INDEX uq_enrolment_course_email ON course_enrolment (course_id, lower(contact_email));
CREATE UNIQUE INDEX uq_enrolment_course_claimed_by ON course_enrolment (course_id, claimed_by)
  WHERE claimed_by IS NOT NULL AND NOT is_dropped;
CREATE INDEX ix_course_enrolment_course_id ON course_enrolment (course_id);
CREATE INDEX ix_course_enrolment_claimed_by ON course_enrolment (claimed_by);
CREATE INDEX ix_course_enrolment_is_dropped ON course_enrolment (is_dropped);

CREATE TABLE seat (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  course_id            uuid NOT NULL REFERENCES course(id),
  institution_id       uuid NOT NULL REFERENCES institution(id),
  is_consumed          boolean NOT NULL DEFAULT false,
  previously_dropped   boolean NOT NULL DEFAULT false,
  batch_id             uuid NOT NULL,
  enrolment_id         uuid REFERENCES course_enrolment(id),
  expiry_date          timestamptz NOT NULL,
  credit_value         integer NOT NULL,
  created_at           timestamptz NOT NULL DEFAULT now(),
  reservation_id       uuid,
  reserved_until       timestamptz,
  reserved_student_id  varchar(255),
  reserved_email       varchar(255),
  CONSTRAINT seat_enrolment_id_key UNIQUE (enrolment_id),
  CONSTRAINT ck_seat_reservation CHECK ((reservation_id IS NULL) = (reserved_until IS NULL)),
  CONSTRAINT ck_seat_reservation_unassigned CHECK (reservation_id IS NULL OR enrolment_id IS NULL)
);
CREATE INDEX ix_seat_course_id ON seat (course_id);
CREATE INDEX ix_seat_batch_id ON seat (batch_id);
CREATE INDEX ix_seat_available ON seat (course_id, expiry_date, id)
  WHERE NOT is_consumed AND enrolment_id IS NULL;
CREATE INDEX ix_seat_reservation_id ON seat (reservation_id) WHERE reservation_id IS NOT NULL;

CREATE TABLE enrolment_drop (
  enrolment_id            uuid PRIMARY KEY REFERENCES course_enrolment(id) ON DELETE CASCADE,
  seat_id                 uuid REFERENCES seat(id) ON DELETE CASCADE,
  course_id               uuid NOT NULL REFERENCES course(id) ON DELETE CASCADE,
  project_id              uuid NOT NULL REFERENCES project(id),
  reason                  text NOT NULL
                          CONSTRAINT ck_enrolment_drop_reason CHECK (reason IN ('faculty','void','delete','expiry')),
  requested_by            uuid,
  requested_at            timestamptz NOT NULL,
  is_early                boolean NOT NULL,
  state                   text NOT NULL DEFAULT 'depleting'
                          CONSTRAINT ck_enrolment_drop_state CHECK (state IN ('depleting','revoking','done')),
  deplete_in_doubt        boolean NOT NULL DEFAULT false,
  depleted_amount         numeric(14,2),
  seat_recovered          boolean,
  dropped_at              timestamptz,
  access_attempts         integer NOT NULL DEFAULT 0,
  next_access_attempt_at  timestamptz,
  access_removed_at       timestamptz,
  last_error              text,
  lease_id                uuid,
  lease_until             timestamptz,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ck_enrolment_drop_settled
    CHECK (state = 'depleting' OR (dropped_at IS NOT NULL AND seat_recovered IS NOT NULL)),
  CONSTRAINT ck_enrolment_drop_done CHECK (state <> 'done' OR access_removed_at IS NOT NULL)
);
CREATE INDEX ix_enrolment_drop_course_id ON enrolment_drop (course_id);
CREATE INDEX ix_enrolment_drop_due ON enrolment_drop (next_access_attempt_at) WHERE state = 'revoking';

CREATE TABLE email_outbox (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  kind             text NOT NULL CONSTRAINT ck_email_outbox_kind CHECK (kind IN ('enrolment_claim')),
  enrolment_id     uuid REFERENCES course_enrolment(id) ON DELETE CASCADE,
  recipient        varchar(255) NOT NULL,
  payload          jsonb NOT NULL,
  status           text NOT NULL DEFAULT 'pending'
                   CONSTRAINT ck_email_outbox_status CHECK (status IN ('pending','sent','failed','cancelled')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  lease_id         uuid,
  lease_until      timestamptz,
  last_error       text,
  sent_at          timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_email_outbox_due ON email_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX ix_email_outbox_enrolment_id ON email_outbox (enrolment_id);
