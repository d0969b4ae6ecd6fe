-- Claim status on the roster and resent claim e-mails (round-2 addendum F1, §2.3): when and by
-- which token e-mail an enrolment was claimed, and what queued each outbox row, for whom and in
-- which course. Additive; rows written before it keep nulls and the origin 'assign'.

ALTER TABLE course_enrolment
  ADD COLUMN claimed_at       timestamptz,
  ADD COLUMN claimed_by_email varchar(255);

-- The origin list holds every trigger of this round, so no later migration widens it.
ALTER TABLE email_outbox
  ADD COLUMN origin       text NOT NULL DEFAULT 'assign'
             CONSTRAINT ck_email_outbox_origin
             CHECK (origin IN ('assign','resend','resend_all','email_corrected','unclaimed','job')),
  ADD COLUMN requested_by uuid,
  ADD COLUMN course_id    uuid REFERENCES course(id) ON DELETE CASCADE;

-- The rate limit and the roster read an enrolment's claim e-mails newest first.
CREATE INDEX ix_email_outbox_enrolment_created ON email_outbox (enrolment_id, created_at DESC)
  WHERE enrolment_id IS NOT NULL;
