-- Pre-expiry notices (round-2 addendum F8, §9.3): three new e-mail kinds queued by
-- expire-courses, each sent once thanks to its dedup key. Additive: binaries from F1 on lease
-- only the kinds they can render, so notice rows wait for a binary that knows them.
ALTER TABLE email_outbox DROP CONSTRAINT ck_email_outbox_kind;
ALTER TABLE email_outbox ADD CONSTRAINT ck_email_outbox_kind CHECK (kind IN
  ('enrolment_claim','drop_deadline_notice','course_end_notice','access_end_notice'));
ALTER TABLE email_outbox ADD COLUMN dedup_key text;
CREATE UNIQUE INDEX uq_email_outbox_dedup_key ON email_outbox (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX ix_email_outbox_course_id ON email_outbox (course_id) WHERE course_id IS NOT NULL;
