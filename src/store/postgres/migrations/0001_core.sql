-- Inbound events, sessions, timers, the outbox and what a step writes beside them.
-- Times the runtime compares in milliseconds (due times, windows) are bigint milliseconds, so
-- a value read back is exactly the one written; the rest are timestamptz. Records are kept as
-- their JSON in bytea rather than jsonb: a customer's text may hold a NUL, which jsonb (and
-- text) refuse, and the engine never queries inside them — the columns beside them are for that.

-- Each WhatsApp event once (the dedupe key is unique), in arrival order (seq), until handled.
-- The event itself is sealed: a customer's message may be the code they were sent.
CREATE TABLE waotp_inbound_events (
    seq bigserial PRIMARY KEY,
    dedupe_key bytea NOT NULL UNIQUE,
    customer_key text NOT NULL,
    received_at bigint NOT NULL, -- Unix seconds
    event bytea NOT NULL,
    handled_at timestamptz
);
CREATE INDEX waotp_inbound_pending ON waotp_inbound_events (customer_key, seq)
    WHERE handled_at IS NULL;
CREATE INDEX waotp_inbound_unhandled ON waotp_inbound_events (seq) WHERE handled_at IS NULL;
CREATE INDEX waotp_inbound_received ON waotp_inbound_events (received_at);

-- Sessions: the record as written, plus the columns listings and the purge filter on.
CREATE TABLE waotp_sessions (
    id text PRIMARY KEY,
    merchant text NOT NULL,
    number text NOT NULL,
    customer text NOT NULL,
    flow text NOT NULL,
    active boolean NOT NULL,
    outcome text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX waotp_sessions_created ON waotp_sessions (created_at DESC, id DESC);
CREATE INDEX waotp_sessions_merchant_created ON waotp_sessions (merchant, created_at DESC, id DESC);
CREATE INDEX waotp_sessions_ended ON waotp_sessions (updated_at) WHERE NOT active;

-- A customer's (scoped customer key) active session per flow.
CREATE TABLE waotp_active_sessions (
    customer_key text NOT NULL,
    flow text NOT NULL,
    session_id text NOT NULL,
    PRIMARY KEY (customer_key, flow)
);

-- Pending timers; a claim (claimed_until, claimed_by) hands a due timer to one instance.
CREATE TABLE waotp_timers (
    due_ms bigint NOT NULL,
    session_id text NOT NULL,
    timer_id text NOT NULL,
    seq bigint NOT NULL,
    claimed_until timestamptz,
    claimed_by text,
    PRIMARY KEY (session_id, timer_id, due_ms)
);
CREATE INDEX waotp_timers_due ON waotp_timers (due_ms);

-- Outbox entries; `queued` mirrors the entry's state (pending or in doubt: waiting in the
-- queue), a claim hands it to one sender for a lease. One recipient (merchant, number, `to`)
-- has one entry claimed at a time, the earliest queued.
CREATE TABLE waotp_outbox (
    id text PRIMARY KEY,
    recipient text NOT NULL,
    session_id text,
    entry bytea NOT NULL,
    state text NOT NULL,
    queued boolean NOT NULL,
    due_ms bigint NOT NULL,
    created_at timestamptz NOT NULL,
    claimed_until timestamptz,
    claimed_by text
);
CREATE INDEX waotp_outbox_queue ON waotp_outbox (due_ms) WHERE queued;
CREATE INDEX waotp_outbox_recipient ON waotp_outbox (recipient, due_ms, id) WHERE queued;
CREATE INDEX waotp_outbox_claimed ON waotp_outbox (recipient) WHERE claimed_until IS NOT NULL;
CREATE INDEX waotp_outbox_session ON waotp_outbox (session_id);
CREATE INDEX waotp_outbox_in_flight ON waotp_outbox (id) WHERE state = 'in_flight';
CREATE INDEX waotp_outbox_finished ON waotp_outbox (created_at) WHERE state IN ('done', 'failed');

-- The WhatsApp message id a status webhook reported for an entry (its id came back).
CREATE TABLE waotp_echoes (
    entry_id text PRIMARY KEY,
    message_id text NOT NULL
);

-- Sent WhatsApp messages, tied back to their session.
CREATE TABLE waotp_message_links (
    message_id text PRIMARY KEY,
    link bytea NOT NULL,
    sent_at timestamptz NOT NULL
);
CREATE INDEX waotp_message_links_sent ON waotp_message_links (sent_at);

-- Statuses that arrived before the link of their message was stored.
CREATE TABLE waotp_parked_statuses (
    message_id text NOT NULL,
    status text NOT NULL,
    body bytea NOT NULL,
    at bigint NOT NULL, -- the status's own Unix seconds
    PRIMARY KEY (message_id, status)
);

-- Per scoped customer: last message (the 24-hour window), last default reply, send pause.
CREATE TABLE waotp_windows (customer_key text PRIMARY KEY, at_ms bigint NOT NULL);
CREATE TABLE waotp_default_replies (customer_key text PRIMARY KEY, at_ms bigint NOT NULL);
CREATE TABLE waotp_recipient_pauses (customer_key text PRIMARY KEY, until_ms bigint NOT NULL);

-- Messages a sandbox deployment recorded instead of sending.
CREATE TABLE waotp_sandbox_messages (
    id bigserial PRIMARY KEY,
    customer_key text NOT NULL,
    at timestamptz NOT NULL,
    entry_id text NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX waotp_sandbox_customer ON waotp_sandbox_messages (customer_key, at, id);

-- Flow files by hash, so a session keeps its flow's version across restarts and instances.
CREATE TABLE waotp_flow_sources (
    hash text PRIMARY KEY,
    name text NOT NULL,
    source text NOT NULL
);

-- The merchant API's idempotency keys (scope: a digest of the API key, never the key).
CREATE TABLE waotp_idempotency_keys (
    scope bytea NOT NULL,
    key text NOT NULL,
    request text NOT NULL,
    session_id text NOT NULL,
    created_at timestamptz NOT NULL,
    answer bytea, -- sealed: a reverse-OTP answer carries a code
    PRIMARY KEY (scope, key)
);
CREATE INDEX waotp_idempotency_created ON waotp_idempotency_keys (created_at);
