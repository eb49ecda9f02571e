//! Batches: their lifecycle (validating → in_progress → finalizing → completed, or failed,
//! expired, cancelling → cancelled), every item's result recorded once by `custom_id`, and the
//! output and error files written from those records.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::db::{Error, Storage};
use crate::files::FileObject;

pub(crate) mod object;

use object::COLUMNS;
pub use object::{Batch, BatchStatus, Counts, ItemResult};

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
        // Its item (if the batch stored them) is done: no replica claims it again.
        tx.execute(
            "DELETE FROM items WHERE batch_id = ?1 AND custom_id = ?2",
            params![batch_id, r.custom_id],
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
        let from = to
            .ends_from()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let ended = tx.execute(
            &format!("UPDATE batches SET status = ?1, {} = ?2, output_file_id = ?3, error_file_id = ?4 WHERE id = ?5 AND status IN ({from})", to.column()),
            params![to.as_str(), crate::now(), out_file.as_ref().map(|f| &f.id), err_file.as_ref().map(|f| &f.id), id],
        )?;
        if ended == 0 {
            // Already ended (by another driver of the batch): what was written goes.
            drop(tx);
            for f in out_file.iter().chain(err_file.iter()) {
                let _ = std::fs::remove_file(self.file_path(&f.id));
            }
            drop(conn);
            return self.batch(id, None);
        }
        // The output files hold them now.
        tx.execute("DELETE FROM results WHERE batch_id = ?1", params![id])?;
        tx.execute("DELETE FROM items WHERE batch_id = ?1", params![id])?;
        tx.commit()?;
        drop(conn);
        self.batch(id, None)
    }
}
