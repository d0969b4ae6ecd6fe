-- The durable saga journal (round-2 addendum F7, §8.3), and the replay record of assign and
-- roster-import requests sent with an Idempotency-Key (issue #17). Additive: no existing table
-- changes, so older binaries ignore both tables.

-- Work in flight and its failures: a committed saga leaves no row. No foreign keys, because a
-- saga can outlive its course or seat.
CREATE TABLE saga (
  id               uuid PRIMARY KEY,
  kind             text NOT NULL CONSTRAINT ck_saga_kind
                   CHECK (kind IN ('create_lab','create_project','create_course','assign_student')),
  state            text NOT NULL DEFAULT 'running'
                   CONSTRAINT ck_saga_state CHECK (state IN ('running','compensating','compensated','failed')),
  plan             jsonb NOT NULL,
  context          jsonb NOT NULL DEFAULT '{}'::jsonb,
  progress         jsonb NOT NULL DEFAULT '{}'::jsonb,
  lease_id         uuid,
  lease_until      timestamptz,
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  finished_at      timestamptz
);
CREATE INDEX ix_saga_open ON saga (lease_until) WHERE state IN ('running','compensating');
CREATE INDEX ix_saga_finished ON saga (finished_at) WHERE state = 'compensated';

-- One row per Idempotency-Key of an assign or a roster import, kept 24 hours. Keys belong to
-- their caller: another caller's identical key is another request. A repeat with the same key
-- and the same request replays `response`; while the first is `running` (and its lease holds)
-- a repeat is refused with 409; after its process died (lease lapsed) a repeat runs it again.
CREATE TABLE idempotent_request (
  caller           uuid NOT NULL,
  operation        text NOT NULL CONSTRAINT ck_idempotent_request_operation
                   CHECK (operation IN ('assign','roster_import')),
  course_id        uuid NOT NULL,
  idempotency_key  text NOT NULL,
  -- SHA-256 of the request as the use case read it (body and the query flags that change it).
  request_hash     bytea NOT NULL,
  state            text NOT NULL DEFAULT 'running'
                   CONSTRAINT ck_idempotent_request_state CHECK (state IN ('running','done')),
  lease_id         uuid,
  lease_until      timestamptz,
  response_status  integer,
  response         jsonb,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  expires_at       timestamptz NOT NULL,
  PRIMARY KEY (caller, operation, course_id, idempotency_key),
  CONSTRAINT ck_idempotent_request_done
    CHECK (state = 'running' OR (response_status IS NOT NULL AND response IS NOT NULL))
);
CREATE INDEX ix_idempotent_request_expires ON idempotent_request (expires_at);
