-- Warrant plane schema, version 1. Times are unix milliseconds (0 = unset).

CREATE TABLE principals (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	kind        TEXT NOT NULL,
	role        TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	disabled_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
	id           TEXT PRIMARY KEY,
	principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
	hash         TEXT NOT NULL UNIQUE,
	created_at   INTEGER NOT NULL,
	last_used_at INTEGER NOT NULL DEFAULT 0,
	revoked_at   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_principal ON tokens(principal_id);

CREATE TABLE enroll_tokens (
	hash       TEXT PRIMARY KEY,
	pool       TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER NOT NULL DEFAULT 0,
	runner_id  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE runners (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL,
	pool           TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	public_key_pem TEXT NOT NULL,
	tiers          TEXT NOT NULL,
	token_hash     TEXT NOT NULL UNIQUE,
	enrolled_at    INTEGER NOT NULL,
	last_seen_at   INTEGER NOT NULL DEFAULT 0,
	revoked_at     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE policies (
	hash       TEXT PRIMARY KEY,
	document   BLOB NOT NULL,
	created_at INTEGER NOT NULL
);

CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE plane_keys (
	key_id         TEXT PRIMARY KEY,
	public_key_pem TEXT NOT NULL,
	added_at       INTEGER NOT NULL
);

CREATE TABLE secrets (
	name       TEXT PRIMARY KEY,
	ciphertext BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE runs (
	id                TEXT PRIMARY KEY,
	state             TEXT NOT NULL,
	pool              TEXT NOT NULL,
	agent_kind        TEXT NOT NULL,
	isolation         TEXT NOT NULL,
	prompt            TEXT NOT NULL,
	requester_id      TEXT NOT NULL,
	requester_name    TEXT NOT NULL,
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	details           BLOB,
	contract          BLOB,
	contract_hash     TEXT NOT NULL DEFAULT '',
	expires_at        INTEGER NOT NULL DEFAULT 0,
	secret_names      TEXT NOT NULL DEFAULT '[]',
	runner_id         TEXT NOT NULL DEFAULT '',
	claim_token_hash  TEXT NOT NULL DEFAULT '',
	claim_state       TEXT NOT NULL DEFAULT '',
	claimed_at        INTEGER NOT NULL DEFAULT 0,
	lease_until       INTEGER NOT NULL DEFAULT 0,
	cancel_actor_kind TEXT NOT NULL DEFAULT '',
	cancel_actor_id   TEXT NOT NULL DEFAULT '',
	cancel_reason     TEXT NOT NULL DEFAULT '',
	cancel_at         INTEGER NOT NULL DEFAULT 0,
	failure_class     TEXT NOT NULL DEFAULT '',
	failure_message   TEXT NOT NULL DEFAULT '',
	receipt           BLOB,
	event_count       INTEGER NOT NULL DEFAULT 0,
	head_hash         TEXT NOT NULL DEFAULT '',
	head_type         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_queue ON runs(state, pool, created_at, id);
CREATE INDEX runs_created ON runs(created_at, id);
CREATE INDEX runs_updated ON runs(updated_at, id);
CREATE INDEX runs_requester ON runs(requester_id, created_at);
CREATE INDEX runs_lease ON runs(claim_state, lease_until);
CREATE UNIQUE INDEX runs_claim_token ON runs(claim_token_hash) WHERE claim_token_hash != '';

CREATE TABLE events (
	run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
	seq    INTEGER NOT NULL,
	hash   TEXT NOT NULL,
	prev   TEXT NOT NULL,
	type   TEXT NOT NULL,
	data   BLOB NOT NULL,
	PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE blobs (
	hash        TEXT PRIMARY KEY,
	size        INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	last_ref_at INTEGER NOT NULL
);
CREATE INDEX blobs_last_ref ON blobs(last_ref_at);

CREATE TABLE blob_refs (
	hash         TEXT NOT NULL,
	principal_id TEXT NOT NULL,
	PRIMARY KEY (hash, principal_id)
) WITHOUT ROWID;

CREATE TABLE run_outputs (
	run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
	hash       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (run_id, hash)
) WITHOUT ROWID;
CREATE INDEX run_outputs_hash ON run_outputs(hash);

CREATE TABLE retention_log (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	at     INTEGER NOT NULL,
	kind   TEXT NOT NULL,
	ref    TEXT NOT NULL,
	reason TEXT NOT NULL,
	bytes  INTEGER NOT NULL DEFAULT 0
);
