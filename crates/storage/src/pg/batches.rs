//! Batches, their results and response ids in PostgreSQL: the same statements as SQLite's
//! (`crate::batches`), with every status change conditional on the status it leaves, since
//! several replicas drive one batch.

use std::io::Write;

use serde_json::{json, Value};
use tokio_postgres::Client;

use super::files::{insert_file, CHUNK};
use super::Postgres;
use crate::batches::object::COLUMNS;
use crate::batches::{Batch, BatchStatus, ItemResult};
use crate::db::Error;
use crate::files::FileObject;
use crate::store::NewBatch;

/// Response ids are forgotten after this many seconds (the Redis record's 30 days).
const RESPONSE_TTL: i64 = 30 * 24 * 3600;

fn statuses(from: &[BatchStatus]) -> Vec<String> {
    from.iter().map(|s| s.as_str().to_owned()).collect()
}

impl Postgres {
    pub(crate) fn create_batch(&self, n: &NewBatch<'_>) -> Result<Batch, Error> {
        let id = crate::new_id("batch_");
        let now = crate::now();
        let metadata = n.metadata.map(Value::to_string);
        let expires = now.saturating_add(n.window_secs);
        let id = id.as_str();
        self.inner.call(|c| async move {
            c.execute(
                "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, status, metadata, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, 'validating', $6, $7, $8)",
                &[&id, &n.owner, &n.endpoint, &n.input_file_id, &n.window, &metadata, &now, &expires],
            )
            .await?;
            Ok(())
        })?;
        self.batch(id, None)
    }

