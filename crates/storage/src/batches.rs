//! Batches: their lifecycle (validating → in_progress → finalizing → completed, or failed,
//! expired, cancelling → cancelled), every item's result recorded once by `custom_id`, and the
//! output and error files written from those records.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Row};
use serde_json::{json, Value};

use crate::db::{Error, Storage};
use crate::files::FileObject;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "validating" => Self::Validating,
            "in_progress" => Self::InProgress,
            "finalizing" => Self::Finalizing,
            "completed" => Self::Completed,
            "expired" => Self::Expired,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// The timestamp column set when a batch enters this status.
    fn column(self) -> &'static str {
        match self {
            Self::Validating => "created_at",
            Self::Failed => "failed_at",
            Self::InProgress => "in_progress_at",
            Self::Finalizing => "finalizing_at",
            Self::Completed => "completed_at",
            Self::Expired => "expired_at",
            Self::Cancelling => "cancelling_at",
            Self::Cancelled => "cancelled_at",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Completed | Self::Expired | Self::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub owner: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    pub metadata: Option<Value>,
    pub errors: Option<Value>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// created, in_progress, expires, finalizing, completed, failed, expired, cancelling, cancelled
    pub times: [Option<i64>; 9],
    pub counts: Counts,
}

const COLUMNS: &str = "id, owner, endpoint, input_file_id, completion_window, status, metadata, errors, \
    output_file_id, error_file_id, created_at, in_progress_at, expires_at, finalizing_at, completed_at, \
    failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed";

fn count(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0).unsigned_abs())
}

impl Batch {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let json_col = |i: usize| -> rusqlite::Result<Option<Value>> {
            Ok(r.get::<_, Option<String>>(i)?
                .and_then(|s| serde_json::from_str(&s).ok()))
        };
        let mut times = [None; 9];
        for (k, t) in times.iter_mut().enumerate() {
            *t = r.get(10 + k)?;
        }
        Ok(Self {
            id: r.get(0)?,
            owner: r.get(1)?,
            endpoint: r.get(2)?,
            input_file_id: r.get(3)?,
            completion_window: r.get(4)?,
            status: BatchStatus::parse(&r.get::<_, String>(5)?),
            metadata: json_col(6)?,
            errors: json_col(7)?,
            output_file_id: r.get(8)?,
            error_file_id: r.get(9)?,
            times,
            counts: Counts {
                total: count(r, 19)?,
                completed: count(r, 20)?,
                failed: count(r, 21)?,
            },
        })
    }

    /// OpenAI's batch object.
    pub fn to_json(&self) -> Value {
        let t = &self.times;
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": t[0],
            "in_progress_at": t[1],
            "expires_at": t[2],
            "finalizing_at": t[3],
            "completed_at": t[4],
            "failed_at": t[5],
            "expired_at": t[6],
            "cancelling_at": t[7],
            "cancelled_at": t[8],
            "request_counts": {"total": self.counts.total, "completed": self.counts.completed, "failed": self.counts.failed},
            "metadata": self.metadata,
        })
    }

    pub fn expires_at(&self) -> i64 {
        self.times[2].unwrap_or(i64::MAX)
    }
}

/// One finished item, as it goes into the output (or error) file.
pub struct ItemResult {
    pub line: u64,
    pub custom_id: String,
    /// Whether the upstream answered 2xx (the output file) or not (the error file).
    pub ok: bool,
    /// The whole output line, without its newline.
    pub output: String,
}

impl Storage {
    pub fn create_batch(
        &self,
        owner: &str,
        endpoint: &str,
        input_file_id: &str,
        window_secs: i64,
        window: &str,
        metadata: Option<&Value>,
    ) -> Result<Batch, Error> {
        let id = crate::new_id("batch_");
        let now = crate::now();
        self.conn().execute(
            "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, status, metadata, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'validating', ?6, ?7, ?8)",
            params![id, owner, endpoint, input_file_id, window, metadata.map(Value::to_string), now, now.saturating_add(window_secs)],
        )?;
        self.batch(&id, None)
    }

