-- The OTP ledger, the audit log, funnel statistics and template statuses.
-- Codes are never stored: a record holds the keyed digest; the copy awaiting delivery is sealed.

-- The OTP key shared by every instance when WAOTP_OTP_KEY is not configured: created once by
-- the first instance to start (INSERT ... ON CONFLICT DO NOTHING), then read back by all.
CREATE TABLE otp_key (
    id smallint PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL
);

-- Each session's current code (the digest and the rules it was issued under), as JSON.
CREATE TABLE otp_codes (
    session_id text PRIMARY KEY,
    record jsonb NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX otp_codes_expires_at ON otp_codes (expires_at);

-- A customer's recent sends and wrong attempts at one merchant; idle_at: from when the record
-- holds nothing within the last day (NULL: already), so that the sweep can delete it.
CREATE TABLE otp_customers (
    merchant text NOT NULL,
    number text NOT NULL,
    activity jsonb NOT NULL,
    idle_at timestamptz,
    PRIMARY KEY (merchant, number)
);
CREATE INDEX otp_customers_idle_at ON otp_customers (idle_at);

-- Hourly send counters: scope 'service' (the whole deployment) or 'merchant:<name>'.
CREATE TABLE otp_hourly_sends (
    scope text PRIMARY KEY,
    hour bigint NOT NULL,
    n bigint NOT NULL
);

-- The sealed copy of a session's code until WhatsApp accepts its message.
CREATE TABLE otp_outgoing (
    session_id text PRIMARY KEY,
    generation bigint NOT NULL,
    sealed jsonb NOT NULL
);

-- Append-only: every issue, resend, send, check, withdrawal and limit breach.
CREATE TABLE otp_audit (
    id bigserial PRIMARY KEY,
    session_id text NOT NULL,
    entry jsonb NOT NULL
);
CREATE INDEX otp_audit_session ON otp_audit (session_id, id);

-- Funnel counters per hour, merchant, number, flow and metric (histogram buckets included).
CREATE TABLE stats_counters (
    hour bigint NOT NULL,
    merchant text NOT NULL,
    number text NOT NULL,
    flow text NOT NULL,
    metric text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (hour, merchant, number, flow, metric)
);

-- When each running session's latest code was accepted by WhatsApp.
CREATE TABLE stats_code_sent (
    session_id text PRIMARY KEY,
    sent_at timestamptz NOT NULL
);

-- What WhatsApp last said about each template; waba '' stands for "any account".
CREATE TABLE template_status (
    waba text NOT NULL,
    name text NOT NULL,
    language text NOT NULL,
    status jsonb NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (waba, name, language)
);
