-- Console sessions (DESIGN §12): a signed-in browser holds only a random session token in an
-- HttpOnly cookie; the row is found by the token's SHA-256, so a copy of the database does not
-- hold usable cookies. The API key itself is never stored: `key_id` names it, and every request
-- re-reads the key, so revoking or expiring it ends its sessions. `project` is the picker's
-- choice (`account/org/project`); `used_once` the last one-time token of a form that makes a
-- secret, so a reloaded page does not make a second one. Rows idle past the expiry are deleted as new sessions start.
CREATE TABLE console_sessions (
    token_hash  TEXT COLLATE "C" PRIMARY KEY,
    key_id      TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    project     TEXT,
    used_once   TEXT,
    created_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
