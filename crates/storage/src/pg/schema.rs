//! The PostgreSQL schema and its versions. Each step runs once, in order, in the transaction
//! that records it in `laneway_schema`; replicas starting together wait on an advisory lock, so
//! a step never runs twice. A database whose version is newer than the last step here was
//! written by a newer Laneway and is refused rather than misread.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::db::Error;

/// Taken while migrating: any number, the same in every replica.
const LOCK: i64 = 0x006c_616e_6577_6179;

/// The steps, version by version (the first is version 1).
const STEPS: [&str; 1] = ["
CREATE TABLE files (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  filename TEXT NOT NULL,
  purpose TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE file_chunks (
  file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  data BYTEA NOT NULL,
  PRIMARY KEY (file_id, seq)
);
CREATE TABLE batches (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  input_file_id TEXT NOT NULL,
  completion_window TEXT NOT NULL,
  status TEXT NOT NULL,
  metadata TEXT,
  errors TEXT,
  output_file_id TEXT,
  error_file_id TEXT,
  created_at BIGINT NOT NULL,
  in_progress_at BIGINT,
  expires_at BIGINT NOT NULL,
  finalizing_at BIGINT,
  completed_at BIGINT,
  failed_at BIGINT,
  expired_at BIGINT,
  cancelling_at BIGINT,
  cancelled_at BIGINT,
  total BIGINT NOT NULL DEFAULT 0,
  completed BIGINT NOT NULL DEFAULT 0,
  failed BIGINT NOT NULL DEFAULT 0,
  items_loaded BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX batches_unfinished ON batches (status);
CREATE TABLE results (
  batch_id TEXT NOT NULL,
  custom_id TEXT NOT NULL,
  line BIGINT NOT NULL,
  ok BOOLEAN NOT NULL,
  output TEXT NOT NULL,
  PRIMARY KEY (batch_id, custom_id)
);
CREATE INDEX results_by_line ON results (batch_id, line);
CREATE TABLE items (
  batch_id TEXT NOT NULL,
  custom_id TEXT NOT NULL,
  line BIGINT NOT NULL,
  body TEXT NOT NULL,
  holder TEXT,
  lease_until BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (batch_id, custom_id)
);
CREATE INDEX items_by_line ON items (batch_id, line);
CREATE INDEX items_by_holder ON items (holder);
CREATE TABLE response_lanes (
  id TEXT PRIMARY KEY,
  lane TEXT NOT NULL,
  owner TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX response_lanes_by_age ON response_lanes (created_at);
"];

/// The version this Laneway writes.
pub const VERSION: i64 = STEPS.len() as i64;

/// Applies the steps the database lacks; gives the version it is at.
pub(crate) async fn migrate(c: Arc<Client>) -> Result<i64, Error> {
    c.batch_execute("BEGIN").await?;
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS laneway_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let at = current(&c).await?;
    if at > VERSION {
        c.batch_execute("ROLLBACK").await?;
        return Err(Error::Schema(format!(
            "the database's schema is version {at}, newer than this Laneway's {VERSION}; run a newer Laneway"
        )));
    }
    for (i, step) in STEPS
        .iter()
        .enumerate()
        .skip(usize::try_from(at).unwrap_or(0))
    {
        let version = i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1);
        c.batch_execute(step).await?;
        c.execute(
            "INSERT INTO laneway_schema (version, applied_at) VALUES ($1, $2)",
            &[&version, &crate::now()],
        )
        .await?;
        tracing::info!(version, "applied a PostgreSQL schema step");
    }
    c.batch_execute("COMMIT").await?;
    Ok(VERSION)
}

/// The version the database is at, without changing it (`None`: no Laneway schema yet).
pub(crate) async fn version(c: Arc<Client>) -> Result<Option<i64>, Error> {
    let exists = c
        .query_one("SELECT to_regclass('laneway_schema') IS NOT NULL", &[])
        .await?
        .try_get::<_, bool>(0)?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(current(&c).await?))
}

async fn current(c: &Client) -> Result<i64, Error> {
    let row = c
        .query_one("SELECT coalesce(max(version), 0) FROM laneway_schema", &[])
        .await?;
    Ok(row.try_get(0)?)
}
