-- Placeholder: the OTP ledger, stats, templates and audit tables are added here by their own
-- change; until then this version creates nothing.
SELECT 1;