    pub fn batch(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM batches WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)"
                ),
                params![id, owner],
                Batch::from_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("no batch with id `{id}`")))
    }

    /// Newest first, after the batch `after` (a cursor from the previous page), at most `limit`;
    /// and whether more follow.
    pub fn list_batches(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Batch>, bool), Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM batches WHERE (?1 IS NULL OR owner = ?1) \
             AND (?2 IS NULL OR seq < (SELECT seq FROM batches WHERE id = ?2)) ORDER BY seq DESC LIMIT ?3"
        ))?;
        let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows: Vec<Batch> = stmt
            .query_map(params![owner, after, want], Batch::from_row)?
            .collect::<Result<_, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    /// Batches a restarted gateway must carry on with.
    pub fn unfinished(&self) -> Result<Vec<Batch>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') ORDER BY seq"
        ))?;
        let rows = stmt.query_map([], Batch::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a batch to `to` (stamping its time) if it is in one of `from`; says whether it moved.
    pub fn transition(
        &self,
        id: &str,
        from: &[BatchStatus],
        to: BatchStatus,
    ) -> Result<bool, Error> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let list = from
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        let n = self.conn().execute(
            &format!(
                "UPDATE batches SET status = ?1, {} = ?2 WHERE id = ?3 AND status IN ({list})",
                to.column()
            ),
            params![to.as_str(), crate::now(), id],
        )?;
        Ok(n == 1)
    }

    pub fn fail_validation(&self, id: &str, problems: &[Value]) -> Result<(), Error> {
        let errors = json!({"object": "list", "data": problems});
        self.conn().execute(
            "UPDATE batches SET status = 'failed', failed_at = ?1, errors = ?2 WHERE id = ?3",
            params![crate::now(), errors.to_string(), id],
        )?;
        Ok(())
    }

    pub fn start(&self, id: &str, total: u64) -> Result<bool, Error> {
        let n = self.conn().execute(
            "UPDATE batches SET status = 'in_progress', in_progress_at = ?1, total = ?2 WHERE id = ?3 AND status = 'validating'",
            params![crate::now(), i64::try_from(total).unwrap_or(i64::MAX), id],
        )?;
        Ok(n == 1)
    }

    /// Records a finished item once: a second result for the same `custom_id` (an item that ran
    /// again after a crash) is ignored. Says whether it was new.
    pub fn record(&self, batch_id: &str, r: &ItemResult) -> Result<bool, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // Only while the batch runs: an item that finishes after its batch ended is dropped.
        let n = tx.execute(
            "INSERT OR IGNORE INTO results (batch_id, custom_id, line, ok, output) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS \
             (SELECT 1 FROM batches WHERE id = ?1 AND status IN ('in_progress', 'cancelling'))",
            params![
                batch_id,
                r.custom_id,
                i64::try_from(r.line).unwrap_or(i64::MAX),
                r.ok,
                r.output
            ],
        )?;
        if n == 1 {
            let col = if r.ok { "completed" } else { "failed" };
            tx.execute(
                &format!("UPDATE batches SET {col} = {col} + 1 WHERE id = ?1"),
                params![batch_id],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// The `custom_id`s already recorded, so a resumed batch skips them.
    pub fn recorded(&self, batch_id: &str) -> Result<HashSet<String>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT custom_id FROM results WHERE batch_id = ?1")?;
        let rows = stmt.query_map(params![batch_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes the output and error files from the recorded results (in input order) and ends
    /// the batch in `to`, all in one transaction: a crash before it commits leaves the batch
    /// to be finalized again, never half-finished.
    pub fn finalize(&self, id: &str, to: BatchStatus) -> Result<Batch, Error> {
        let b = self.batch(id, None)?;
        let mut out = self.begin_upload()?;
        let mut err = self.begin_upload()?;
        let (mut any_ok, mut any_err) = (false, false);
        {
            let conn = self.conn();
            let mut stmt =
                conn.prepare("SELECT ok, output FROM results WHERE batch_id = ?1 ORDER BY line")?;
            let mut rows = stmt.query(params![id])?;
            let mut line = Vec::new();
            while let Some(r) = rows.next()? {
                let ok: bool = r.get(0)?;
                let text: String = r.get(1)?;
                line.clear();
                line.extend_from_slice(text.as_bytes());
                line.push(b'\n');
                if ok {
                    any_ok = true;
                    out.write(&line)?;
                } else {
                    any_err = true;
                    err.write(&line)?;
                }
            }
        }
        let name = |kind: &str| format!("{id}_{kind}.jsonl");
        let out_file: Option<FileObject> = if any_ok {
            Some(out.finish_unrecorded(self, &b.owner, &name("output"))?)
        } else {
            None
        };
        let err_file: Option<FileObject> = if any_err {
            Some(err.finish_unrecorded(self, &b.owner, &name("error"))?)
        } else {
            None
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for f in out_file.iter().chain(err_file.iter()) {
            tx.execute(
                "INSERT INTO files (id, owner, filename, purpose, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![f.id, f.owner, f.filename, f.purpose, i64::try_from(f.bytes).unwrap_or(i64::MAX), f.created_at],
            )?;
        }
        tx.execute(
            &format!("UPDATE batches SET status = ?1, {} = ?2, output_file_id = ?3, error_file_id = ?4 WHERE id = ?5", to.column()),
            params![to.as_str(), crate::now(), out_file.map(|f| f.id), err_file.map(|f| f.id), id],
        )?;
        // The output files hold them now.
        tx.execute("DELETE FROM results WHERE batch_id = ?1", params![id])?;
        tx.commit()?;
        drop(conn);
        self.batch(id, None)
    }

    /// Marks a batch for cancelling; a batch that already ended cannot be.
    pub fn cancel(&self, id: &str, owner: Option<&str>) -> Result<Batch, Error> {
        let b = self.batch(id, owner)?;
        if b.status.is_final() {
            return Err(Error::Invalid(format!(
                "batch `{id}` is already {} and cannot be cancelled",
                b.status.as_str()
            )));
        }
        self.transition(
            id,
            &[BatchStatus::Validating, BatchStatus::InProgress],
            BatchStatus::Cancelling,
        )?;
        self.batch(id, None)
    }
}
