//! SQLite's schema, as versioned migrations (`PRAGMA user_version` counts the applied ones).

/// Migrations, in order; entry `i` takes the schema from version `i` to `i + 1`. Never edit a
/// released entry: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: registry, artifacts, tokens, audit.
    "
    CREATE TABLE models (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL
    );
    CREATE TABLE versions (
        model_id        INTEGER NOT NULL REFERENCES models(id),
        version         INTEGER NOT NULL,
        manifest        TEXT NOT NULL,
        bundle_sha256   TEXT NOT NULL,
        model_sha256    TEXT NOT NULL,
        signature       TEXT NOT NULL,
        dataset_sha256  TEXT,
        code_commit     TEXT,
        parent_version  INTEGER,
        created_at      INTEGER NOT NULL,
        created_by      TEXT NOT NULL,
        PRIMARY KEY (model_id, version)
    );
    CREATE INDEX versions_dataset ON versions(dataset_sha256);
    CREATE TABLE aliases (
        model_id    INTEGER NOT NULL REFERENCES models(id),
        alias       TEXT NOT NULL,
        version     INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        updated_by  TEXT NOT NULL,
        PRIMARY KEY (model_id, alias),
        FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version)
    );
    CREATE TABLE artifacts (
        sha256             TEXT PRIMARY KEY,
        size               INTEGER NOT NULL,
        compressed_sha256  TEXT NOT NULL,
        compressed_size    INTEGER NOT NULL,
        created_at         INTEGER NOT NULL
    );
    CREATE TABLE version_artifacts (
        model_id  INTEGER NOT NULL,
        version   INTEGER NOT NULL,
        name      TEXT NOT NULL,
        sha256    TEXT NOT NULL REFERENCES artifacts(sha256),
        PRIMARY KEY (model_id, version, name),
        FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version)
    );
    CREATE TABLE tokens (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        hash        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        revoked_at  INTEGER
    );
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    ",
    // 2: fleet: enrollment tokens, devices, per-device desired state.
    "
    CREATE TABLE enrollment_tokens (
        id          INTEGER PRIMARY KEY,
        hash        TEXT NOT NULL UNIQUE,
        uses_left   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        labels      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL
    );
    CREATE TABLE devices (
        id                TEXT PRIMARY KEY,
        public_key        TEXT NOT NULL,
        labels            TEXT NOT NULL,
        enrolled_at       INTEGER NOT NULL,
        enrollment_token  INTEGER REFERENCES enrollment_tokens(id),
        last_seen         INTEGER,
        status            TEXT
    );
    CREATE TABLE desired (
        device_id   TEXT PRIMARY KEY REFERENCES devices(id),
        sequence    INTEGER NOT NULL,
        model       TEXT NOT NULL,
        version     INTEGER NOT NULL,
        envelope    TEXT NOT NULL,
        issued_at   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX desired_expiry ON desired(expires_at);
    ",
    // 3: staged rollouts and the devices each one changed.
    "
    CREATE TABLE rollouts (
        id               INTEGER PRIMARY KEY,
        model            TEXT NOT NULL,
        version          INTEGER NOT NULL,
        plan             TEXT NOT NULL,
        state            TEXT NOT NULL,
        wave             INTEGER NOT NULL,
        wave_started_at  INTEGER NOT NULL,
        reason           TEXT,
        gate_results     TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        created_by       TEXT NOT NULL
    );
    CREATE INDEX rollouts_state ON rollouts(state);
    CREATE TABLE rollout_devices (
        rollout_id       INTEGER NOT NULL REFERENCES rollouts(id),
        device_id        TEXT NOT NULL REFERENCES devices(id),
        wave             INTEGER NOT NULL,
        prev_model       TEXT,
        prev_version     INTEGER,
        baseline_p99_ms  REAL,
        joined_at        INTEGER NOT NULL,
        PRIMARY KEY (rollout_id, device_id)
    );
    ",
    // 4: each rollout device's output class counts on the version it ran before (PSI gate).
    "
    ALTER TABLE rollout_devices ADD COLUMN baseline_classes TEXT;
    ",
    // 5: telemetry (accepted batches, merged windows, sampled rows) and retraining.
    "
    CREATE TABLE telemetry_batches (
        device_id    TEXT NOT NULL,
        sequence     INTEGER NOT NULL,
        received_at  INTEGER NOT NULL,
        samples      INTEGER NOT NULL,
        PRIMARY KEY (device_id, sequence)
    ) WITHOUT ROWID;
    CREATE INDEX telemetry_batches_received ON telemetry_batches(received_at);
    CREATE TABLE telemetry_floor (
        device_id  TEXT PRIMARY KEY,
        sequence   INTEGER NOT NULL
    );
    CREATE TABLE telemetry_windows (
        model           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        device_group    TEXT NOT NULL,
        window_start    INTEGER NOT NULL,
        rows            INTEGER NOT NULL,
        features        TEXT NOT NULL,
        output_classes  TEXT NOT NULL,
        labeled         INTEGER NOT NULL,
        correct         INTEGER NOT NULL,
        PRIMARY KEY (model, version, device_group, window_start)
    );
    CREATE TABLE telemetry_samples (
        id              INTEGER PRIMARY KEY,
        model           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        device_id       TEXT NOT NULL,
        device_group    TEXT NOT NULL,
        batch_sequence  INTEGER NOT NULL,
        request_id      TEXT,
        at_ms           INTEGER NOT NULL,
        inputs          TEXT NOT NULL,
        outputs         TEXT NOT NULL,
        predicted       INTEGER,
        low_confidence  INTEGER NOT NULL,
        label           INTEGER
    );
    CREATE INDEX telemetry_samples_version ON telemetry_samples(model, version, at_ms);
    CREATE INDEX telemetry_samples_request ON telemetry_samples(device_id, request_id);
    CREATE TABLE retrain_policies (
        model   TEXT PRIMARY KEY,
        policy  TEXT NOT NULL
    );
    CREATE TABLE retrain_requests (
        id              INTEGER PRIMARY KEY,
        model           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        snapshot_dir    TEXT NOT NULL,
        dataset_sha256  TEXT NOT NULL,
        rows            INTEGER NOT NULL,
        manifest        TEXT NOT NULL,
        delivery        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX retrain_requests_version ON retrain_requests(model, version);
    ",
    // 6: trust sets and key rotation; which key signed each document; each device's trust set.
    "
    CREATE TABLE trust_sets (
        version        INTEGER PRIMARY KEY,
        trust          BLOB NOT NULL,
        rotation       TEXT,
        key_id         TEXT NOT NULL,
        key_file       TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        overlap_until  INTEGER NOT NULL
    );
    ALTER TABLE desired ADD COLUMN key_id TEXT;
    ALTER TABLE devices ADD COLUMN trust_version INTEGER;
    ",
    // 7: each sample remembers the window its batch was merged into, so a drift report's binned
    // and sampled metrics cover the same batches.
    "
    ALTER TABLE telemetry_samples ADD COLUMN window_start INTEGER;
    CREATE INDEX telemetry_samples_window ON telemetry_samples(model, version, window_start);
    ",
    // 8: a rollout's state is one the controller knows (and its wave an index): the table is
    // rebuilt with CHECK constraints (SQLite cannot add them in place).
    "
    CREATE TABLE rollouts_checked (
        id               INTEGER PRIMARY KEY,
        model            TEXT NOT NULL,
        version          INTEGER NOT NULL CHECK (version >= 1),
        plan             TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('running', 'paused', 'promoting', 'completed', 'aborted')),
        wave             INTEGER NOT NULL CHECK (wave >= 0),
        wave_started_at  INTEGER NOT NULL,
        reason           TEXT,
        gate_results     TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        created_by       TEXT NOT NULL
    );
    INSERT INTO rollouts_checked SELECT id, model, version, plan, state, wave, wave_started_at, reason,
        gate_results, created_at, updated_at, created_by FROM rollouts;
    DROP TABLE rollouts;
    ALTER TABLE rollouts_checked RENAME TO rollouts;
    CREATE INDEX rollouts_state ON rollouts(state);
    ",
    // 9: the device lifecycle: a decommissioned device keeps its row (a tombstone, so its key
    // can never enroll again), enrollment tokens can be revoked, and a device's last will marks
    // it offline without forgetting when it was last seen.
    "
    ALTER TABLE devices ADD COLUMN offline_at INTEGER;
    ALTER TABLE devices ADD COLUMN decommissioned_at INTEGER;
    ALTER TABLE devices ADD COLUMN decommission_reason TEXT;
    ALTER TABLE enrollment_tokens ADD COLUMN revoked_at INTEGER;
    ",
    // 10: delta artifacts, made from an earlier version's model to a newer one, kept in the
    // store under their own digest and looked up by the pair of digests; a delta not smaller
    // than the full artifact is remembered without one (delta_sha256 NULL), so it is not made again.
    "
    CREATE TABLE deltas (
        base_sha256   TEXT NOT NULL,
        target_sha256 TEXT NOT NULL,
        delta_sha256  TEXT,
        delta_size    INTEGER NOT NULL CHECK (delta_size > 0),
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (base_sha256, target_sha256)
    );
    ",
    // 11: leases, so that background work runs in one of the replicas sharing this database
    // (crate::lease).
    "
    CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        epoch       INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    ",
    // 12: the web console: sign-in sessions (a cookie's hash, the operator token it stands for,
    // its CSRF token and expiry), every gate evaluation of a rollout that changed a value, and
    // each device's error rate and latency over time (a point a minute at most).
    "
    CREATE TABLE sessions (
        hash        TEXT PRIMARY KEY,
        token_id    INTEGER NOT NULL REFERENCES tokens(id),
        csrf        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions(expires_at);
    CREATE TABLE rollout_gates (
        rollout_id  INTEGER NOT NULL REFERENCES rollouts(id),
        at          INTEGER NOT NULL,
        wave        INTEGER NOT NULL,
        gates       TEXT NOT NULL,
        PRIMARY KEY (rollout_id, at)
    );
    CREATE TABLE device_metrics (
        device_id       TEXT NOT NULL REFERENCES devices(id),
        at              INTEGER NOT NULL,
        requests        INTEGER NOT NULL,
        error_rate      REAL NOT NULL,
        latency_p50_ms  REAL,
        latency_p99_ms  REAL,
        PRIMARY KEY (device_id, at)
    );
    CREATE INDEX device_metrics_at ON device_metrics(at);
    ",
    // 13: several models per device: each device's desired set, one row per model (the
    // `desired` row keeps the signed document of the whole set, its first model in model/version).
    "
    CREATE TABLE desired_models (
        device_id     TEXT NOT NULL REFERENCES devices(id),
        model         TEXT NOT NULL,
        version       INTEGER NOT NULL CHECK (version >= 1),
        shadow_share  REAL,
        PRIMARY KEY (device_id, model)
    );
    INSERT INTO desired_models (device_id, model, version) SELECT device_id, model, version FROM desired;
    ",
    // 14: declarative fleets (a selector and the models its members serve), which fleet gave a
    // device each of its models (NULL: deployed by hand), and rollout members waiting for their
    // group's disruption budget (held_back = 1: in the wave, not issued yet).
    "
    CREATE TABLE fleets (
        name        TEXT PRIMARY KEY,
        selector    TEXT NOT NULL,
        models      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL
    );
    ALTER TABLE desired_models ADD COLUMN fleet TEXT;
    ALTER TABLE rollout_devices ADD COLUMN held_back INTEGER NOT NULL DEFAULT 0;
    ",
];