    pub(crate) fn batch(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM batches WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
        );
        let row = self
            .inner
            .call(|c| async move { Ok(c.query_opt(&sql, &[&id, &owner]).await?) })?;
        match row {
            Some(r) => Batch::from_cols(&r),
            None => Err(Error::NotFound(format!("no batch with id `{id}`"))),
        }
    }

    pub(crate) fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Batch>, bool), Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM batches WHERE ($1::text IS NULL OR owner = $1) \
             AND ($2::text IS NULL OR seq < (SELECT seq FROM batches WHERE id = $2)) ORDER BY seq DESC LIMIT $3"
        );
        let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = self
            .inner
            .call(|c| async move { Ok(c.query(&sql, &[&owner, &after, &want]).await?) })?;
        let mut batches: Vec<Batch> = rows
            .iter()
            .map(Batch::from_cols)
            .collect::<Result<_, _>>()?;
        let more = batches.len() > limit;
        batches.truncate(limit);
        Ok((batches, more))
    }

    pub(crate) fn unfinished(&self) -> Result<Vec<Batch>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') ORDER BY seq"
        );
        let rows = self
            .inner
            .call(|c| async move { Ok(c.query(&sql, &[]).await?) })?;
        rows.iter().map(Batch::from_cols).collect()
    }

    pub(crate) fn transition(
        &self,
        id: &str,
        from: &[BatchStatus],
        to: BatchStatus,
    ) -> Result<bool, Error> {
        let sql = format!(
            "UPDATE batches SET status = $1, {} = $2 WHERE id = $3 AND status = ANY($4)",
            to.column()
        );
        let from = statuses(from);
        let n = self.inner.call(|c| async move {
            Ok(c.execute(&sql, &[&to.as_str(), &crate::now(), &id, &from])
                .await?)
        })?;
        Ok(n == 1)
    }

    pub(crate) fn fail_validation(&self, id: &str, problems: &[Value]) -> Result<(), Error> {
        let errors = json!({"object": "list", "data": problems}).to_string();
        self.inner.call(|c| async move {
            c.execute(
                "UPDATE batches SET status = 'failed', failed_at = $1, errors = $2 WHERE id = $3",
                &[&crate::now(), &errors, &id],
            )
            .await?;
            Ok(())
        })
    }

    pub(crate) fn record(&self, batch_id: &str, r: &ItemResult) -> Result<bool, Error> {
        let line = super::big(r.line);
        self.inner.call(|c| async move {
            c.batch_execute("BEGIN").await?;
            let n = c
                .execute(
                    "INSERT INTO results (batch_id, custom_id, line, ok, output) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS \
                     (SELECT 1 FROM batches WHERE id = $1 AND status IN ('in_progress', 'cancelling')) \
                     ON CONFLICT DO NOTHING",
                    &[&batch_id, &r.custom_id, &line, &r.ok, &r.output],
                )
                .await?;
            c.execute(
                "DELETE FROM items WHERE batch_id = $1 AND custom_id = $2",
                &[&batch_id, &r.custom_id],
            )
            .await?;
            if n == 1 {
                let col = if r.ok { "completed" } else { "failed" };
                c.execute(
                    &format!("UPDATE batches SET {col} = {col} + 1 WHERE id = $1"),
                    &[&batch_id],
                )
                .await?;
            }
            c.batch_execute("COMMIT").await?;
            Ok(n == 1)
        })
    }

    pub(crate) fn finalize(&self, id: &str, to: BatchStatus) -> Result<Batch, Error> {
        let b = self.batch(id, None)?;
        let from = statuses(to.ends_from());
        self.inner.call(|c| async move {
            c.batch_execute("BEGIN").await?;
            let out = write_output(&c, &b, true).await?;
            let err = write_output(&c, &b, false).await?;
            let ended = c
                .execute(
                    &format!(
                        "UPDATE batches SET status = $1, {} = $2, output_file_id = $3, error_file_id = $4 \
                         WHERE id = $5 AND status = ANY($6)",
                        to.column()
                    ),
                    &[&to.as_str(), &crate::now(), &out, &err, &id, &from],
                )
                .await?;
            if ended == 0 {
                // Another replica ended it first: what was written goes with the rollback.
                c.batch_execute("ROLLBACK").await?;
                return Ok(());
            }
            c.execute("DELETE FROM results WHERE batch_id = $1", &[&id]).await?;
            c.execute("DELETE FROM items WHERE batch_id = $1", &[&id]).await?;
            c.batch_execute("COMMIT").await?;
            Ok(())
        })?;
        self.batch(id, None)
    }

    pub(crate) fn record_response(&self, id: &str, lane: &str, owner: &str) -> Result<(), Error> {
        let now = crate::now();
        // Forget old ids now and then, not on every insert.
        let prune = crate::new_id("").ends_with('0');
        self.inner.call(|c| async move {
            c.execute(
                "INSERT INTO response_lanes (id, lane, owner, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET lane = $2, owner = $3, created_at = $4",
                &[&id, &lane, &owner, &now],
            )
            .await?;
            if prune {
                let before = now.saturating_sub(RESPONSE_TTL);
                c.execute(
                    "DELETE FROM response_lanes WHERE created_at < $1",
                    &[&before],
                )
                .await?;
            }
            Ok(())
        })
    }

    pub(crate) fn response_lane(&self, id: &str) -> Result<Option<(String, String)>, Error> {
        let row = self.inner.call(|c| async move {
            Ok(c.query_opt(
                "SELECT lane, owner FROM response_lanes WHERE id = $1",
                &[&id],
            )
            .await?)
        })?;
        match row {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    pub(crate) fn forget_response(&self, id: &str) -> Result<(), Error> {
        self.inner.call(|c| async move {
            c.execute("DELETE FROM response_lanes WHERE id = $1", &[&id])
                .await?;
            Ok(())
        })
    }
}

/// Writes the output (`ok`) or error file of batch `b` from its results, in input order, a
/// page of results and a chunk of content at a time; gives its id, none if it would be empty.
async fn write_output(c: &Client, b: &Batch, ok: bool) -> Result<Option<String>, Error> {
    let kind = if ok { "output" } else { "error" };
    let f_id = crate::new_id("file-");
    let insert = c
        .prepare("INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)")
        .await?;
    let page = c
        .prepare("SELECT line, output FROM results WHERE batch_id = $1 AND ok = $2 AND line > $3 ORDER BY line LIMIT 1000")
        .await?;
    let (mut after, mut seq, mut bytes) = (0i64, 0i32, 0u64);
    let mut chunk = Vec::with_capacity(CHUNK);
    // The file's row first: its chunks refer to it.
    let mut f = FileObject {
        id: f_id.clone(),
        owner: b.owner.clone(),
        filename: format!("{}_{kind}.jsonl", b.id),
        purpose: "batch_output".to_owned(),
        bytes: 0,
        created_at: crate::now(),
    };
    insert_file(c, &f).await?;
    loop {
        let rows = c.query(&page, &[&b.id, &ok, &after]).await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        for r in &rows {
            let text: &str = r.try_get(1)?;
            chunk.write_all(text.as_bytes())?;
            chunk.push(b'\n');
            if chunk.len() >= CHUNK {
                bytes = bytes.saturating_add(u64::try_from(chunk.len()).unwrap_or(0));
                c.execute(&insert, &[&f_id, &seq, &chunk]).await?;
                seq = seq.saturating_add(1);
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        bytes = bytes.saturating_add(u64::try_from(chunk.len()).unwrap_or(0));
        c.execute(&insert, &[&f_id, &seq, &chunk]).await?;
    }
    if bytes == 0 {
        c.execute("DELETE FROM files WHERE id = $1", &[&f_id])
            .await?;
        return Ok(None);
    }
    f.bytes = bytes;
    c.execute(
        "UPDATE files SET bytes = $1 WHERE id = $2",
        &[&super::big(f.bytes), &f_id],
    )
    .await?;
    Ok(Some(f_id))
}
