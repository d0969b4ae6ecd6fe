-- Claim tokens separate from the enrolment id, and the removal of an unclaimed account's access
-- (round-2 addendum F2, §3.3). Additive: a null claim_token keeps the enrolment id as the claim
-- secret, so every existing row claims as before.

ALTER TABLE course_enrolment ADD COLUMN claim_token uuid;
CREATE UNIQUE INDEX uq_enrolment_claim_token ON course_enrolment (claim_token)
  WHERE claim_token IS NOT NULL;

-- Secrets that no longer claim: a claim with one of them is told the link was replaced.
CREATE TABLE claim_token_revocation (
  token         uuid PRIMARY KEY,
  enrolment_id  uuid NOT NULL REFERENCES course_enrolment(id) ON DELETE CASCADE,
  reason        text NOT NULL CONSTRAINT ck_claim_token_revocation_reason
                CHECK (reason IN ('email_corrected','unclaimed')),
  revoked_by    uuid,
  revoked_at    timestamptz NOT NULL
);
CREATE INDEX ix_claim_token_revocation_enrolment_id ON claim_token_revocation (enrolment_id);

-- The durable record of removing a previous claimer's access, worked like a revoking drop.
CREATE TABLE access_revocation (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  enrolment_id     uuid NOT NULL REFERENCES course_enrolment(id) ON DELETE CASCADE,
  course_id        uuid NOT NULL REFERENCES course(id) ON DELETE CASCADE,
  user_id          uuid NOT NULL,
  reason           text NOT NULL CONSTRAINT ck_access_revocation_reason CHECK (reason IN ('unclaimed')),
  requested_by     uuid,
  state            text NOT NULL DEFAULT 'pending'
                   CONSTRAINT ck_access_revocation_state CHECK (state IN ('pending','done','skipped')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz,
  last_error       text,
  lease_id         uuid,
  lease_until      timestamptz,
  done_at          timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ck_access_revocation_done CHECK (state = 'pending' OR done_at IS NOT NULL)
);
CREATE INDEX ix_access_revocation_due ON access_revocation (next_attempt_at) WHERE state = 'pending';
CREATE INDEX ix_access_revocation_enrolment_id ON access_revocation (enrolment_id);
CREATE INDEX ix_access_revocation_course_user ON access_revocation (course_id, user_id);
