-- mailtls store, first schema (SPEC §3, §6; issue #3).
--
-- Portable on purpose: the same file must run on PostgreSQL (issue #6).
-- Only TEXT, BIGINT and BOOLEAN columns: every number is BIGINT, an i64
-- on both (PostgreSQL's INTEGER is 32 bits); times are Unix seconds;
-- no AUTOINCREMENT/SERIAL (ids are chosen by the store inside its write
-- transaction); no SQLite-only functions.
--
-- TLS levels are stored as their rank, so that order means strength:
-- 0 = none, 1 = tls, 2 = dane (mailtls_core::TlsLevel).

CREATE TABLE users (
    address       TEXT   NOT NULL PRIMARY KEY,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE tls_memory (
    kind            TEXT    NOT NULL CHECK (kind IN ('host', 'domain')),
    name            TEXT    NOT NULL,
    first_tls_at    BIGINT,
    last_tls_at     BIGINT,
    last_seen_at    BIGINT  NOT NULL,
    best_level      BIGINT NOT NULL CHECK (best_level BETWEEN 0 AND 2),
    last_level      BIGINT NOT NULL CHECK (last_level BETWEEN 0 AND 2),
    protocol        TEXT,
    cipher          TEXT,
    cert_sha256     TEXT,
    last_failure    TEXT,
    last_failure_at BIGINT,
    PRIMARY KEY (kind, name)
);

CREATE TABLE tls_alerts (
    id         BIGINT  NOT NULL PRIMARY KEY,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    at         BIGINT  NOT NULL,
    best_level BIGINT NOT NULL,
    observed   BIGINT NOT NULL,
    detail     TEXT    NOT NULL
);

CREATE INDEX tls_alerts_key ON tls_alerts (kind, name);

-- The audit log of operator resets (`mailtls memory forget`).
CREATE TABLE tls_memory_forgotten (
    id         BIGINT  NOT NULL PRIMARY KEY,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    at         BIGINT  NOT NULL,
    -- the best level the entry had, NULL when there was no entry
    best_level BIGINT
);

-- Queue metadata; the bodies are files in the relay's spool.
CREATE TABLE queue_messages (
    id          TEXT    NOT NULL PRIMARY KEY,
    sender      TEXT    NOT NULL,
    size        BIGINT  NOT NULL,
    received_at BIGINT  NOT NULL,
    auth_user   TEXT,
    client      TEXT    NOT NULL,
    require_tls BOOLEAN NOT NULL,
    -- a delivery attempt owns the message until then (NULL: nobody)
    lease_until BIGINT
);

CREATE TABLE queue_recipients (
    message_id      TEXT    NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    position        BIGINT NOT NULL,
    address         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    last_status     TEXT,
    last_reason     TEXT,
    last_attempt_at BIGINT,
    PRIMARY KEY (message_id, address)
);

CREATE INDEX queue_recipients_due ON queue_recipients (state, next_attempt_at);
