-- Warrant plane schema for PostgreSQL, version 1. Times are timestamptz at
-- millisecond precision; NULL means unset. Opaque documents (contracts,
-- receipts, event data, details) are bytea, kept byte for byte. Columns
-- that order listings or page with cursors use the "C" collation, so the
-- order is bytewise whatever the database's locale.

CREATE TABLE principals (
	id          text COLLATE "C" PRIMARY KEY,
	name        text NOT NULL UNIQUE,
	kind        text NOT NULL,
	role        text NOT NULL,
	created_at  timestamptz NOT NULL,
	disabled_at timestamptz
);

CREATE TABLE tokens (
	id           text COLLATE "C" PRIMARY KEY,
	principal_id text NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
	hash         text NOT NULL UNIQUE,
	created_at   timestamptz NOT NULL,
	last_used_at timestamptz,
	revoked_at   timestamptz
);
CREATE INDEX tokens_principal ON tokens(principal_id);

CREATE TABLE enroll_tokens (
	hash       text PRIMARY KEY,
	pool       text NOT NULL,
	created_by text NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	used_at    timestamptz,
	runner_id  text NOT NULL DEFAULT ''
);

CREATE TABLE runners (
	id             text COLLATE "C" PRIMARY KEY,
	name           text NOT NULL,
	pool           text NOT NULL,
	key_id         text NOT NULL,
	public_key_pem text NOT NULL,
	tiers          text[] NOT NULL,
	token_hash     text NOT NULL UNIQUE,
	enrolled_at    timestamptz NOT NULL,
	last_seen_at   timestamptz,
	revoked_at     timestamptz
);

CREATE TABLE policies (
	hash       text PRIMARY KEY,
	document   bytea NOT NULL,
	created_at timestamptz NOT NULL
);

-- settings holds single values: the current policy, and the pins that
-- make replicas with different key material refuse to start.
CREATE TABLE settings (
	key   text PRIMARY KEY,
	value text NOT NULL
);

CREATE TABLE plane_keys (
	key_id         text PRIMARY KEY,
	public_key_pem text NOT NULL,
	added_at       timestamptz NOT NULL
);

CREATE TABLE secrets (
	name       text COLLATE "C" PRIMARY KEY,
	ciphertext bytea NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL
);

CREATE TABLE runs (
	id                text COLLATE "C" PRIMARY KEY,
	state             text NOT NULL,
	pool              text NOT NULL,
	agent_kind        text NOT NULL,
	isolation         text NOT NULL,
	prompt            text NOT NULL,
	requester_id      text NOT NULL,
	requester_name    text NOT NULL,
	created_at        timestamptz NOT NULL,
	updated_at        timestamptz NOT NULL,
	details           bytea,
	contract          bytea,
	contract_hash     text NOT NULL DEFAULT '',
	expires_at        timestamptz,
	secret_names      text[] NOT NULL DEFAULT '{}',
	runner_id         text NOT NULL DEFAULT '',
	claim_token_hash  text NOT NULL DEFAULT '',
	claim_state       text NOT NULL DEFAULT '',
	claimed_at        timestamptz,
	lease_until       timestamptz,
	cancel_actor_kind text NOT NULL DEFAULT '',
	cancel_actor_id   text NOT NULL DEFAULT '',
	cancel_reason     text NOT NULL DEFAULT '',
	cancel_at         timestamptz,
	failure_class     text NOT NULL DEFAULT '',
	failure_message   text NOT NULL DEFAULT '',
	receipt           bytea,
	event_count       bigint NOT NULL DEFAULT 0,
	head_hash         text NOT NULL DEFAULT '',
	head_type         text NOT NULL DEFAULT ''
);
-- The claim queue: only queued runs, in claim order.
CREATE INDEX runs_queue ON runs(pool, created_at, id) WHERE state = 'created';
CREATE INDEX runs_state ON runs(state, created_at, id);
CREATE INDEX runs_created ON runs(created_at, id);
CREATE INDEX runs_updated ON runs(updated_at, id);
CREATE INDEX runs_requester ON runs(requester_id, created_at);
CREATE INDEX runs_lease ON runs(lease_until) WHERE claim_state = 'active';
CREATE INDEX runs_runner ON runs(runner_id) WHERE claim_state = 'active';
CREATE UNIQUE INDEX runs_claim_token ON runs(claim_token_hash) WHERE claim_token_hash <> '';

CREATE TABLE events (
	run_id text NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
	seq    bigint NOT NULL,
	hash   text NOT NULL,
	prev   text NOT NULL,
	type   text NOT NULL,
	data   bytea NOT NULL,
	PRIMARY KEY (run_id, seq)
);

-- blobs is the plane's index of stored blobs (store.Store); the bytes
-- live in blob_objects / blob_chunks (the BlobStore) or elsewhere.
CREATE TABLE blobs (
	hash        text COLLATE "C" PRIMARY KEY,
	size        bigint NOT NULL,
	created_at  timestamptz NOT NULL,
	last_ref_at timestamptz NOT NULL
);
CREATE INDEX blobs_last_ref ON blobs(last_ref_at);

CREATE TABLE blob_refs (
	hash         text NOT NULL,
	principal_id text NOT NULL,
	PRIMARY KEY (hash, principal_id)
);

CREATE TABLE run_outputs (
	run_id     text NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
	hash       text NOT NULL,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (run_id, hash)
);
CREATE INDEX run_outputs_hash ON run_outputs(hash);

CREATE TABLE retention_log (
	id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at     timestamptz NOT NULL,
	kind   text NOT NULL,
	ref    text NOT NULL,
	reason text NOT NULL,
	bytes  bigint NOT NULL DEFAULT 0
);

-- The BlobStore: content-addressed bytes in chunks. A blob_objects row is
-- written in the same transaction as its chunks, after the content was
-- verified, so a listed blob is always complete.
CREATE TABLE blob_objects (
	hash       text PRIMARY KEY,
	size       bigint NOT NULL,
	chunks     integer NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE blob_chunks (
	hash text NOT NULL,
	n    integer NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (hash, n)
);
-- No pglz compression of chunks: slow on MiB values, and many blobs are
-- compressed already.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
