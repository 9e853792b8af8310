-- Encrypted Sending and the secure alias (SPEC §4; issue #4). Portable as
-- 0001 is: TEXT and BIGINT only, no backend-only functions.

-- One row per user who ever changed the setting; no row means "off".
-- `alias_local` is the secure alias's local part (lower case) while the
-- setting is not off, and NULL while it is off: the alias exists exactly
-- while the setting is on, and UNIQUE gives each alias one owner (NULLs do
-- not collide, on SQLite and on PostgreSQL).
CREATE TABLE user_settings (
    address           TEXT   NOT NULL PRIMARY KEY REFERENCES users (address) ON DELETE CASCADE,
    encrypted_sending TEXT   NOT NULL CHECK (encrypted_sending IN ('off', 'on', 'expert')),
    min_level         TEXT   CHECK (min_level IN ('tls', 'verified', 'dane')),
    min_tls           TEXT   CHECK (min_tls IN ('1.2', '1.3')),
    inbound_min_tls   TEXT   CHECK (inbound_min_tls IN ('1.2', '1.3')),
    alias_local       TEXT   UNIQUE,
    updated_at        BIGINT NOT NULL
);

-- What a queued message's sender requires of every recipient's provider
-- (SPEC §4); both NULL when nothing (then require_tls is false).
ALTER TABLE queue_messages ADD COLUMN sender_min_level TEXT;
ALTER TABLE queue_messages ADD COLUMN sender_min_tls TEXT;
