-- The audit log (docs/admin.md, "Audit log"): one entry per state-changing
-- API request and per tunnel session, chained by an HMAC-SHA256 over the
-- previous entry's MAC under a key kept outside the store. The head row
-- numbers the entries and keeps the newest MAC.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    token_id TEXT NOT NULL,
    role TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    status BIGINT NOT NULL,
    error_code TEXT NOT NULL,
    request_id TEXT NOT NULL,
    diff TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL,
    mac TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, mac) VALUES (1, 0, '');
